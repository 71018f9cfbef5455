// The native front (native/src/front.cc) of the gateway and of the node proxy: connections set up on the
// splicer's thread, and everything it cannot finish handed to JavaScript, which answers as it always did.
// Real sockets on loopback; the proxy's part with the real datapath in a network namespace of its own. Root only.
import { execFileSync } from 'node:child_process';
import { constants } from 'node:os';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RouteMap } from '../src/agent/agent.js';
import { origDstCodec } from '../src/bpf/codecs.js';
import { Datapath } from '../src/bpf/datapath.js';
import { defaults } from '../src/config.js';
import { type Catalog, type LocalService, staticCatalog } from '../src/gateway/catalog.js';
import { type ChangingCatalog, GatewayFront } from '../src/gateway/front.js';
import { Gateway } from '../src/gateway/gateway.js';
import { loadNative, type NativeFrontEntry, type NativeMap } from '../src/native/addon.js';
import { KernelSplicer, SETUP_BUCKETS_US } from '../src/native/kernel-splice.js';
import { closeFd } from '../src/native/libc.js';
import { connectMarked, descriptorOf } from '../src/native/sockets.js';
import { componentLogger } from '../src/logger.js';
import { HealthBook } from '../src/policy/health.js';
import { ProxyFront, type ProxyFrontOptions } from '../src/proxy/front.js';
import { NodeProxy, type Route } from '../src/proxy/proxy.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { type TestCgroup, type TestNetns, cleanupAll, makeCgroup, makeNetns, makePinDir, runClient } from './helpers/host.js';
import { greeter } from './helpers/greeter.js';

const backend = greeter;
const portOf = (s: Server) => (s.address() as { port: number }).port;

/** Sends `bytes` (half-closing after them unless `keepOpen`) and collects what comes back until the close. */
function exchange(port: number, bytes: string | Buffer, o: { keepOpen?: boolean; host?: string; localAddress?: string; ms?: number } = {}): Promise<{ data: string; reset: boolean }> {
  return new Promise((resolve) => {
    const s = connect({ host: o.host ?? '127.0.0.1', port, allowHalfOpen: true, ...(o.localAddress ? { localAddress: o.localAddress } : {}) });
    let data = '';
    let reset = false;
    const timer = setTimeout(() => s.destroy(), o.ms ?? 5_000);
    s.on('connect', () => (o.keepOpen ? s.write(bytes) : s.end(bytes)));
    s.on('data', (d) => (data += d.toString('latin1')));
    s.on('end', () => s.end());
    s.on('error', (e: NodeJS.ErrnoException) => (reset = e.code === 'ECONNRESET'));
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ data, reset });
    });
  });
}

const connectHead = (authority: string) => `CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\necnet-source-cluster: default/default/default/c2\r\n\r\n`;

/** A static catalog whose content can be replaced, telling its subscribers (as LiveCatalog does). */
function changingCatalog(services: LocalService[]): ChangingCatalog & { set(services: LocalService[]): void } {
  let inner: Catalog = staticCatalog(services);
  const listeners = new Set<(keys: string[] | undefined) => void>();
  return {
    get: (ns, name) => inner.get(ns, name),
    all: () => inner.all(),
    withIngress: () => inner.withIngress(),
    subscribe(l) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    set(next) {
      const keys = [...new Set([...inner.all(), ...next].map((s) => `${s.namespace}/${s.name}`))];
      inner = staticCatalog(next);
      for (const l of listeners) l(keys);
    },
  };
}

