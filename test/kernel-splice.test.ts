// Kernel splicing (the addon's Splicer through src/tunnel/splice.ts) on real loopback sockets: bytes exact
// both ways, half-close after the last byte, bytes Node had already read sent first, idle limit, resets, and
// idle pairs that hold no pipe. No root needed; the addon must be built.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync } from 'node:fs';
import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KernelSplicer, type SpliceEnd } from '../src/native/kernel-splice.js';
import { socketError } from '../src/native/libc.js';
import { packageRoot } from '../src/paths.js';
import { type Spliced, splice } from '../src/tunnel/splice.js';

const built = existsSync(join(packageRoot, 'build', 'native', 'Release', 'ecnet_native.node'));
const describeBuilt = built ? describe : describe.skip;
if (!built) console.warn('kernel splice tests skipped: the addon is not built (npm run build)');

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const listening = (s: Server) => new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as AddressInfo).port)));

interface Relay {
  port: number;
  ends: SpliceEnd[];
  pairs: Spliced[];
  ended(n: number): Promise<SpliceEnd[]>;
}

describeBuilt('kernel splice', () => {
  let splicer: KernelSplicer;
  const servers: Server[] = [];
  const sockets: Socket[] = [];
  beforeEach(() => {
    splicer = KernelSplicer.open();
  });
  afterEach(() => {
    splicer.destroy();
    for (const s of sockets.splice(0)) s.destroy();
    for (const s of servers.splice(0)) s.close();
  });

  const server = async (onConn: (c: Socket) => void): Promise<number> => {
    const s = createServer({ allowHalfOpen: true }, (c) => {
      sockets.push(c);
      c.on('error', () => undefined);
      onConn(c);
    });
    servers.push(s);
    return listening(s);
  };

  /** Accepts clients and splices each to a fresh connection to `upstream` once `ready` says so. */
  const relay = async (upstream: number, idleMs = 60_000, ready: (up: Socket) => Promise<void> = async () => undefined, kernel = true): Promise<Relay> => {
    const r: Relay = {
      port: 0,
      ends: [],
      pairs: [],
      ended: async (n) => {
        while (r.ends.length < n) await new Promise((res) => setTimeout(res, 20));
        return r.ends;
      },
    };
    const s = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (c) => {
      const up = connect({ host: '127.0.0.1', port: upstream, allowHalfOpen: true });
      up.once('connect', async () => {
        await ready(up);
        r.pairs.push(splice(c, up, idleMs, (end) => r.ends.push(end ?? { errno: 0, reason: 'stream', aToB: 0, bToA: 0 }), kernel ? splicer : undefined));
      });
    });
    servers.push(s);
    r.port = await listening(s);
    return r;
  };

  const client = (port: number) => {
    const c = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    sockets.push(c);
    const chunks: Buffer[] = [];
    c.on('data', (d: Buffer) => chunks.push(d));
    const done = new Promise<{ data: Buffer; error?: Error }>((resolve) => {
      c.on('end', () => {
        // libuv reports a reset that arrives after a partial read as end of stream: the socket's error tells.
        const fd = (c as unknown as { _handle?: { fd?: number } })._handle?.fd;
        const errno = typeof fd === 'number' && fd >= 0 ? socketError(fd) : 0;
        resolve({ data: Buffer.concat(chunks), ...(errno ? { error: new Error(errno === 104 ? 'ECONNRESET (seen at end of stream)' : `errno ${errno}`) } : {}) });
      });
      c.on('error', (error) => resolve({ data: Buffer.concat(chunks), error }));
      c.on('close', () => resolve({ data: Buffer.concat(chunks) }));
    });
    return { socket: c, done };
  };

  it('moves 32 MiB each way at once, byte for byte, in the kernel', async () => {
    const echo = await server((c) => c.pipe(c));
    const r = await relay(echo);
    const payload = randomBytes(32 << 20);
    const { socket, done } = client(r.port);
    socket.end(payload);
    const { data } = await done;
    expect(sha(data)).toBe(sha(payload));
    const [end] = await r.ended(1);
    expect(r.pairs[0]!.mode).toBe('kernel');
    expect(end).toEqual({ errno: 0, reason: '', aToB: payload.length, bToA: payload.length });
    expect(splicer.stats().pairs).toBe(0);
    // Nothing left to drain: close() returns at once.
    await splicer.close();
  });

  it('passes a half-close on only after the last byte, and the other way keeps going', async () => {
    const sink = await server((c) => {
      const h = createHash('sha256');
      let n = 0;
      c.on('data', (d: Buffer) => {
        h.update(d);
        n += d.length;
      });
      // Answers only once it has seen the end: a half-close that overtook bytes would show as a short count.
      c.on('end', () => setTimeout(() => c.end(`${n} ${h.digest('hex')}`), 50));
    });
    const r = await relay(sink);
    const payload = randomBytes(8 << 20);
    const { socket, done } = client(r.port);
    socket.end(payload);
    const { data } = await done;
    expect(data.toString()).toBe(`${payload.length} ${sha(payload)}`);
    expect((await r.ended(1))[0]!.errno).toBe(0);
  });

  it('close() drains: a pair under way ends by itself before the thread stops', async () => {
    const slow = await server((c) => {
      let n = 0;
      c.on('data', (d: Buffer) => (n += d.length));
      c.on('end', () => setTimeout(() => c.end(String(n)), 300));
    });
    const r = await relay(slow);
    const { socket, done } = client(r.port);
    socket.end(Buffer.alloc(1 << 20, 1));
    while (splicer.stats().pairs < 1) await new Promise((res) => setTimeout(res, 10));
    const closing = splicer.close();
    expect((await done).data.toString()).toBe(String(1 << 20));
    await closing;
    expect((await r.ended(1))[0]!.errno).toBe(0);
  });

  it('sends the bytes Node had already read before the hand-over first', async () => {
    const banner = await server((c) => {
      c.write('hello from upstream\n');
      c.pipe(c);
    });
    // Splice only once the banner sits in Node's buffer of the upstream socket.
    const r = await relay(banner, 60_000, (up) => new Promise((res) => up.once('readable', () => res())));
    const { socket, done } = client(r.port);
    socket.end('ping');
    const { data } = await done;
    expect(data.toString()).toBe('hello from upstream\nping');
    expect(r.pairs[0]!.mode).toBe('kernel');
  });

  it('resets both sockets of a pair idle for idleMs (ETIMEDOUT): a cut stream never looks complete', async () => {
    const quiet = await server(() => undefined);
    const r = await relay(quiet, 1_000);
    const { done } = client(r.port);
    const t0 = Date.now();
    expect((await done).error?.message).toMatch(/ECONNRESET/);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect((await r.ended(1))[0]!.reason).toBe('ETIMEDOUT');
  });

  describe('as streams (TLS tunnels, or no splicer)', () => {
    it('an upstream reset mid-stream resets the client: it never sees a normal end after part of the bytes', async () => {
      // Answers a request with part of a long reply, then resets.
      const rude = await server((c) => c.once('data', () => c.write(randomBytes(200_000), () => c.resetAndDestroy())));
      const r = await relay(rude, 60_000, async () => undefined, false);
      const { socket, done } = client(r.port);
      socket.write('GET');
      const got = await done;
      expect(r.pairs[0]!.mode).toBe('stream');
      expect(got.error?.message).toMatch(/ECONNRESET/);
      expect(got.data.length).toBeLessThan(200_000);
    });

    it('the idle limit resets both sides', async () => {
      const quiet = await server(() => undefined);
      const r = await relay(quiet, 500, async () => undefined, false);
      const { done } = client(r.port);
      expect((await done).error?.message).toMatch(/ECONNRESET/);
    });

    it('a complete exchange still ends normally, every byte delivered', async () => {
      const echo = await server((c) => c.pipe(c));
      const r = await relay(echo, 60_000, async () => undefined, false);
      const payload = randomBytes(1 << 20);
      const { socket, done } = client(r.port);
      socket.end(payload);
      const got = await done;
      expect(got.error).toBeUndefined();
      expect(sha(got.data)).toBe(sha(payload));
    });
  });

  it('ends the pair when one side resets, and resets the other (a cut stream never looks complete)', async () => {
    const rude = await server((c) => c.once('data', () => c.resetAndDestroy()));
    const r = await relay(rude);
    const { socket, done } = client(r.port);
    socket.write('x');
    expect((await done).error?.message).toMatch(/ECONNRESET/);
    const [end] = await r.ended(1);
    expect(['ECONNRESET', 'EPIPE']).toContain(end!.reason);
  });

  it('sees a reset that arrives after that side already sent its end (no read would see it)', async () => {
    let answered: () => void;
    const pong = new Promise<void>((res) => (answered = res));
    // Answers the request once it has ended, then stays quiet: only the client's reset can end the pair.
    const quiet = await server((c) => {
      c.on('data', () => undefined);
      c.on('end', () => c.write('pong', () => answered()));
    });
    const r = await relay(quiet);
    // A client that never reads: closing it with the answer unread makes its kernel send a reset.
    const socket = connect({ host: '127.0.0.1', port: r.port, allowHalfOpen: true });
    sockets.push(socket);
    socket.on('error', () => undefined);
    socket.pause();
    socket.end('request');
    await pong;
    await new Promise((res) => setTimeout(res, 100)); // the answer sits in the client's receive queue
    socket.destroy();
    const [end] = await r.ended(1);
    // A reset in CLOSE_WAIT reads as EPIPE.
    expect(['ECONNRESET', 'EPIPE']).toContain(end!.reason);
    expect(end!.bToA).toBe(4);
  });

  it('holds no pipe for 1,000 idle pairs, and destroy() ends them all (ECANCELED)', async () => {
    const quiet = await server(() => undefined);
    const r = await relay(quiet);
    const clients = Array.from({ length: 1_000 }, () => client(r.port));
    while (splicer.stats().pairs < 1_000) await new Promise((res) => setTimeout(res, 20));
    expect(splicer.stats().pipes).toBeLessThanOrEqual(4);
    splicer.destroy();
    // Aborted: every client is reset, none sees a normal end.
    const results = await Promise.all(clients.map((c) => c.done));
    expect(results.filter((x) => !/ECONNRESET/.test(x.error?.message ?? ''))).toEqual([]);
    const ends = await r.ended(1_000);
    expect(new Set(ends.map((e) => e.reason))).toEqual(new Set(['ECANCELED']));
  });

  it('refuses a descriptor that is not a stream socket, and leaves the pair to streams', async () => {
    const fd = openSync('/dev/null', 'r');
    try {
      expect(() => splicer.add(fd, fd, 1000, undefined, undefined, () => undefined)).toThrow(/stream sockets|ENOTSOCK/);
    } finally {
      closeSync(fd);
    }
    splicer.destroy();
    // A closed splicer: splice() falls back to streams, and the bytes still cross.
    const echo = await server((c) => c.pipe(c));
    const r = await relay(echo);
    const { socket, done } = client(r.port);
    socket.end('still works');
    expect((await done).data.toString()).toBe('still works');
    expect(r.pairs[0]!.mode).toBe('stream');
  });
});
