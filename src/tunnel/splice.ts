// Bytes both ways between two sockets, as the proxy and the gateway both need. Two ways to do it:
// - in the kernel (KernelSplicer: splice(2) on a thread of the addon), for plain TCP pairs: no copy into
//   Node and no JavaScript per chunk, which is what bulk throughput through two hops needs;
// - sealed, for TLS tunnels whose ends agreed to records (records.ts): the same thread seals and opens them
//   (AES-128-GCM with keys exported from the TLS session), so those bytes do not pass through Node either;
// - as streams (pipe), for other TLS tunnels (the bytes pass through Node's TLS) or when no splicer is given:
//   pipe gives backpressure and passes a half-close on (both sockets allow half-open).
// Either way an error or `idleMs` without a byte closes both, and `onClose` runs once.
import { constants } from 'node:os';
import type { Server, Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { KernelSplicer, type PairTag, SpliceError, type SpliceEnd, type SplicedPair } from '../native/kernel-splice.js';
import type { NativeDetachedPair, NativePairState } from '../native/addon.js';
import { setLingerZero, socketError } from '../native/libc.js';
import { descriptorOf, tcpSocketOf } from '../native/sockets.js';
import type { Logger } from '../logger.js';
import { type RecordSeal, sealedTunnels } from './records.js';

/** A pair being spliced. */
export interface Spliced {
  /** 'kernel' or 'stream': how the bytes move. */
  readonly mode: 'kernel' | 'stream';
  /** Cuts both sockets now; onClose still runs (once). */
  destroy(): void;
}

/**
 * Splices `a` and `b`, in the kernel when `kernel` is given and both are plain TCP sockets. With `seal`, `b` is a
 * TLS tunnel whose peer now expects records: only the kernel splicer can carry it, and a pair it cannot take
 * is cut (reset both) rather than passed to streams the peer would not understand. `tagged`: the kernel splicer
 * counts the pair's bytes into that tag (streams count nowhere).
 */
export function splice(a: Socket, b: Socket, idleMs: number, onClose: (end?: SpliceEnd) => void, kernel?: KernelSplicer, log?: Logger, seal?: RecordSeal, tagged?: PairTag): Spliced {
  const inKernel = kernel && spliceInKernel(a, b, idleMs, onClose, kernel, log, seal, tagged);
  if (inKernel) return inKernel;
  if (!seal) return spliceStreams(a, b, idleMs, onClose);
  log?.warn('a sealed tunnel could not be handed to the splicer: cut');
  resetSocket(a);
  resetSocket(b);
  queueMicrotask(() => onClose({ errno: constants.errno.ECANCELED, reason: 'ECANCELED', aToB: 0, bToA: 0 }));
  return { mode: 'kernel', destroy: () => undefined };
}

function spliceStreams(a: Socket, b: Socket, idleMs: number, onClose: () => void): Spliced {
  let done = false;
  const end = (cut: boolean) => {
    if (done) return;
    done = true;
    // A pair that ends other than by both directions finishing (an error, a reset, the idle limit, destroy)
    // is reset on both sides: a cut stream must never end like a complete one.
    for (const s of [a, b]) {
      if (cut && !s.destroyed) resetSocket(s);
      else s.destroy();
    }
    onClose();
  };
  let closed = 0;
  for (const s of [a, b]) {
    // Before pipe() passes the end on as a FIN: an "end" that was a reset (libuv reports one arriving after a
    // partial read as end of stream) cuts the pair instead.
    s.prependListener('end', () => {
      if (wasReset(s)) end(true);
    });
    s.setNoDelay(true);
    s.setTimeout(idleMs, () => end(true));
    s.on('error', () => end(true));
    // A socket closes cleanly once both its directions are done; the other may still be writing what it
    // was given, so the pair ends cleanly only when both have.
    s.on('close', (hadError: boolean) => (hadError ? end(true) : ++closed === 2 && end(false)));
  }
  a.pipe(b);
  b.pipe(a);
  a.resume();
  return { mode: 'stream', destroy: () => end(true) };
}

/**
 * Closes a socket with a reset. A TLS socket has no resetAndDestroy (it throws): its TCP descriptor gets
 * SO_LINGER 0 and is then destroyed, which resets just the same. Never throws.
 */
export function resetSocket(s: Socket): void {
  try {
    if (!(s instanceof TLSSocket)) return void s.resetAndDestroy();
    const fd = handleOf(s)?.fd;
    if (typeof fd === 'number' && fd >= 0) setLingerZero(fd);
  } catch {
    // not a socket we can reset any more: a close is what is left
  }
  s.destroy();
}

/** Whether the socket's end of stream was really a reset (its pending error says so). */
function wasReset(s: Socket): boolean {
  const fd = descriptorOf(s) ?? descriptorOf(tcpSocketOf(s));
  if (fd === undefined) return false;
  try {
    const err = socketError(fd);
    return err !== 0;
  } catch {
    return false;
  }
}

interface StreamHandle {
  fd?: number;
  reading?: boolean;
  readStop?: () => number;
  readStart?: () => number;
}
const handleOf = (s: Socket) => (s as unknown as { _handle?: StreamHandle | null })._handle ?? undefined;

/**
 * Stops libuv reading the socket (pause() alone does not stop the handle when nothing is buffered). On a TLS
 * socket this stops the TLS layer reading its TCP socket too.
 */
export function stopReading(s: Socket): void {
  s.pause();
  const h = handleOf(s);
  if (h?.reading && h.readStop) {
    h.reading = false;
    h.readStop();
  }
}

/** What Node has read from `s` and not handed to anyone yet. */
function takeBuffered(s: Socket): Buffer | undefined {
  const chunks: Buffer[] = [];
  for (let c: Buffer | null; (c = s.read() as Buffer | null) !== null; ) chunks.push(c);
  return chunks.length ? Buffer.concat(chunks) : undefined;
}

/**
 * Hands both sockets' descriptors to the splicer and closes Node's handles, all in this one tick (so libuv
 * cannot read a byte in between). Undefined when a socket is not a plain TCP socket in a clean state: TLS
 * (unless it is `b` with `seal`: its TCP descriptor carries records from now on), already at its end, or with
 * writes still queued in Node; those stay streams.
 */
function spliceInKernel(a: Socket, b: Socket, idleMs: number, onClose: (end?: SpliceEnd) => void, kernel: KernelSplicer, log: Logger | undefined, seal: RecordSeal | undefined, tagged: PairTag | undefined): Spliced | undefined {
  const endedOf = (s: Socket) => Boolean((s as unknown as { _readableState?: { ended?: boolean } })._readableState?.ended);
  const fds = [a, b].map((s) => {
    const fd = handleOf(s)?.fd;
    const tls = s instanceof TLSSocket && !(seal && s === b);
    // A sealed pair may start with `a` already at its end (a backend that answered and closed before the
    // hand-over): the splicer seals what Node read, then the end record.
    const ended = endedOf(s) && !(seal && s === a);
    // (A writable side already ended would lose its FIN: destroy() cancels a shutdown libuv has not sent.)
    return tls || s.destroyed || ended || s.writableEnded || s.writableLength > 0 || typeof fd !== 'number' || fd < 0 ? undefined : fd;
  });
  if (fds[0] === undefined || fds[1] === undefined) return undefined;
  stopReading(a);
  stopReading(b);
  const fromA = takeBuffered(a);
  const fromB = takeBuffered(b);
  // read() restarts the handle when the buffer runs low; stop it again before anything can poll.
  stopReading(a);
  stopReading(b);
  let pair: SplicedPair;
  try {
    a.setNoDelay(true);
    b.setNoDelay(true);
    const sealed = seal && { ...seal, aEnded: endedOf(a) };
    pair = kernel.add(fds[0], fds[1], idleMs, fromA, fromB, onClose, sealed, tagged); // it reports each pair's end once
  } catch (err) {
    // No splicer (closed, out of descriptors): the bytes taken go back, and the pair stays streams.
    log?.debug({ err }, 'kernel splice refused: the pair stays streams');
    for (const [s, taken] of [[a, fromA], [b, fromB]] as const) {
      if (taken) s.unshift(taken);
      // The stream thinks a read is under way (read() started one): let the handle deliver it.
      const h = handleOf(s);
      if (h && !h.reading && h.readStart) {
        h.reading = true;
        h.readStart();
      }
    }
    return undefined;
  }
  for (const s of [a, b]) {
    s.removeAllListeners();
    s.on('error', () => undefined);
    s.destroy();
  }
  return { mode: 'kernel', destroy: () => pair.abort() };
}

/** A kernel splicer, or undefined (streams then) when the addon cannot give one; says so in the log. */
function openSplicer(log: Logger): KernelSplicer | undefined {
  try {
    return KernelSplicer.open();
  } catch (err) {
    log.warn({ err }, 'kernel splicing unavailable: tunnels move their bytes as streams');
    return undefined;
  }
}

/**
 * The established tunnels of one proxy or gateway: the pairs being spliced, counted into `counts` (the
 * component's stats), and the kernel splicer they use, which this set owns.
 */
export class Tunnels {
  readonly #pairs = new Set<Spliced>();
  readonly #splicer: KernelSplicer | undefined;
  readonly #idleMs: number;
  readonly #log: Logger;
  readonly #counts: { active: number; kernelSpliced: number; sealed: number };

  constructor(o: { kernelSplice: boolean; idleMs: number; log: Logger; counts: { active: number; kernelSpliced: number; sealed: number } }) {
    this.#splicer = o.kernelSplice ? openSplicer(o.log) : undefined;
    this.#idleMs = o.idleMs;
    this.#log = o.log;
    this.#counts = o.counts;
  }

  /**
   * Splices a and b until both are done; then `onEnd` (e.g. a connection limit's release). A tunnel `b` that
   * agreed to sealed records (`seal`, or its tunnel client's note in sealedTunnels) is sealed by the splicer.
   * `tagged`: the tag whose counters the pair's bytes go to (kernel splicer only), and whether `a` is the upstream.
   */
  add(a: Socket, b: Socket, onEnd?: () => void, seal: RecordSeal | undefined = sealedTunnels.get(b), tagged?: PairTag): 'kernel' | 'stream' {
    this.#counts.active++;
    const pair = splice(a, b, this.#idleMs, () => {
      this.#counts.active--;
      this.#pairs.delete(pair);
      onEnd?.();
    }, this.#splicer, this.#log, seal, tagged);
    if (pair.mode === 'kernel') this.#counts.kernelSpliced++;
    if (seal) this.#counts.sealed++;
    this.#pairs.add(pair);
    return pair.mode;
  }

  /**
   * A hand-over: every pair in the kernel splicer, detached for another process (streams stay here). Each must
   * then be released (`handedOver`) or restored.
   */
  detach(): NativeDetachedPair[] {
    return this.#splicer?.detach() ?? [];
  }

  /** Detached pairs now held by another process: they end here (their slots are freed). */
  handedOver(ids: number[]): void {
    this.#splicer?.release(ids);
  }

  /** Detached pairs that stay (the hand-over failed): back on the splicer. */
  restore(ids: number[]): void {
    this.#splicer?.restore(ids);
  }

  /**
   * A pair another process detached, parked until start(ids) (then carried on here until it ends) or drop(ids)
   * (the other process keeps it). Returns its id here; throws when there is no splicer or the state is refused.
   * `tagged.tag`: this process's tag for the pair (state.tag is the predecessor's).
   */
  adopt(state: NativePairState, fds: number[], tagged?: PairTag): number {
    if (!this.#splicer) throw new SpliceError('no kernel splicer to adopt a pair', { cause: undefined });
    let pair: Spliced | undefined;
    const native = this.#splicer.adopt(
      state,
      fds,
      () => {
        this.#counts.active--;
        if (pair) this.#pairs.delete(pair);
      },
      true,
      tagged,
    );
    this.#counts.active++;
    this.#counts.kernelSpliced++;
    if (state.dirs[0]?.mode) this.#counts.sealed++;
    pair = { mode: 'kernel', destroy: () => native.abort() };
    this.#pairs.add(pair);
    return native.id;
  }

  /** Adopted pairs to pump from now on (their predecessor has let go). */
  start(ids: number[]): void {
    this.#splicer?.start(ids);
  }

  /** Adopted pairs the predecessor keeps after all. */
  drop(ids: number[]): void {
    this.#splicer?.drop(ids);
  }

  /** The kernel splicer, for the front that sets connections up on its thread (undefined: streams only). */
  get splicer(): KernelSplicer | undefined {
    return this.#splicer;
  }

  /** Whether TLS tunnels may agree to sealed records: only the kernel splicer carries them. */
  get canSeal(): boolean {
    return this.#splicer !== undefined;
  }

  get size(): number {
    return this.#pairs.size;
  }

  /** Resolves once every pair has ended, or after `graceMs` (what a drain waits for before it cuts). */
  async drained(graceMs: number): Promise<void> {
    const deadline = Date.now() + graceMs;
    // The splicer's count includes the pairs the native front set up, which this set never saw.
    const live = () => this.#pairs.size > 0 || (this.#splicer?.stats().pairs ?? 0) > 0;
    while (live() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  }

  /** Cuts every tunnel and stops the splicer. */
  destroy(): void {
    for (const pair of this.#pairs) pair.destroy();
    this.#pairs.clear();
    this.#splicer?.destroy();
  }
}

/** Listens on host:port; resolves once it accepts connections, rejects if it cannot. */
export function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Accepts on a listening socket given as a descriptor (a predecessor's); the server owns it from then on. */
export function listenOn(server: Server, fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** A TCP connection made by `connect`, or the error that stopped it within `ms`. */
export function connectWithin(connect: () => Socket, ms: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect();
    const timer = setTimeout(() => s.destroy(Object.assign(new Error(`no answer within ${ms} ms`), { code: 'ETIMEDOUT' })), ms);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
