// Kernel splicing of socket pairs: the one owner of an addon Splicer (its thread, pipes and socket dups).
// The proxy and the gateway hand each established tunnel to it, so bulk bytes never cross into JavaScript.
import { errnoNames } from './errors.js';
import { type NativeDetachedPair, type NativeFrontEntry, type NativeFrontOptions, type NativeFrontReport, type NativeFrontStats, type NativePairState, type NativeSplicer, loadNative } from './addon.js';
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

/** Upper bounds (µs) of the front's setup-time histogram buckets (accept to spliced pair); a last one is +Inf. */
export const SETUP_BUCKETS_US: readonly number[] = Object.freeze([500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000]);

/** Numbers per tag in the addon's flat tagStats(): up, down, opened, failed, setupSumUs, the buckets and +Inf, active. */
export const TAG_STATS_STRIDE = 5 + SETUP_BUCKETS_US.length + 1 + 1;

/** What a pair counts into: its tag (a non-negative integer up to 2^20), and whether A is the upstream. */
export interface PairTag {
  tag?: number;
  /** A is the upstream and B the client (bytes B → A count as `up`). */
  swapped?: boolean;
}

/**
 * Cumulative counters per tag, each array indexed by tag (length: the highest tag seen plus one). `up`/`down`:
 * bytes client → upstream and back, of every tagged pair, counted as they move. The front's pairs only:
 * `opened`, `failed` (attempts, each endpoint tried), and the setup time (accept to spliced pair): its sum in µs
 * and per tag the count in each SETUP_BUCKETS_US bucket, then +Inf (not cumulative).
 */
export interface TagStats {
  up: number[];
  down: number[];
  opened: number[];
  failed: number[];
  setupSumUs: number[];
  setupBuckets: number[][];
  /** Tagged pairs alive now (a gauge). */
  active: number[];
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
   * splicer holds its own copy. With `tagged.tag`, the pair's bytes count into that tag's counters (tagStats()).
   */
  add(fdA: number, fdB: number, idleMs: number, pendingAtoB: Buffer | undefined, pendingBtoA: Buffer | undefined, onEnd: (end: SpliceEnd) => void, seal?: RecordSeal, tagged?: PairTag): SplicedPair {
    let id: number;
    try {
      id = this.#native.add(fdA, fdB, Math.floor(Math.max(0, Math.min(idleMs, 0xffffffff))) || 0, pendingAtoB ?? null, pendingBtoA ?? null, seal ?? null, tagged?.tag ?? null, tagged?.swapped ?? false);
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
   * start(), or let go by drop() (reported as handed over). `tagged.tag` is this process's tag for it (state.tag
   * is the detaching process's); `tagged.swapped` defaults to the state's.
   */
  adopt(state: NativePairState, fds: number[], onEnd: (end: SpliceEnd) => void, parked = false, tagged?: PairTag): SplicedPair & { id: number } {
    let id: number;
    try {
      id = this.#native.adopt(state, fds, parked, tagged?.tag ?? null, tagged?.swapped ?? state.swapped ?? false);
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
   * descriptors), with the successes counted per report index and (gateway mode) the endpoints that failed.
   * Its pairs count into the tag of their choice's report index. Once per splicer.
   */
  startFront(options: NativeFrontOptions, report: NativeFrontReport): void {
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

  /** Every tag's counters so far (see TagStats); readable also after destroy(). */
  tagStats(): TagStats {
    const flat = this.#native.tagStats();
    const n = Math.floor(flat.length / TAG_STATS_STRIDE);
    const out: TagStats = { up: new Array<number>(n), down: new Array<number>(n), opened: new Array<number>(n), failed: new Array<number>(n), setupSumUs: new Array<number>(n), setupBuckets: new Array<number[]>(n), active: new Array<number>(n) };
    for (let t = 0, at = 0; t < n; t++, at += TAG_STATS_STRIDE) {
      out.up[t] = flat[at]!;
      out.down[t] = flat[at + 1]!;
      out.opened[t] = flat[at + 2]!;
      out.failed[t] = flat[at + 3]!;
      out.setupSumUs[t] = flat[at + 4]!;
      out.setupBuckets[t] = Array.from(flat.subarray(at + 5, at + TAG_STATS_STRIDE - 1));
      out.active[t] = flat[at + TAG_STATS_STRIDE - 1]!;
    }
    return out;
  }

  /** Zeroes the counters of tags JavaScript freed, before it gives them to something else. */
  tagReset(tags: number[]): void {
    if (tags.length) this.#native.tagReset(tags);
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
