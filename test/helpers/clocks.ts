// Clocks for tests of what runs on a Clock (src/util/time.ts): one that only moves when told, and one on real
// time that counts the timers still pending (after close, none may be).
import type { Clock } from '../../src/util/time.js';

export class ManualClock implements Clock {
  t = 1_700_000_000_000;
  #next = 0;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): { id: number; unref(): void } {
    const id = ++this.#next;
    this.#timers.set(id, { at: this.t + ms, fn });
    return { id, unref: () => undefined };
  }
  clearTimeout(handle: unknown): void {
    if (handle) this.#timers.delete((handle as { id: number }).id);
  }
  /** Moves to `t + ms`, firing due timers in order. */
  step(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.#timers].filter(([, x]) => x.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
    }
    this.t = end;
  }
}

/** Real timers, counted: after close nothing may be left pending. */
export class TrackingClock implements Clock {
  readonly pending = new Set<NodeJS.Timeout>();
  now(): number {
    return Date.now();
  }
  setTimeout(fn: () => void, ms: number): NodeJS.Timeout {
    const h = setTimeout(() => {
      this.pending.delete(h);
      fn();
    }, ms);
    this.pending.add(h);
    return h;
  }
  clearTimeout(h: unknown): void {
    this.pending.delete(h as NodeJS.Timeout);
    clearTimeout(h as NodeJS.Timeout);
  }
}
