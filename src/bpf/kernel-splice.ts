// Kernel splicing of socket pairs: the one owner of an addon Splicer (its thread, pipes and socket dups).
// The proxy and the gateway hand each established tunnel to it, so bulk bytes never cross into JavaScript.
import { constants } from 'node:os';
import { type NativeSplicer, loadNative } from './native.js';

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, value]) => [value, name]));

/** How a spliced pair ended. */
export interface SpliceEnd {
  /** 0: both directions reached their end; else ETIMEDOUT (idle), ECANCELED (aborted) or the socket's error. */
  errno: number;
  /** Symbolic errno ('' for 0). */
  reason: string;
  /** Bytes moved from the first socket to the second, and back. */
  aToB: number;
  bToA: number;
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

  /** A splicer with its own thread; throws when the addon is not built. */
  static open(): KernelSplicer {
    const ends: { to?: KernelSplicer } = {};
    const native = new (loadNative().Splicer)((id, errno, aToB, bToA) => ends.to?.ended(id, errno, aToB, bToA));
    return (ends.to = new KernelSplicer(native));
  }

  /**
   * Moves bytes between two connected TCP sockets, given as descriptors that the caller closes right after
   * (the splicer keeps its own). `pendingAtoB`/`pendingBtoA` are bytes already read from one side, sent first.
   */
  add(fdA: number, fdB: number, idleMs: number, pendingAtoB: Buffer | undefined, pendingBtoA: Buffer | undefined, onEnd: (end: SpliceEnd) => void): SplicedPair {
    const id = this.#native.add(fdA, fdB, Math.max(0, Math.min(idleMs, 0xffffffff)), pendingAtoB ?? null, pendingBtoA ?? null);
    this.#pending.set(id, onEnd);
    return { abort: () => this.#pending.has(id) && !this.#closed && this.#native.abort(id) };
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
  private ended(id: number, errno: number, aToB: number, bToA: number): void {
    const onEnd = this.#pending.get(id);
    if (!onEnd) return;
    this.#pending.delete(id);
    onEnd({ errno, reason: errno ? (errnoNames.get(errno) ?? `errno ${errno}`) : '', aToB, bToA });
  }
}
