// Kernel splicing of socket pairs: the one owner of an addon Splicer (its thread, pipes and socket dups).
// The proxy and the gateway hand each established tunnel to it, so bulk bytes never cross into JavaScript.
import { errnoNames } from './errors.js';
import { type NativeDetachedPair, type NativeFrontEntry, type NativeFrontHanded, type NativeFrontOptions, type NativeFrontStats, type NativePairState, type NativeSplicer, loadNative } from './addon.js';
import { EcnetError } from '../errors.js';
import type { RecordSeal } from '../tunnel/records.js';

/** A splicer that could not be opened or could not take a pair (the addon's BpfError is the cause). */
export class SpliceError extends EcnetError<'ECNET_SPLICE'> {
  constructor(message: string, options: { cause: unknown }) {
    super('ECNET_SPLICE', message, options);
  }
}

/** How a spliced pair ended. */
export interface SpliceEnd {
  /** 0: both directions reached their end; else ETIMEDOUT (idle), ECANCELED (aborted) or the socket's error. */
  errno: number;
  /** Symbolic errno ('' for 0). */
  reason: string;
  /** Bytes moved from the first socket to the second, and back. */
  aToB: number;
  bToA: number;
  /** The pair went on in another process (a hand-over), not ended. */
  handedOver?: boolean;
}

export interface SplicedPair {
  /** Ends the pair now (reported with ECANCELED); harmless once it has ended. */
  abort(): void;
}

export class KernelSplicer {
  readonly #native: NativeSplicer;
  readonly #pending = new Map<number, (end: SpliceEnd) => void>();
  #closed = false;

  private constructor(native: NativeSplicer) {
    this.#native = native;
  }

  /** A splicer with its own thread; throws SpliceError when the addon is not built or the thread cannot start. */
  static open(): KernelSplicer {
    const ends: { to?: KernelSplicer } = {};
    try {
      const native = new (loadNative().Splicer)((id, errno, aToB, bToA) => ends.to?.ended(id, errno, aToB, bToA));
      return (ends.to = new KernelSplicer(native));
    } catch (cause) {
      throw new SpliceError(`kernel splicer unavailable: ${(cause as Error).message}`, { cause });
    }
  }

