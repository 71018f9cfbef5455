// Kernel splicing (the addon's Splicer through src/tunnel/splice.ts) on real loopback sockets: bytes exact
// both ways, half-close after the last byte, bytes Node had already read sent first, idle limit, resets, and
// idle pairs that hold no pipe. No root needed; the addon must be built.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync } from 'node:fs';
import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KernelSplicer, type PairTag, SETUP_BUCKETS_US, type SpliceEnd } from '../src/native/kernel-splice.js';
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

  describe('per-tag counters', () => {
    /** Polls `ok` until it holds (a generous deadline: the machine may be busy). */
    const until = async (ok: () => boolean, what: string, ms = 20_000) => {
      const deadline = Date.now() + ms;
      while (!ok()) {
        if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
        await new Promise((res) => setTimeout(res, 20));
      }
    };
    /** An upstream that sends `down` bytes at once and then swallows what comes, ending when the client does. */
    const talker = (down: number) =>
      server((c) => {
        c.write(randomBytes(down));
        c.on('data', () => undefined);
        c.on('end', () => c.end());
      });
    /** Splices each client to `upstream` with `tagged`; swapped pairs are added as (upstream, client). */
    const taggedRelay = async (upstream: number, tagged?: PairTag, k: KernelSplicer = splicer) => {
      const ends: SpliceEnd[] = [];
      const s = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (c) => {
        const up = connect({ host: '127.0.0.1', port: upstream, allowHalfOpen: true });
        up.once('connect', () => {
          const [a, b] = tagged?.swapped ? [up, c] : [c, up];
          const pair = splice(a, b, 60_000, (end) => ends.push(end!), k, undefined, undefined, tagged);
          expect(pair.mode).toBe('kernel');
        });
      });
      servers.push(s);
      return { port: await listening(s), ends };
    };
    /** A client that sends `up` bytes, keeps its side open and counts what it receives. */
    const talk = (port: number, up: number) => {
      const c = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
      sockets.push(c);
      c.on('error', () => undefined);
      let got = 0;
      c.on('data', (d: Buffer) => (got += d.length));
      c.write(randomBytes(up));
      return { socket: c, received: () => got };
    };

    it('counts a tagged pair both ways while it runs, exactly', async () => {
      const r = await taggedRelay(await talker(300_000), { tag: 3 });
      const c = talk(r.port, 1_000_000);
      // Read while the pair is still open: the counters are live, not added at its end.
      await until(() => splicer.tagStats().up[3] === 1_000_000 && splicer.tagStats().down[3] === 300_000, 'the bytes counted');
      expect(r.ends).toEqual([]);
      expect(splicer.stats().pairs).toBe(1);
      expect(c.received()).toBe(300_000);
      const t = splicer.tagStats();
      expect(t.up.length).toBe(4); // tags 0..3
      expect([t.up[0], t.down[0], t.opened[3], t.failed[3], t.setupSumUs[3]]).toEqual([0, 0, 0, 0, 0]);
      expect(t.setupBuckets[3]).toEqual(new Array(SETUP_BUCKETS_US.length + 1).fill(0));
      // A gauge of the tag's pairs alive now.
      expect([t.active[3], t.active[0]]).toEqual([1, 0]);
      c.socket.end();
      await until(() => r.ends.length === 1, 'the pair ended');
      expect(r.ends[0]).toMatchObject({ errno: 0, aToB: 1_000_000, bToA: 300_000 });
      expect(splicer.tagStats().up[3]).toBe(1_000_000);
      await until(() => splicer.tagStats().active[3] === 0, 'the pair no longer active');
      // A freed tag's counters are zeroed before it is reused; another tag's are not touched.
      splicer.tagReset([3, 99_999_999, -1]);
      expect([splicer.tagStats().up[3], splicer.tagStats().down[3]]).toEqual([0, 0]);
    });

    it('counts a swapped pair (A the upstream) the right way round', async () => {
      const r = await taggedRelay(await talker(70_000), { tag: 5, swapped: true });
      talk(r.port, 20_000);
      await until(() => splicer.tagStats().up[5] === 20_000 && splicer.tagStats().down[5] === 70_000, 'up and down by the client');
      expect(splicer.stats().pairs).toBe(1);
    });

    it('adds the pairs of one tag up, and counts untagged pairs nowhere', async () => {
      const upstream = await talker(4_000);
      const tagged = await taggedRelay(upstream, { tag: 1 });
      const untagged = await taggedRelay(upstream);
      const none = await taggedRelay(upstream, { tag: -1 });
      talk(tagged.port, 10_000);
      talk(tagged.port, 25_000);
      const u = talk(untagged.port, 50_000);
      const n = talk(none.port, 60_000);
      await until(() => splicer.tagStats().up[1] === 35_000 && splicer.tagStats().down[1] === 8_000, 'both pairs of tag 1');
      await until(() => u.received() === 4_000 && n.received() === 4_000, 'the untagged pairs ran');
      await until(() => splicer.stats().pairs === 4, 'four pairs');
      const t = splicer.tagStats();
      expect(t.up.length).toBe(2);
      expect(t.up.reduce((a, b) => a + b, 0)).toBe(35_000);
      expect(t.down.reduce((a, b) => a + b, 0)).toBe(8_000);
    });

    it('refuses a tag out of bounds', () => {
      expect(() => splicer.add(0, 0, 1000, undefined, undefined, () => undefined, undefined, { tag: (1 << 20) + 1 })).toThrow(/tag must be/);
      expect(() => splicer.add(0, 0, 1000, undefined, undefined, () => undefined, undefined, { tag: 1.5 })).toThrow(/tag must be/);
      expect(splicer.tagStats().up.length).toBe(0);
    });

    it('detach() reports the tag and orientation; the adopting splicer counts into its own tag', async () => {
      const r = await taggedRelay(await talker(5_000), { tag: 2, swapped: true });
      const c = talk(r.port, 7_000);
      await until(() => splicer.tagStats().up[2] === 7_000 && splicer.tagStats().down[2] === 5_000, 'counted before the move');
      const next = KernelSplicer.open();
      try {
        const [p] = splicer.detach();
        expect(p).toMatchObject({ tag: 2, swapped: true });
        const { id: _id, fds, ...state } = p!;
        const adopted = next.adopt(state, fds, () => undefined, true, { tag: 9 });
        splicer.release([p!.id]);
        next.start([adopted.id]);
        c.socket.write(randomBytes(3_000));
        await until(() => next.tagStats().up[9] === 3_000, 'counted after the move, in the new tag');
        // The bytes moved before the hand-over stay the first process's.
        expect(next.tagStats().down[9]).toBe(0);
        expect(splicer.tagStats().up[2]).toBe(7_000);
      } finally {
        next.destroy();
      }
    });
  });
});