describeKernel('the gateway front', () => {
  const closers: (() => unknown)[] = [];
  let echo: Server;
  let gw: Gateway;
  let catalog: ReturnType<typeof changingCatalog>;
  let refusedPort: number;
  const svc = (endpoints: { ip: string; port: number }[]): LocalService => ({ namespace: 'ns', name: 'echo', ports: new Map([[80, endpoints]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } });

  beforeAll(async () => {
    echo = await backend('echo');
    closers.push(() => echo.close());
    // A port nothing listens on: a refusing endpoint.
    const gone = await backend('gone');
    refusedPort = portOf(gone);
    gone.close();
    catalog = changingCatalog([
      svc([{ ip: '127.0.0.1', port: portOf(echo) }]),
      { namespace: 'ns', name: 'private', ports: new Map([[80, [{ ip: '127.0.0.1', port: portOf(echo) }]]]), export: undefined },
      { namespace: 'ns', name: 'empty', ports: new Map([[80, []]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } },
    ]);
    gw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog, kernelSplice: true, front: true, headerTimeoutMs: 300, limits: { perSource: 3 } });
    closers.push(() => gw.destroy());
  });
  afterAll(() => cleanupAll(...closers));

  it('sets up a CONNECT to an exported service itself: 200, the bytes that followed the head, half-close both ways', async () => {
    const before = gw.stats.fronted;
    const r = await exchange(gw.address.port, `${connectHead('echo.ns.svc.clusterset.local:80')}ping\n`);
    expect(r.data).toBe('HTTP/1.1 200 Connection Established\r\n\r\nhello from echo\nping\nbye from echo\n');
    expect(gw.stats.fronted).toBe(before + 1);
  });

  it('hands every other request to the HTTP server: /healthz, unknown, not exported, no endpoint, malformed', async () => {
    const before = gw.stats.fronted;
    const health = (await exchange(gw.address.port, 'GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')).data;
    expect(health).toMatch(/^HTTP\/1.1 200 OK\r\n/);
    expect(health).toContain('\r\nok\n');
    expect((await exchange(gw.address.port, connectHead('nope.ns.svc.clusterset.local:80'))).data).toMatch(/^HTTP\/1.1 404 /);
    expect((await exchange(gw.address.port, connectHead('private.ns.svc.clusterset.local:80'))).data).toMatch(/^HTTP\/1.1 403 /);
    expect((await exchange(gw.address.port, connectHead('empty.ns.svc.clusterset.local:80'))).data).toMatch(/^HTTP\/1.1 503 /);
    expect((await exchange(gw.address.port, 'CONNECT echo.ns.svc.clusterset.local:80 HTTP/1.1\r\nbad header\r\n\r\n')).data).toMatch(/^HTTP\/1.1 400 /);
    expect(gw.stats.fronted).toBe(before);
  });

  it('answers 408 once a head has not completed in the header timeout (not twice that), and a bare LF at once', async () => {
    const slow = await Gateway.start({ host: '127.0.0.1', port: 0, catalog, kernelSplice: true, front: true, headerTimeoutMs: 1_000 });
    closers.push(() => slow.destroy());
    let t0 = Date.now();
    const r = await exchange(slow.address.port, 'CONNECT echo.ns.svc.clusterset.local:80 HTTP/1.1\r\nhost: ', { keepOpen: true, ms: 5_000 });
    expect(r.data).toMatch(/^HTTP\/1.1 408 /);
    // The front's 1 s, then the answer: Node's own timeout would have added another second.
    expect(Date.now() - t0).toBeLessThan(1_700);
    t0 = Date.now();
    const lf = await exchange(slow.address.port, 'CONNECT echo.ns.svc.clusterset.local:80 HTTP/1.1\nhost: x\n', { keepOpen: true, ms: 5_000 });
    expect(lf.data).toMatch(/^HTTP\/1.1 400 /);
    expect(Date.now() - t0).toBeLessThan(700);
  });

  it('frees the slot of a connection it answered 408, answers on time, and a head made not its own late gets only the time left', async () => {
    const slow = await Gateway.start({ host: '127.0.0.1', port: 0, catalog, kernelSplice: true, front: true, headerTimeoutMs: 200, limits: { perSource: 1 } });
    closers.push(() => slow.destroy());
    for (let i = 0; i < 2; i++) {
      // After a second of nothing, a new head's deadline is still looked at on time.
      await new Promise((r) => setTimeout(r, 1_100));
      const t0 = Date.now();
      const r = await exchange(slow.address.port, 'CONNECT ', { keepOpen: true, ms: 3_000 });
      expect(r.data).toMatch(/^HTTP\/1.1 408 /);
      expect(Date.now() - t0).toBeLessThan(700);
    }
    // Its slot is free again (a limit of 1 per source): a well-formed CONNECT from the same source is served.
    await new Promise((r) => setTimeout(r, 100));
    expect((await exchange(slow.address.port, connectHead('echo.ns.svc.clusterset.local:80'))).data).toContain('200 Connection Established');
    // A request line completed just before the deadline as something the front does not serve: the HTTP server
    // gets what is left of the head's time, not a timeout of its own.
    const t0 = Date.now();
    const trickled = await new Promise<string>((resolve) => {
      const c = connect({ host: '127.0.0.1', port: slow.address.port });
      let got = '';
      c.on('error', () => undefined);
      c.on('data', (d) => (got += d.toString()));
      c.on('close', () => resolve(got));
      c.on('connect', () => {
        c.write('CONNECT x');
        setTimeout(() => c.write('_ HTTP/1.1\r\n'), 150);
      });
    });
    expect(trickled).toMatch(/^HTTP\/1.1 408 /);
    expect(Date.now() - t0).toBeLessThan(700);
  });

  it('goes round the endpoints when one refuses, and follows the catalog', async () => {
    catalog.set([svc([{ ip: '127.0.0.1', port: refusedPort }, { ip: '127.0.0.1', port: portOf(echo) }])]);
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 4; i++) {
      expect((await exchange(gw.address.port, connectHead('echo.ns.svc.clusterset.local:80'))).data).toContain('200 Connection Established\r\n\r\nhello from echo\n');
    }
    // Every endpoint refuses: the front hands the connection over, and the HTTP path answers 503.
    catalog.set([svc([{ ip: '127.0.0.1', port: refusedPort }])]);
    await new Promise((r) => setTimeout(r, 50));
    expect((await exchange(gw.address.port, connectHead('echo.ns.svc.clusterset.local:80'))).data).toMatch(/^HTTP\/1.1 503 /);
    catalog.set([svc([{ ip: '127.0.0.1', port: portOf(echo) }])]);
  });

  it('holds a source to its limit, and frees its slots as connections end', async () => {
    await new Promise((r) => setTimeout(r, 50));
    const held: Socket[] = [];
    const open = () =>
      new Promise<Socket>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port: gw.address.port });
        s.once('connect', () => {
          s.write(connectHead('echo.ns.svc.clusterset.local:80'));
          s.once('data', () => resolve(s));
        });
        s.once('error', reject);
      });
    for (let i = 0; i < 3; i++) held.push(await open());
    const over = await exchange(gw.address.port, connectHead('echo.ns.svc.clusterset.local:80'));
    expect(over.data).toBe('');
    expect(over.reset).toBe(true);
    for (const s of held) s.destroy();
    await new Promise((r) => setTimeout(r, 200));
    expect((await exchange(gw.address.port, connectHead('echo.ns.svc.clusterset.local:80'))).data).toContain('hello from echo');
  });

  it('drains: a tunnel the front set up runs on through the grace period; new connections are refused, not queued', async () => {
    const port = gw.address.port;
    // An established tunnel, spliced by the front.
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    let got = '';
    s.on('data', (d) => (got += d.toString()));
    s.on('error', () => undefined);
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write(connectHead('echo.ns.svc.clusterset.local:80'));
    for (let i = 0; i < 100 && !got.includes('hello from echo'); i++) await new Promise((r) => setTimeout(r, 10));
    const closing = gw.close(5_000);
    await new Promise((r) => setTimeout(r, 1_500));
    s.write('still there\n');
    for (let i = 0; i < 100 && !got.includes('still there'); i++) await new Promise((r) => setTimeout(r, 10));
    expect(got).toContain('hello from echo\nstill there\n');
    const refused = await new Promise<string>((resolve) => {
      const c = connect({ host: '127.0.0.1', port });
      c.on('connect', () => {
        c.destroy();
        resolve('connected');
      });
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    expect(refused).toBe('ECONNREFUSED');
    s.end();
    await closing;
  });
});