  /**
   * Moves bytes between two connected TCP sockets, given as descriptors that the caller closes right after
   * (the splicer keeps its own). `pendingAtoB`/`pendingBtoA` are bytes already read from one side, sent first.
   * With `seal`, fdB is a tunnel that carries sealed records (src/tunnel/records.ts): the splicer's thread
   * seals what A sends and opens what B sends; a record that does not authenticate cuts the pair (EBADMSG), and
   * so does a tunnel that ends without its end record (EPROTO). The secrets' buffers are zeroed once the
   * splicer holds its own copy.
   */
  add(fdA: number, fdB: number, idleMs: number, pendingAtoB: Buffer | undefined, pendingBtoA: Buffer | undefined, onEnd: (end: SpliceEnd) => void, seal?: RecordSeal): SplicedPair {
    let id: number;
    try {
      id = this.#native.add(fdA, fdB, Math.floor(Math.max(0, Math.min(idleMs, 0xffffffff))) || 0, pendingAtoB ?? null, pendingBtoA ?? null, seal ?? null);
    } catch (cause) {
      throw new SpliceError(`kernel splicer refused the pair: ${(cause as Error).message}`, { cause });
    }
    // The thread has its own copy of the secrets: none stays in the JavaScript heap longer than needed.
    seal?.send.fill(0);
    seal?.recv.fill(0);
    // Live pairs hold the event loop open, as their sockets did before the hand-over.
    if (this.#pending.size === 0) this.#native.keepAlive(true);
    this.#pending.set(id, onEnd);
    return { abort: () => this.#pending.has(id) && !this.#closed && this.#native.abort(id) };
  }

  /**
   * Takes every pair off the thread for another process (a hand-over): each one's state and descriptors. Each
   * must then be released (handed over: its end is reported as such) or restored (back on this thread).
   */
  detach(): NativeDetachedPair[] {
    if (this.#closed) return [];
    return this.#native.detach();
  }

  /** The detached pairs another process now holds: their descriptors close here, their ends are reported. */
  release(ids: number[]): void {
    this.#native.release(ids);
    for (const id of ids) this.ended(id, 0, 0, 0, true);
  }

  /** Detached pairs that stay: back on this thread. */
  restore(ids: number[]): void {
    this.#native.restore(ids);
  }

  /**
   * A pair detached by another process; `fds` are dup'd (the caller closes its own). Parked: not pumped until
   * start(), or let go by drop() (reported as handed over).
   */
  adopt(state: NativePairState, fds: number[], onEnd: (end: SpliceEnd) => void, parked = false): SplicedPair & { id: number } {
    let id: number;
    try {
      id = this.#native.adopt(state, fds, parked);
    } catch (cause) {
      throw new SpliceError(`kernel splicer refused the adopted pair: ${(cause as Error).message}`, { cause });
    }
    if (this.#pending.size === 0) this.#native.keepAlive(true);
    this.#pending.set(id, onEnd);
    return { id, abort: () => this.#pending.has(id) && !this.#closed && this.#native.abort(id) };
  }

  /** Parked adopted pairs to pump from now on. */
  start(ids: number[]): void {
    this.#native.start(ids);
  }

  /** Parked adopted pairs the other process keeps: let go here. */
  drop(ids: number[]): void {
    this.#native.drop(ids);
    for (const id of ids) this.ended(id, 0, 0, 0, true);
  }

  /**
   * Starts the front (native/src/front.h) on this splicer's thread: it accepts on `options.listeners` (dup'd)
   * from now on, splices what it can set up itself and reports the rest to `report` (which owns their
   * descriptors), with the successes counted per report index. Once per splicer.
   */
  startFront(options: NativeFrontOptions, report: (handed: NativeFrontHanded[], successes: [number, number][]) => void): void {
    try {
      this.#native.frontStart(options, report);
    } catch (cause) {
      throw new SpliceError(`the front could not start: ${(cause as Error).message}`, { cause });
    }
  }

  /** The front's table: `entries` change it, or with `all` replace it. */
  frontRoutes(entries: NativeFrontEntry[], all: boolean): void {
    if (!this.#closed) this.#native.frontRoutes(entries, all);
  }

  /**
   * The front stops accepting (a hand-over), or accepts again; with `close` it stops for good and closes its
   * listening sockets (a drain: new connections are then refused, not queued).
   */
  frontPause(stop: boolean, close = false): void {
    if (!this.#closed) this.#native.frontPause(stop, close);
  }

  /** A connection the front handed over has closed: its slot is free. */
  frontRelease(source: Buffer): void {
    if (!this.#closed) this.#native.frontRelease(source);
  }

  frontStats(): NativeFrontStats {
    return this.#native.frontStats();
  }

  /** Pairs not yet ended, and the pipes the thread holds (in use or pooled). */
  stats(): { pairs: number; pipes: number } {
    return this.#native.stats();
  }

  /** Drains: waits (at most `graceMs`) for the pairs to end by themselves, then destroys. */
  async close(graceMs = Number.POSITIVE_INFINITY): Promise<void> {
    const deadline = Date.now() + graceMs;
    while (this.#pending.size && !this.#closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    this.destroy();
  }

  /** Ends every pair now (each reported with ECANCELED) and stops the thread; idempotent. */
  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
  }

  /** @internal the addon's report of one pair. */
  private ended(id: number, errno: number, aToB: number, bToA: number, handedOver = false): void {
    const onEnd = this.#pending.get(id);
    if (!onEnd) return;
    this.#pending.delete(id);
    if (this.#pending.size === 0 && !this.#closed) this.#native.keepAlive(false);
    onEnd({ errno, reason: errno ? (errnoNames.get(errno) ?? `errno ${errno}`) : '', aToB, bToA, ...(handedOver ? { handedOver } : {}) });
  }
}
