// Sealed records (tunnel/records.ts, native/src/records.cc) on real loopback sockets: the splicer's thread seals
// what one application sends and the other end's thread opens it, bytes exact both ways with half-close, keys
// ratcheted forward every few records; a flipped bit, a truncated stream, garbage from a stranger or keys that
// disagree cut the pair (reset), and nothing unauthenticated reaches the application. Then end to end: a node
// proxy and a gateway with cluster identities agree to records by default, and a proxy without a splicer still
// gets TLS streams from the same gateway. No root needed; the addon must be built.
import { createCipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { staticCatalog } from '../src/gateway/catalog.js';
import { Gateway } from '../src/gateway/gateway.js';
import { type KeyPair, createCa, issue } from '../src/identity/pki.js';
import { clusterSpiffeId } from '../src/identity/spiffe.js';
import { KernelSplicer, type SpliceEnd } from '../src/native/kernel-splice.js';
import { socketError } from '../src/native/libc.js';
import { packageRoot } from '../src/paths.js';
import { NodeProxy, type Route } from '../src/proxy/proxy.js';
import type { TunnelTls } from '../src/tunnel/protocol.js';
import type { RecordSeal } from '../src/tunnel/records.js';
import { splice } from '../src/tunnel/splice.js';
import { clusterKey } from './helpers/objects.js';

const built = existsSync(join(packageRoot, 'build', 'native', 'Release', 'ecnet_native.node'));
const describeBuilt = built ? describe : describe.skip;
if (!built) console.warn('sealed record tests skipped: the addon is not built (npm run build)');

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What a socket receives until it ends: its bytes, and whether the end was clean (FIN) or a reset. */
function collect(s: Socket): Promise<{ bytes: Buffer; end: 'fin' | 'reset' }> {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  return new Promise((resolve) => {
    s.once('end', () => {
      // libuv reports a reset that arrives after a partial read as end of stream: the socket's error tells.
      const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
      const errno = typeof fd === 'number' && fd >= 0 ? socketError(fd) : 0;
      resolve({ bytes: Buffer.concat(chunks), end: errno ? 'reset' : 'fin' });
    });
    s.once('error', () => resolve({ bytes: Buffer.concat(chunks), end: 'reset' }));
  });
}

describeBuilt('sealed records between two splicers', () => {
  let kernel: KernelSplicer;
  const servers: Server[] = [];
  const sockets: Socket[] = [];
  beforeEach(() => {
    kernel = KernelSplicer.open();
  });
  afterEach(() => {
    kernel.destroy();
    for (const s of sockets.splice(0)) s.destroy();
    for (const s of servers.splice(0)) s.close();
  });

  /** Two connected loopback sockets (both half-open capable). */
  const pair = async (): Promise<[Socket, Socket]> => {
    const srv = createServer({ allowHalfOpen: true });
    servers.push(srv);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const accepted = new Promise<Socket>((r) => srv.once('connection', r));
    const c = connect({ port: (srv.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise((r) => c.once('connect', r));
    const s = await accepted;
    for (const x of [c, s]) {
      sockets.push(x);
      x.on('error', () => undefined);
    }
    return [c, s];
  };

  const secrets = () => ({ toServer: randomBytes(32), toClient: randomBytes(32) });
  // Copies: the splicer zeroes the secrets it was given once it holds its own.
  const clientSeal = (k: ReturnType<typeof secrets>, rekeyRecords?: number): RecordSeal => ({ send: Buffer.from(k.toServer), recv: Buffer.from(k.toClient), server: false, ...(rekeyRecords ? { rekeyRecords } : {}) });
  const serverSeal = (k: ReturnType<typeof secrets>, rekeyRecords?: number): RecordSeal => ({ send: Buffer.from(k.toClient), recv: Buffer.from(k.toServer), server: true, ...(rekeyRecords ? { rekeyRecords } : {}) });

  /**
   * app ⇄ [client end] ⇄ tunnel ⇄ [server end] ⇄ backend, each end a sealed pair on the splicer. `between`, when
   * given, sits on the tunnel and sees (and may change) every byte from the client end to the server end.
   */
  const link = async (o: { client: RecordSeal; server: RecordSeal; between?: (fromClient: Socket, toServer: Socket) => void }) => {
    const [app, clientPlain] = await pair();
    const [tunnelClient, tunnelFar] = await pair();
    let tunnelServer = tunnelFar;
    if (o.between) {
      const [relayOut, relayIn] = await pair();
      tunnelServer = relayIn;
      o.between(tunnelFar, relayOut);
      tunnelServer = relayIn;
    }
    const [serverPlain, backend] = await pair();
    const ends: { client?: SpliceEnd; server?: SpliceEnd } = {};
    splice(clientPlain, tunnelClient, 60_000, (e) => (ends.client = e), kernel, undefined, o.client);
    splice(serverPlain, tunnelServer, 60_000, (e) => (ends.server = e), kernel, undefined, o.server);
    return { app, backend, ends };
  };

  it('carries bytes exactly both ways, with half-close, through many key updates', async () => {
    const k = secrets();
    const { app, backend, ends } = await link({ client: clientSeal(k, 3), server: serverSeal(k, 3) });
    const up = randomBytes(6 * 1024 * 1024 + 123);
    const down = randomBytes(3 * 1024 * 1024 + 7);
    const atBackend = collect(backend);
    const atApp = collect(app);
    app.end(up);
    backend.end(down);
    const [b, a] = await Promise.all([atBackend, atApp]);
    expect(b.end).toBe('fin');
    expect(a.end).toBe('fin');
    expect(sha(b.bytes)).toBe(sha(up));
    expect(sha(a.bytes)).toBe(sha(down));
    while (!ends.client || !ends.server) await wait(10);
    expect(ends.client).toMatchObject({ errno: 0, aToB: up.length, bToA: down.length });
    expect(ends.server).toMatchObject({ errno: 0, aToB: down.length, bToA: up.length });
  });

  it('passes a half-close on only after the last byte: the backend answers after the client ended', async () => {
    const k = secrets();
    const { app, backend } = await link({ client: clientSeal(k), server: serverSeal(k) });
    let got = '';
    backend.on('data', (d) => (got += d));
    backend.on('end', () => backend.end(`got ${got}`));
    const answer = collect(app);
    app.end('question');
    const a = await answer;
    expect(a).toMatchObject({ end: 'fin' });
    expect(a.bytes.toString()).toBe('got question');
  });

  it('cuts the pair when a key update is not made at the same record on both ends', async () => {
    const k = secrets();
    const { app, backend, ends } = await link({ client: clientSeal(k, 3), server: serverSeal(k) });
    const atBackend = collect(backend);
    // Records are at most 64 KiB: 1 MiB is more than 3 of them, under a key the server end does not have yet.
    app.write(randomBytes(1024 * 1024));
    const b = await atBackend;
    expect(b.end).toBe('reset');
    while (!ends.server) await wait(10);
    expect(ends.server.reason).toBe('EBADMSG');
  });

  it('passes on nothing of a record with one flipped bit, and resets both applications', async () => {
    const k = secrets();
    const flipAt = 200_000;
    let seen = 0;
    const { app, backend, ends } = await link({
      client: clientSeal(k),
      server: serverSeal(k),
      between: (from, to) => {
        from.on('data', (d: Buffer) => {
          const copy = Buffer.from(d);
          if (seen <= flipAt && flipAt < seen + d.length) copy[flipAt - seen]! ^= 0x01;
          seen += d.length;
          to.write(copy);
        });
        to.on('data', (d: Buffer) => from.write(d));
        // A relay passes a reset on, as the network between two ends would.
        to.on('error', () => from.resetAndDestroy());
      },
    });
    const sent = randomBytes(1024 * 1024);
    const atBackend = collect(backend);
    const atApp = collect(app);
    app.write(sent);
    const b = await atBackend;
    expect(b.end).toBe('reset');
    // Only whole records before the damaged one arrived: a prefix of what was sent, short of the flipped byte.
    expect(b.bytes.length).toBeLessThan(flipAt);
    expect(sha(b.bytes)).toBe(sha(sent.subarray(0, b.bytes.length)));
    while (!ends.server) await wait(10);
    expect(ends.server.reason).toBe('EBADMSG');
    // The cut travels back: the server end's reset ends the client end, which resets the application.
    expect((await atApp).end).toBe('reset');
  });

  it('never ends a truncated stream like a complete one', async () => {
    const k = secrets();
    let forwarded = 0;
    const { app, backend, ends } = await link({
      client: clientSeal(k),
      server: serverSeal(k),
      // Passes 100,000 bytes on, then closes cleanly (a FIN where the end record should be).
      between: (from, to) => {
        from.on('data', (d: Buffer) => {
          if (forwarded >= 100_000) return;
          const part = d.subarray(0, 100_000 - forwarded);
          forwarded += part.length;
          to.write(part);
          if (forwarded >= 100_000) to.end();
        });
      },
    });
    const atBackend = collect(backend);
    app.write(randomBytes(512 * 1024));
    expect((await atBackend).end).toBe('reset');
    while (!ends.server) await wait(10);
    expect(ends.server.reason).toBe('EPROTO');
  });

  it('sends nothing from the server end before the client end spoke, and cuts a stranger that sends garbage', async () => {
    const k = secrets();
    // The tunnel's client side is a stranger (no splicer): it sees what the server end sends, and sends garbage.
    const [stranger, tunnelServer] = await pair();
    const [serverPlain, backend] = await pair();
    const ends: { server?: SpliceEnd } = {};
    splice(serverPlain, tunnelServer, 60_000, (e) => (ends.server = e), kernel, undefined, serverSeal(k));
    const atStranger = collect(stranger);
    const atBackend = collect(backend);
    backend.write('banner: the backend speaks first');
    await wait(200);
    stranger.write(Buffer.from('GET / HTTP/1.1\r\nhost: x\r\n\r\n'));
    const [s, b] = await Promise.all([atStranger, atBackend]);
    expect(s.bytes.length).toBe(0);
    expect(s.end).toBe('reset');
    expect(b).toMatchObject({ end: 'reset' });
    expect(b.bytes.length).toBe(0);
    while (!ends.server) await wait(10);
    expect(ends.server.reason).toBe('EPROTO');
  });

  /** The record format of docs/contracts.md, written here from the contract (not the addon): one direction. */
  const sealer = (secret: Buffer) => {
    const expand = (label: string, n: number) => createHmac('sha256', secret).update(`ecnet records ${label}\x01`).digest().subarray(0, n);
    const key = expand('key', 16);
    const iv = expand('iv', 12);
    let seq = 0n;
    return (type: number, plain: Buffer): Buffer => {
      const nonce = Buffer.from(iv);
      const s = Buffer.alloc(8);
      s.writeBigUInt64BE(seq++);
      for (let i = 0; i < 8; i++) nonce[4 + i]! ^= s[i]!;
      const len = plain.length + 16;
      const header = Buffer.from([type, (len >> 16) & 0xff, (len >> 8) & 0xff, len & 0xff]);
      const c = createCipheriv('aes-128-gcm', key, nonce);
      c.setAAD(header);
      return Buffer.concat([header, c.update(plain), c.final(), c.getAuthTag()]);
    };
  };

  /** A server end whose client is this test, writing records by hand on the tunnel's other socket. */
  const handWritten = async (k: ReturnType<typeof secrets>) => {
    const [client, tunnelServer] = await pair();
    const [serverPlain, backend] = await pair();
    const ends: { server?: SpliceEnd } = {};
    splice(serverPlain, tunnelServer, 60_000, (e) => (ends.server = e), kernel, undefined, serverSeal(k));
    return { client, backend, ends, seal: sealer(k.toServer) };
  };

  it('opens records written from the contract alone, and passes a hand-written end on as a FIN', async () => {
    const k = secrets();
    const { client, backend, ends, seal } = await handWritten(k);
    const atBackend = collect(backend);
    const payload = randomBytes(100_000);
    client.write(Buffer.concat([seal(0x17, Buffer.alloc(0)), seal(0x17, payload.subarray(0, 60_000)), seal(0x17, payload.subarray(60_000)), seal(0x15, Buffer.alloc(0))]));
    const b = await atBackend;
    expect(b.end).toBe('fin');
    expect(sha(b.bytes)).toBe(sha(payload));
    backend.end();
    while (!ends.server) await wait(10);
    expect(ends.server.errno).toBe(0);
  });

  it('cuts a peer that sends empty records after its first (work for the thread, no bytes), and serves the others meanwhile', async () => {
    const k = secrets();
    const { client, backend, ends, seal } = await handWritten(k);
    const atBackend = collect(backend);
    // Another pair on the same thread keeps answering while the flood is opened.
    const k2 = secrets();
    const other = await link({ client: clientSeal(k2), server: serverSeal(k2) });
    other.backend.on('data', (d) => other.backend.write(d));
    const first = seal(0x17, Buffer.from('x'));
    const empties = Buffer.concat(Array.from({ length: 50_000 }, () => seal(0x17, Buffer.alloc(0))));
    client.write(Buffer.concat([first, empties]));
    const t = Date.now();
    other.app.write('ping');
    await new Promise((r) => other.app.once('data', r));
    expect(Date.now() - t).toBeLessThan(1000);
    const b = await atBackend;
    expect(b.end).toBe('reset');
    // (A reset may take unread bytes with it: 'x' arrived or not, nothing else did.)
    expect(['', 'x']).toContain(b.bytes.toString());
    while (!ends.server) await wait(10);
    expect(ends.server.reason).toBe('EPROTO');
  });
});

describeBuilt('sealed records between a node proxy and a gateway with cluster identities', () => {
  const SET = 'sealed-set';
  let ca: KeyPair;
  let gw: Gateway;
  let backend: Server;
  const proxies: NodeProxy[] = [];
  const id = async (n: number): Promise<TunnelTls> => ({ ...(await issue(ca, clusterSpiffeId(SET, clusterKey(n)), 3_600_000)), ca: ca.cert, clusterSet: SET });
  const route = (): Route => ({ service: 'late', namespace: 'ns', port: 80, exporters: [{ clusterKey: clusterKey(1), gateway: { host: '127.0.0.1', port: gw.address.port } }], policy: { lbType: 'ActiveActive' }, localEndpoints: [] });
  const proxy = async (kernelSplice: boolean) => {
    const p = await NodeProxy.start({ host: '127.0.0.1', port: 0, localCluster: clusterKey(2), routes: { lookup: () => route() }, originalDestination: () => ({ ip: '10.96.0.9', port: 80 }), tls: await id(2), kernelSplice });
    proxies.push(p);
    return p;
  };

  beforeAll(async () => {
    ca = await createCa(SET);
    // Counts what arrives, hashes it, and answers once the client has half-closed: count, hash, then its own end.
    backend = createServer({ allowHalfOpen: true }, (c) => {
      const h = createHash('sha256');
      let n = 0;
      c.on('error', () => undefined);
      c.on('data', (d: Buffer) => {
        h.update(d);
        n += d.length;
      });
      c.on('end', () => c.end(`${n} ${h.digest('hex')}`));
    });
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
    const port = (backend.address() as AddressInfo).port;
    const catalog = staticCatalog([{ namespace: 'ns', name: 'late', ports: new Map([[80, [{ ip: '127.0.0.1', port }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } }]);
    gw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog, kernelSplice: true, tls: await id(1) });
  });
  afterAll(async () => {
    for (const p of proxies) p.destroy();
    gw?.destroy();
    backend?.close();
  });

  const send = async (p: NodeProxy, data: Buffer) => {
    const c = connect({ port: p.address.port, host: '127.0.0.1', allowHalfOpen: true });
    c.on('error', () => undefined);
    const answer = collect(c);
    c.end(data);
    return answer;
  };

  it('are what a proxy with a splicer and a gateway agree to: bytes exact, half-close kept', async () => {
    const p = await proxy(true);
    const data = randomBytes(16 * 1024 * 1024 + 5);
    const before = gw.stats.sealed;
    const a = await send(p, data);
    expect(a.end).toBe('fin');
    expect(a.bytes.toString()).toBe(`${data.length} ${sha(data)}`);
    expect(p.stats).toMatchObject({ proxied: 1, kernelSpliced: 1, sealed: 1 });
    expect(gw.stats.sealed).toBe(before + 1);
  });

  it('count against the gateway\'s connection limits until they end, not only until the hand-over', async () => {
    // A gateway that holds 2 connections; the backend holds each tunnel open until the client ends it.
    const hold = createServer({ allowHalfOpen: true }, (c) => {
      c.on('error', () => undefined);
      c.on('data', () => undefined);
      c.on('end', () => c.end('bye'));
      c.write('hello');
    });
    await new Promise<void>((r) => hold.listen(0, '127.0.0.1', r));
    const catalog = staticCatalog([{ namespace: 'ns', name: 'late', ports: new Map([[80, [{ ip: '127.0.0.1', port: (hold.address() as AddressInfo).port }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } }]);
    const small = await Gateway.start({ host: '127.0.0.1', port: 0, catalog, kernelSplice: true, tls: await id(1), limits: { total: 2, perSource: 2 } });
    const p = await NodeProxy.start({
      host: '127.0.0.1',
      port: 0,
      localCluster: clusterKey(2),
      routes: { lookup: () => ({ ...route(), exporters: [{ clusterKey: clusterKey(1), gateway: { host: '127.0.0.1', port: small.address.port } }] }) },
      originalDestination: () => ({ ip: '10.96.0.9', port: 80 }),
      tls: await id(2),
      kernelSplice: true,
    });
    proxies.push(p);
    try {
      const open = async () => {
        const c = connect({ port: p.address.port, host: '127.0.0.1', allowHalfOpen: true });
        c.on('error', () => undefined);
        const first = await new Promise<string>((resolve) => {
          c.once('data', (d) => resolve(d.toString()));
          c.once('close', () => resolve('closed'));
        });
        return { c, first };
      };
      const a = await open();
      const b = await open();
      expect([a.first, b.first]).toEqual(['hello', 'hello']);
      expect(small.stats.sealed).toBe(2);
      // A third tunnel is over the limit, also with the first two already in the splicer.
      expect((await open()).first).toBe('closed');
      expect(small.stats.limited).toBeGreaterThanOrEqual(1);
      // One ends: its slot is free again.
      const answer = collect(a.c);
      a.c.end();
      expect((await answer).bytes.toString()).toBe('bye');
      let d = await open();
      for (let i = 0; i < 20 && d.first !== 'hello'; i++) d = (await wait(50), await open());
      expect(d.first).toBe('hello');
      b.c.destroy();
      d.c.destroy();
    } finally {
      p.destroy();
      small.destroy();
      hold.close();
    }
  });

  it('give a backend that answers and closes at once its bytes and its end', async () => {
    const banner = createServer({ allowHalfOpen: true }, (c) => {
      c.on('error', () => undefined);
      c.end('banner and goodbye');
    });
    await new Promise<void>((r) => banner.listen(0, '127.0.0.1', r));
    const catalog = staticCatalog([{ namespace: 'ns', name: 'late', ports: new Map([[80, [{ ip: '127.0.0.1', port: (banner.address() as AddressInfo).port }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } }]);
    const gw2 = await Gateway.start({ host: '127.0.0.1', port: 0, catalog, kernelSplice: true, tls: await id(1) });
    const p = await NodeProxy.start({
      host: '127.0.0.1',
      port: 0,
      localCluster: clusterKey(2),
      routes: { lookup: () => ({ ...route(), exporters: [{ clusterKey: clusterKey(1), gateway: { host: '127.0.0.1', port: gw2.address.port } }] }) },
      originalDestination: () => ({ ip: '10.96.0.9', port: 80 }),
      tls: await id(2),
      kernelSplice: true,
    });
    proxies.push(p);
    try {
      for (let i = 0; i < 5; i++) {
        const c = connect({ port: p.address.port, host: '127.0.0.1', allowHalfOpen: true });
        c.on('error', () => undefined);
        const got = await collect(c);
        expect(got).toMatchObject({ end: 'fin' });
        expect(got.bytes.toString()).toBe('banner and goodbye');
        c.end();
      }
      expect(gw2.stats.sealed).toBe(5);
    } finally {
      p.destroy();
      gw2.destroy();
      banner.close();
    }
  });

  it('leave a proxy without a splicer on TLS streams, with the same gateway', async () => {
    const p = await proxy(false);
    const data = randomBytes(2 * 1024 * 1024);
    const before = gw.stats.sealed;
    const a = await send(p, data);
    expect(a.bytes.toString()).toBe(`${data.length} ${sha(data)}`);
    expect(p.stats).toMatchObject({ proxied: 1, sealed: 0 });
    expect(gw.stats.sealed).toBe(before);
  });
});
