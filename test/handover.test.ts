// The agent hand-over (src/handover/) between two node proxies in one process, on loopback: the successor takes
// the running proxy's listening socket (the same port keeps answering: no new connection fails meanwhile) and
// its established pairs, plain and sealed, which carry on byte for byte after the predecessor is destroyed; a
// successor that gives up leaves everything with the running one. No root needed; the addon must be built.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { type Server as HttpServer, createServer as createHttpServer } from 'node:http';
import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { staticCatalog } from '../src/gateway/catalog.js';
import { Gateway } from '../src/gateway/gateway.js';
import { giveTo, takeOver } from '../src/handover/agent-handover.js';
import { HandoverChannel, HandoverListener } from '../src/handover/channel.js';
import { createCa, issue } from '../src/identity/pki.js';
import { clusterSpiffeId } from '../src/identity/spiffe.js';
import { KernelSplicer } from '../src/native/kernel-splice.js';
import { rootLogger } from '../src/logger.js';
import { packageRoot } from '../src/paths.js';
import { NodeProxy, type Route } from '../src/proxy/proxy.js';
import { listen, listenOn } from '../src/tunnel/splice.js';
import type { TunnelTls } from '../src/tunnel/protocol.js';
import { clusterKey } from './helpers/objects.js';

const built = existsSync(join(packageRoot, 'build', 'native', 'Release', 'ecnet_native.node'));
const describeBuilt = built ? describe : describe.skip;
if (!built) console.warn('hand-over tests skipped: the addon is not built (npm run build)');

const log = rootLogger.child({ component: 'handover-test' });
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A connection that sends random bytes now and then and checks their echo. */
function echoed(port: number) {
  const s = connect({ host: '127.0.0.1', port });
  s.on('error', () => undefined);
  let sent = Buffer.alloc(0);
  let got = Buffer.alloc(0);
  s.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
  return {
    socket: s,
    send(n: number) {
      const b = randomBytes(n);
      sent = Buffer.concat([sent, b]);
      s.write(b);
    },
    async echoedAll(): Promise<boolean> {
      for (let i = 0; i < 200 && got.length < sent.length; i++) await new Promise((r) => setTimeout(r, 10));
      return got.length === sent.length && sha(got) === sha(sent);
    },
  };
}

/** What a successor's finish() does with the pairs: its tunnels adopt, start and drop them. */
const tunnelsOf = (p: NodeProxy) => ({ adopt: p.tunnels.adopt.bind(p.tunnels), start: p.tunnels.start.bind(p.tunnels), drop: p.tunnels.drop.bind(p.tunnels) });

/** One new connection's echo, or its error code. */
const once = (port: number) =>
  new Promise<string>((resolve) => {
    const s: Socket = connect({ host: '127.0.0.1', port });
    s.on('connect', () => s.write('x'));
    s.once('data', () => (s.destroy(), resolve('ok')));
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });

describeBuilt('agent hand-over between two node proxies', () => {
  const SET = 'handover-set';
  let echo: Server;
  let sealedGw: Gateway;
  let client: TunnelTls;
  const dir = mkdtempSync(join(tmpdir(), 'ecnet-handover-'));
  const dir_ = dir;
  const closers: (() => unknown)[] = [];

  beforeAll(async () => {
    echo = createServer({ allowHalfOpen: true }, (c) => {
      c.on('error', () => undefined);
      c.on('data', (d) => c.write(d));
      c.on('end', () => c.end());
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const catalog = staticCatalog([{ namespace: 'ns', name: 'echo', ports: new Map([[80, [{ ip: '127.0.0.1', port: (echo.address() as AddressInfo).port }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } }]);
    const ca = await createCa(SET);
    const id = async (n: number): Promise<TunnelTls> => ({ ...(await issue(ca, clusterSpiffeId(SET, clusterKey(n)), 3_600_000)), ca: ca.cert, clusterSet: SET });
    sealedGw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog, kernelSplice: true, tls: await id(1) });
    client = await id(2);
  });
  afterAll(() => {
    for (const c of closers.reverse()) c();
    sealedGw?.destroy();
    echo?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Routes by the port the client called: 80 through the gateway (a sealed tunnel), 81 to the local endpoint (plain). */
  const route = (port: number): Route =>
    port === 81
      ? { service: 'echo', namespace: 'ns', port: 81, exporters: [], policy: undefined, localEndpoints: [{ ip: '127.0.0.1', port: (echo.address() as AddressInfo).port }] }
      : { service: 'echo', namespace: 'ns', port: 80, exporters: [{ clusterKey: clusterKey(1), gateway: { host: '127.0.0.1', port: sealedGw.address.port } }], policy: { lbType: 'ActiveActive' }, localEndpoints: [] };
  let plainNext = false;
  const proxyOptions = () => ({
    host: '127.0.0.1',
    port: 0,
    localCluster: clusterKey(2),
    // The connection's "original destination": every other one goes to the local endpoint.
    routes: { lookup: (_ip: string, port: number) => route(port) },
    originalDestination: () => ({ ip: '10.96.0.7', port: (plainNext = !plainNext) ? 81 : 80 }),
    tls: client,
    kernelSplice: true,
  });
  const adminServer = async (): Promise<HttpServer> => {
    const s = createHttpServer((_req, res) => res.end(`${process.pid}`));
    await listen(s as unknown as Server, '127.0.0.1', 0);
    return s;
  };

  it('the successor takes the listening socket and the established pairs, plain and sealed, and nothing fails or breaks', async () => {
    const old = await NodeProxy.start(proxyOptions());
    const oldAdmin = await adminServer();
    const port = old.address.port;
    const path = join(dir, 'a.sock');
    let retired = false;
    let given: Promise<boolean> | undefined;
    const listener = new HandoverListener(path, (channel) => {
      listener.close();
      given = giveTo(channel, { proxy: old, admin: oldAdmin, routes: () => [], retire: async () => void (retired = true), log });
    }, 20);
    closers.push(() => listener.close());
    const conns = [echoed(port), echoed(port), echoed(port), echoed(port)];
    for (const c of conns) c.send(100_000);
    for (const c of conns) expect(await c.echoedAll()).toBe(true);
    expect(old.stats).toMatchObject({ kernelSpliced: 4, sealed: 2 });
    // New connections all along the hand-over.
    let loops = true;
    const results: string[] = [];
    const loop = (async () => {
      while (loops) results.push(await once(port));
    })();
    // Bytes in flight during the hand-over, too.
    const pump = setInterval(() => conns.forEach((c) => c.send(4096)), 2);

    const taken = await takeOver(path, log);
    expect(taken).toBeDefined();
    const successor = await NodeProxy.start({ ...proxyOptions(), listenFds: { fd: taken!.listeners.fd } });
    closers.push(() => successor.destroy());
    const newAdmin = createHttpServer((_req, res) => res.end('successor'));
    await listenOn(newAdmin as unknown as Server, taken!.listeners.admin);
    closers.push(() => newAdmin.close());
    const took = await taken!.finish(tunnelsOf(successor));
    expect(await given).toBe(true);
    expect(retired).toBe(true);
    // The four, and any of the loop's connections that were open at that moment.
    expect(took.pairs).toBeGreaterThanOrEqual(4);
    expect(took.refused).toBe(0);
    expect(successor.address.port).toBe(port);
    expect(successor.stats.kernelSpliced).toBeGreaterThanOrEqual(4);
    expect(successor.stats.sealed).toBeGreaterThanOrEqual(2);
    // The predecessor goes away entirely; the connections do not notice.
    old.destroy();
    oldAdmin.close();
    await new Promise((r) => setTimeout(r, 200));
    clearInterval(pump);
    for (const c of conns) c.send(200_000);
    for (const c of conns) expect(await c.echoedAll()).toBe(true);
    loops = false;
    await loop;
    expect(results.length).toBeGreaterThan(0);
    expect(results.filter((r) => r !== 'ok')).toEqual([]);
    expect(await once(port)).toBe('ok');
    for (const c of conns) c.socket.destroy();
  });

  /** A running proxy with its admin server, serving hand-overs on `name`, and two connections through it. */
  const running = async (name: string) => {
    const old = await NodeProxy.start(proxyOptions());
    closers.push(() => old.destroy());
    const oldAdmin = await adminServer();
    closers.push(() => oldAdmin.close());
    const port = old.address.port;
    const path = join(dir, name);
    const r: { given?: Promise<boolean> } = {};
    const listener = new HandoverListener(path, (channel) => {
      listener.close();
      r.given = giveTo(channel, { proxy: old, admin: oldAdmin, routes: () => [], retire: async () => undefined, log });
    }, 20);
    closers.push(() => listener.close());
    const conns = [echoed(port), echoed(port)];
    for (const c of conns) c.send(50_000);
    for (const c of conns) expect(await c.echoedAll()).toBe(true);
    return { old, oldAdmin, port, path, conns, given: () => r.given };
  };

  it('a successor that gives up leaves the listening socket and the pairs with the running proxy', async () => {
    const { old, oldAdmin, port, path, conns, given } = await running('b.sock');
    const taken = await takeOver(path, log);
    taken!.abort('test: the successor could not start');
    expect(await given()).toBe(false);
    expect(await once(port)).toBe('ok');
    for (const c of conns) c.send(50_000);
    for (const c of conns) expect(await c.echoedAll()).toBe(true);
    expect(old.stats.active).toBeGreaterThanOrEqual(2);
    // A successor that takes the listeners but cannot adopt the pairs: they are restored to the running proxy.
    let second: Promise<boolean> | undefined;
    const again = new HandoverListener(path, (channel) => {
      again.close();
      second = giveTo(channel, { proxy: old, admin: oldAdmin, routes: () => [], retire: async () => undefined, log });
    }, 20);
    closers.push(() => again.close());
    const taken2 = await takeOver(path, log);
    const successor = await NodeProxy.start({ ...proxyOptions(), listenFds: { fd: taken2!.listeners.fd } });
    closers.push(() => successor.destroy());
    const refusing = await taken2!.finish({
      ...tunnelsOf(successor),
      adopt: () => {
        throw new Error('test: no splicer here');
      },
    });
    expect(refusing.pairs).toBe(0);
    expect(refusing.refused).toBeGreaterThanOrEqual(2);
    expect(await second).toBe(true);
    for (const c of conns) c.send(50_000);
    for (const c of conns) expect(await c.echoedAll()).toBe(true);
    for (const c of conns) c.socket.destroy();
  });

  it('a successor that dies after taking the listening sockets: the running proxy accepts on them again and keeps its pairs', async () => {
    const { port, path, conns, given } = await running('c.sock');
    // A successor that says it listens, takes a batch of pairs, and dies (its descriptors close with it).
    const channel = HandoverChannel.connect(path)!;
    channel.send({ type: 'hello', version: 1 });
    const l = await channel.recv('listeners');
    channel.send({ type: 'listening' });
    const pairs = await channel.recv('pairs');
    channel.closeFds([...l.fds, ...pairs.fds]);
    channel.close();
    expect(await given()).toBe(false);
    expect(await once(port)).toBe('ok');
    for (const c of conns) c.send(50_000);
    for (const c of conns) expect(await c.echoedAll()).toBe(true);
    for (const c of conns) c.socket.destroy();
  });

  it('a state that does not describe its pair is refused, never adopted', async () => {
    const kernel = KernelSplicer.open();
    closers.push(() => kernel.destroy());
    const a = connect({ host: '127.0.0.1', port: (echo.address() as AddressInfo).port });
    const b = connect({ host: '127.0.0.1', port: (echo.address() as AddressInfo).port });
    await Promise.all([a, b].map((x) => new Promise((r) => x.once('connect', r))));
    const fds = [a, b].map((x) => (x as unknown as { _handle: { fd: number } })._handle.fd);
    const dir = (mode: 0 | 1 | 2, extra: Record<string, unknown> = {}) => ({ mode, pending: Buffer.alloc(0), eof: false, shut: false, bytes: 0, inPipe: 0, ...extra });
    const sealed = (extra: Record<string, unknown>) => dir(2, { secret: randomBytes(32), seq: 0, rekey: 0, records: Buffer.alloc(10), plain: Buffer.alloc(0), opened: 0, openedSent: 0, ...extra });
    const refused = (state: unknown, f = fds) => expect(() => kernel.adopt(state as never, f, () => undefined)).toThrow();
    refused({ idleMs: 0, dirs: [dir(1), dir(0)] }); // modes that make no pair
    refused({ idleMs: 0, dirs: [dir(1, { secret: randomBytes(32), records: Buffer.alloc(0), plain: Buffer.alloc(0) }), sealed({ opened: 8 })] }); // an opened record past the bytes queued
    refused({ idleMs: 0, dirs: [dir(0, { inPipe: 100 }), dir(0)] }); // a pipe the descriptors do not include
    const file = openSync(join(dir_, 'not-a-socket'), 'w');
    refused({ idleMs: 0, dirs: [dir(0), dir(0)] }, [fds[0]!, file]); // not a socket
    closeSync(file);
    expect(kernel.stats().pairs).toBe(0);
    a.destroy();
    b.destroy();
  });

  it('no running agent: takeOver says so, and a stale socket file is replaced', async () => {
    expect(await takeOver(join(dir, 'none.sock'), log)).toBeUndefined();
    const path = join(dir, 'stale.sock');
    const l = new HandoverListener(path, () => undefined);
    l.close(); // the file stays, nobody listens: as after a crash
    expect(await takeOver(path, log)).toBeUndefined();
    const again = new HandoverListener(path, () => undefined);
    again.close();
  });
});