describeKernel('the front itself: slots across a hand-over and a close, IPv6 sources by /64', () => {
  /** A listening socket's descriptor (a dup this test owns) and its port. */
  const listener = async (host = '127.0.0.1') => {
    const l = createServer();
    await new Promise<void>((r) => l.listen(0, host, r));
    const fd = loadNative().handover.dup(descriptorOf(l)!);
    const port = portOf(l);
    l.close();
    return { fd, port };
  };
  const echoCatalog = (ip: string, port: number) => changingCatalog([svc(ip, port)]);
  const svc = (ip: string, port: number): LocalService => ({ namespace: 'ns', name: 'echo', ports: new Map([[80, [{ ip, port }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } });
  const settings = { idleMs: 0, connectMs: 1_000, headerMs: 10_000, maxTotal: 100, maxPerSource: 1 };
  const drop = { handed: (s: Socket, free: () => void) => (s.destroy(), free()), succeeded: () => undefined };

  it('a pair handed over to another process frees its slot; a close leaves no setup counted', async () => {
    const echo = await backend('echo');
    const { fd, port } = await listener();
    const splicer = KernelSplicer.open();
    const front = new GatewayFront(splicer, [fd], echoCatalog('127.0.0.1', portOf(echo)), settings, drop);
    try {
      await new Promise((r) => setTimeout(r, 50));
      const held = connect({ host: '127.0.0.1', port });
      held.on('error', () => undefined);
      held.write(connectHead('echo.ns.svc.clusterset.local:80'));
      await new Promise((r) => held.once('data', r));
      expect(splicer.frontStats().open).toBe(1);
      const pairs = splicer.detach();
      expect(pairs.length).toBe(1);
      splicer.release(pairs.map((p) => p.id));
      await new Promise((r) => setTimeout(r, 100));
      expect(splicer.frontStats().open).toBe(0);
      held.destroy();
      // A connection still in its head when the front closes: not counted afterwards (settled() reads these).
      const slow = connect({ host: '127.0.0.1', port });
      slow.on('error', () => undefined);
      await new Promise((r) => setTimeout(r, 200));
      expect(splicer.frontStats().setups).toBe(1);
      front.close();
      splicer.destroy();
      await new Promise((r) => setTimeout(r, 100));
      expect(splicer.frontStats()).toMatchObject({ setups: 0, open: 0 });
      slow.destroy();
    } finally {
      front.close();
      splicer.destroy();
      echo.close();
      closeFd(fd);
    }
  });

  /** Polls `ok` until it holds (a generous deadline: the machine may be busy). */
  const until = async (ok: () => boolean, what: string, ms = 20_000) => {
    const deadline = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  /** A port nothing listens on. */
  const refusingPort = async () => {
    const gone = await backend('gone');
    const port = portOf(gone);
    await new Promise((r) => gone.close(r));
    return port;
  };
  const sum = (xs: number[] | undefined) => (xs ?? []).reduce((a, b) => a + b, 0);

  it("tags its pairs with the choice's report index: bytes, opened, failed endpoints, setup time; reports each failed endpoint", async () => {
    const echo = await backend('echo');
    const refused = await refusingPort();
    const { fd, port } = await listener();
    const splicer = KernelSplicer.open();
    const failures: [number, string, number, number][] = [];
    try {
      splicer.startFront({ gateway: true, listeners: [fd], connectMs: 5_000, headerMs: 10_000 }, (handed, _successes, f) => {
        for (const h of handed) closeFd(h.fd);
        failures.push(...f);
      });
      const authority = 'echo.ns.svc.clusterset.local:80';
      // The first connection tries the refusing endpoint first, then the next.
      splicer.frontRoutes([{ key: authority, choices: [{ report: 7, weight: 1, addrs: [{ ip: '127.0.0.1', port: refused }, { ip: '127.0.0.1', port: portOf(echo) }] }] }], true);
      await new Promise((r) => setTimeout(r, 50));
      const c = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
      c.on('error', () => undefined);
      let got = '';
      c.on('data', (d: Buffer) => (got += d.toString('latin1')));
      c.write(connectHead(authority));
      const answer = 'HTTP/1.1 200 Connection Established\r\n\r\nhello from echo\n';
      await until(() => got === answer, 'the answer and the greeting');
      c.write('ping\n');
      // Counted as they move, the pair still open; the head and the 200 were the front's, not the pair's.
      await until(() => splicer.tagStats().up[7] === 5 && splicer.tagStats().down[7] === 'hello from echo\nping\n'.length, 'the bytes counted');
      expect(splicer.stats().pairs).toBe(1);
      await until(() => failures.length === 1, 'the failed endpoint reported');
      expect(failures).toEqual([[7, '127.0.0.1', refused, constants.errno.ECONNREFUSED]]);
      const t = splicer.tagStats();
      expect(t.up.length).toBe(8);
      expect(t.opened[7]).toBe(1);
      expect(t.failed[7]).toBe(1);
      expect(t.setupSumUs[7]).toBeGreaterThan(0);
      expect(t.setupBuckets[7]!.length).toBe(SETUP_BUCKETS_US.length + 1);
      expect(sum(t.setupBuckets[7])).toBe(t.opened[7]);
      expect(sum(t.opened) + sum(t.failed)).toBe(2);
      expect(splicer.frontStats().failuresDropped).toBe(0);
      c.destroy();
    } finally {
      splicer.destroy();
      echo.close();
      closeFd(fd);
    }
  });

  it("the gateway's front passes endpoint failures on (endpointFailed) and still splices", async () => {
    const echo = await backend('echo');
    const refused = await refusingPort();
    const { fd, port } = await listener();
    const splicer = KernelSplicer.open();
    const catalog = changingCatalog([{ namespace: 'ns', name: 'echo', ports: new Map([[80, [{ ip: '127.0.0.1', port: refused }, { ip: '127.0.0.1', port: portOf(echo) }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } }]);
    const failed: [number, string, number, number][] = [];
    const front = new GatewayFront(splicer, [fd], catalog, { ...settings, maxPerSource: 10 }, { ...drop, endpointFailed: (...f) => failed.push(f) });
    try {
      await new Promise((r) => setTimeout(r, 50));
      // Two connections start at the two endpoints in turn: one of them meets the refusing one first.
      for (let i = 0; i < 2; i++) {
        const r = await exchange(port, `${connectHead('echo.ns.svc.clusterset.local:80')}ping\n`);
        expect(r.data).toBe('HTTP/1.1 200 Connection Established\r\n\r\nhello from echo\nping\nbye from echo\n');
      }
      await until(() => failed.length === 1, 'the failed endpoint reported');
      expect(failed).toEqual([[0, '127.0.0.1', refused, constants.errno.ECONNREFUSED]]);
      expect(splicer.tagStats().opened[0]).toBe(2);
    } finally {
      front.close();
      splicer.destroy();
      echo.close();
      closeFd(fd);
    }
  });

  it('counts the addresses of one IPv6 /64 as one source', async () => {
    const ns = makeNetns();
    ns.enter();
    try {
      for (const a of ['fd00:ec::1', 'fd00:ec::2', 'fd00:ec::3']) execFileSync('ip', ['-n', ns.name, '-6', 'addr', 'add', `${a}/64`, 'dev', 'lo', 'nodad']);
      const echo = await backend('echo', 'fd00:ec::1');
      const gw = await Gateway.start({ host: 'fd00:ec::1', port: 0, catalog: echoCatalog('fd00:ec::1', portOf(echo)), kernelSplice: true, front: true, limits: { perSource: 1 } });
      try {
        const first = connect({ host: 'fd00:ec::1', port: gw.address.port, localAddress: 'fd00:ec::2' });
        first.on('error', () => undefined);
        first.write(connectHead('echo.ns.svc.clusterset.local:80'));
        await new Promise((r) => first.once('data', r));
        const other = await exchange(gw.address.port, connectHead('echo.ns.svc.clusterset.local:80'), { host: 'fd00:ec::1', localAddress: 'fd00:ec::3' });
        expect(other.data).toBe('');
        expect(other.reset).toBe(true);
        first.destroy();
      } finally {
        gw.destroy();
        echo.close();
      }
    } finally {
      ns.remove();
    }
  });
});

describe("the proxy front's table", () => {
  it('follows a cluster back to health also when it was down at the first push (FailOver fails back)', async () => {
    const pushes: NativeFrontEntry[][] = [];
    const splicer = { startFront: () => undefined, frontRoutes: (e: NativeFrontEntry[]) => pushes.push(e), frontStats: () => ({ notRedirected: 0, limited: 0, setups: 0 }), frontPause: () => undefined, frontRelease: () => undefined } as unknown as KernelSplicer;
    const P = 'default/default/default/primary';
    const S = 'default/default/default/secondary';
    const health = new HealthBook();
    const routes = new RouteMap();
    routes.replace(new Map([['10.96.0.10:8080', { service: 'echo', namespace: 'ns', port: 8080, localEndpoints: [], policy: { lbType: 'FailOver', targets: [{ clusterKey: P }, { clusterKey: S }] }, exporters: [{ clusterKey: P, gateway: { host: '10.0.0.1', port: 8081 } }, { clusterKey: S, gateway: { host: '10.0.0.2', port: 8081 } }] }]]));
    health.checked(P, false);
    const front = new ProxyFront(splicer, [], { connections: { fd: () => 0, info: () => ({ valueSize: 32 }) } as unknown as NativeMap, destinationOf: () => undefined, mark: 0 }, routes, { localCluster: 'default/default/default/here', log: componentLogger('test'), health, tls: false, idleMs: 0, setupMs: 1_000, connectMs: 1_000, maxTotal: 10, maxPerSource: 10, now: Date.now }, { handed: () => undefined, succeeded: () => undefined, counted: () => undefined });
    try {
      front.ready();
      await new Promise((r) => setTimeout(r, 50));
      const gatewayOf = () => pushes.at(-1)![0]!.choices![0]!.addrs[0]!.ip;
      expect(gatewayOf()).toBe('10.0.0.2');
      health.checked(P, true);
      await new Promise((r) => setTimeout(r, 600));
      expect(gatewayOf()).toBe('10.0.0.1');
    } finally {
      front.close();
    }
  });

  it('scales weights the schema allows (any integer) into what the front draws with, in proportion', async () => {
    const pushes: NativeFrontEntry[][] = [];
    const splicer = { startFront: () => undefined, frontRoutes: (e: NativeFrontEntry[]) => pushes.push(e), frontStats: () => ({ notRedirected: 0, limited: 0, setups: 0 }) } as unknown as KernelSplicer;
    const A = 'default/default/default/a';
    const B = 'default/default/default/b';
    const routes = new RouteMap();
    routes.replace(new Map([['10.96.0.10:8080', { service: 'echo', namespace: 'ns', port: 8080, localEndpoints: [], policy: { lbType: 'ActiveActive', targets: [{ clusterKey: A, weight: 3_000_000_000 }, { clusterKey: B, weight: 1_000_000_000 }] }, exporters: [{ clusterKey: A, gateway: { host: '10.0.0.1', port: 8081 } }, { clusterKey: B, gateway: { host: '10.0.0.2', port: 8081 } }] }]]));
    const front = new ProxyFront(splicer, [], { connections: { fd: () => 0, info: () => ({ valueSize: 32 }) } as unknown as NativeMap, destinationOf: () => undefined, mark: 0 }, routes, { localCluster: 'default/default/default/here', log: componentLogger('test'), health: new HealthBook(), tls: false, idleMs: 0, setupMs: 1_000, connectMs: 1_000, maxTotal: 10, maxPerSource: 10, now: Date.now }, { handed: () => undefined, succeeded: () => undefined, counted: () => undefined });
    try {
      front.ready();
      await new Promise((r) => setTimeout(r, 50));
      expect(pushes.at(-1)![0]!.choices!.map((c) => c.weight)).toEqual([1_000_000, 333_333]);
    } finally {
      front.close();
    }
  });
});

describeKernel('the node proxy front (real datapath)', () => {
  const CLUSTER_IP = '10.96.0.10';
  /** Redirected by the datapath, with no route in the proxy. */
  const NO_ROUTE_IP = '10.96.0.11';
  const pins = makePinDir();
  let ns: TestNetns | undefined;
  let cg: TestCgroup | undefined;
  let dp: Datapath | undefined;
  let proxy: NodeProxy | undefined;
  const closers: (() => unknown)[] = [];
  const routes = new RouteMap();
  const route = (policy: Route['policy'], exporters: Route['exporters']): Route => ({ service: 'echo', namespace: 'ns', port: 8080, exporters, policy, localEndpoints: [] });
  const A = 'default/default/default/cluster-a';
  const B = 'default/default/default/cluster-b';
  const C = 'default/default/default/cluster-c';

  beforeAll(async () => {
    ns = makeNetns(['10.96.0.0/16']);
    ns.enter();
    cg = makeCgroup();
    dp = Datapath.open({ bpffs: pins.path, cgroup: cg.path, objectDir: defaults.objectDir, settings: { proxy: { ip: '127.0.0.1', port: 15001 }, proxyMark: defaults.proxyMark } });
    dp.services.set({ ip: CLUSTER_IP, port: 8080, protocol: 'tcp' }, { id: 1, disabled: false });
    dp.services.set({ ip: NO_ROUTE_IP, port: 8080, protocol: 'tcp' }, { id: 2, disabled: false });
    // Two clusters, each a gateway (with its own front) in front of its own backend; a third whose gateway is down.
    for (const [name, gwIp, beIp] of [['a', '127.0.0.11', '127.0.0.21'], ['b', '127.0.0.12', '127.0.0.22']] as const) {
      const be = await backend(name, beIp, 9000);
      const gw = await Gateway.start({
        host: gwIp,
        port: 8081,
        catalog: changingCatalog([{ namespace: 'ns', name: 'echo', ports: new Map([[8080, [{ ip: beIp, port: 9000 }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } }]),
        kernelSplice: true,
        front: true,
      });
      closers.push(() => be.close(), () => gw.destroy());
    }
    proxy = await startProxy();
  });
  /** The proxy as the agent starts it, its front reading the datapath's connection map. */
  const startProxy = (front: Partial<ProxyFrontOptions> = {}) =>
    NodeProxy.start({
      host: '127.0.0.1',
      port: 15001,
      localCluster: 'default/default/default/here',
      routes,
      originalDestination: (s) => dp!.takeOriginalDestination(s),
      connect: (host, port) => connectMarked({ host, port, mark: defaults.proxyMark }),
      kernelSplice: true,
      front: { connections: dp!.map('connections'), destinationOf: (v) => origDstCodec.decode(v), mark: defaults.proxyMark, ...front },
    });
  afterAll(async () => {
    await proxy?.close(100);
    cleanupAll(
      ...closers,
      () => dp?.uninstall(),
      () => cg?.remove(),
      () => pins.remove(),
      () => ns?.remove(),
    );
  });

  const settle = () => new Promise((r) => setTimeout(r, 50));
  const call = async (n: number) => runClient({ cgroup: cg!.path, targets: Array.from({ length: n }, () => `${CLUSTER_IP}:8080`), timeoutMs: 5_000 });

  it('sets a redirected connection up itself: tunnel, the answer, half-close; weights as the policy says', async () => {
    routes.replace(new Map([[`${CLUSTER_IP}:8080`, route({ lbType: 'ActiveActive', targets: [{ clusterKey: A, weight: 3 }, { clusterKey: B, weight: 1 }] }, [
      { clusterKey: A, gateway: { host: '127.0.0.11', port: 8081 } },
      { clusterKey: B, gateway: { host: '127.0.0.12', port: 8081 } },
    ])]]));
    await settle();
    const before = proxy!.stats.fronted;
    const tags = () => proxy!.tunnels.splicer!.tagStats();
    const was = tags();
    const results = await call(40);
    for (const r of results) expect(r.reply, JSON.stringify(r)).toMatch(/^hello from ([ab])\nhello from \d+\nbye from \1\n?$/);
    const a = results.filter((r) => r.reply!.startsWith('hello from a')).length;
    // Smooth weighted round robin: 3 to 1 exactly over 40 draws.
    expect(a).toBe(30);
    expect(proxy!.stats.fronted - before).toBe(40);
    // Tagged by report index (cluster-a 0, cluster-b 1, in the order the table named them): opened, a setup
    // time each, and bytes both ways.
    const now = tags();
    const delta = (k: 'opened' | 'up' | 'down', i: number) => (now[k][i] ?? 0) - (was[k][i] ?? 0);
    expect([delta('opened', 0), delta('opened', 1)]).toEqual([30, 10]);
    for (const i of [0, 1]) {
      expect(now.setupBuckets[i]!.reduce((x, y) => x + y, 0)).toBe(now.opened[i]);
      expect(now.setupSumUs[i]).toBeGreaterThan(0);
      expect(delta('up', i)).toBeGreaterThan(0);
      expect(delta('down', i)).toBeGreaterThan(0);
    }
  });

  it("hands a connection whose first candidate failed to the policy's next one, and ejects the failing cluster", async () => {
    routes.replace(new Map([[`${CLUSTER_IP}:8080`, route({ lbType: 'FailOver', targets: [{ clusterKey: C }, { clusterKey: B }] }, [
      { clusterKey: C, gateway: { host: '127.0.0.13', port: 8081 } },
      { clusterKey: B, gateway: { host: '127.0.0.12', port: 8081 } },
    ])]]));
    await settle();
    const retries = proxy!.stats.retries;
    for (let i = 0; i < 4; i++) expect((await call(1))[0]!.reply).toMatch(/^hello from b\n/);
    expect(proxy!.stats.retries).toBeGreaterThan(retries);
    // Three failures eject cluster-c: the front's table now starts with cluster-b, and sets the connections up itself.
    expect(proxy!.health.isHealthy(C, 'ns/echo', Date.now())).toBe(false);
    await new Promise((r) => setTimeout(r, 400));
    const fronted = proxy!.stats.fronted;
    const results = await call(5);
    for (const r of results) expect(r.reply).toMatch(/^hello from b\n/);
    expect(proxy!.stats.fronted - fronted).toBe(5);
  });

  it('goes round local endpoints when one refuses, as the JavaScript path does', async () => {
    routes.replace(new Map([[`${CLUSTER_IP}:8080`, { ...route(undefined, []), localEndpoints: [{ ip: '127.0.0.31', port: 9000 }, { ip: '127.0.0.22', port: 9000 }] }]]));
    await settle();
    const fronted = proxy!.stats.fronted;
    for (let i = 0; i < 6; i++) expect((await call(1))[0]!.reply).toMatch(/^hello from b\n/);
    expect(proxy!.stats.fronted - fronted).toBe(6);
  });

  it('resets a connection to a ClusterIP with no route (the JavaScript path decides)', async () => {
    const [r] = await runClient({ cgroup: cg!.path, targets: [`${NO_ROUTE_IP}:8080`], timeoutMs: 5_000 });
    expect(r!.reply ?? '').toBe('');
    expect(r!.error).toMatch(/ECONNRESET|EPIPE/);
  });

  it('does not use a record older than the bound (a 4-tuple reused after a record nobody took)', async () => {
    await proxy!.close(100);
    // This process's clock 60 s behind the datapath's (as in a time namespace): every record looks 60 s old.
    proxy = await startProxy({ staleMs: 30_000, clockOffsetNs: -60e9 });
    routes.replace(new Map([[`${CLUSTER_IP}:8080`, route({ lbType: 'ActiveActive' }, [{ clusterKey: B, gateway: { host: '127.0.0.12', port: 8081 } }])]]));
    await settle();
    const [r] = await call(1);
    expect(r!.reply ?? '').toBe('');
    await new Promise((r) => setTimeout(r, 300));
    expect(proxy!.stats.notRedirected).toBe(1);
    expect(proxy!.stats.fronted).toBe(0);
  });
});
