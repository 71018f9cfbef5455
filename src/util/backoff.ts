// Exponential backoff with jitter.

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** 0..1 of the delay drawn at random (spreads restarts of many watchers). */
  jitter: number;
}

export const defaultBackoff: BackoffOptions = { initialMs: 200, maxMs: 30_000, jitter: 0.5 };

export class Backoff {
  #attempt = 0;
  constructor(
    private readonly options: BackoffOptions = defaultBackoff,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; each call doubles the base up to maxMs. */
  next(): number {
    const base = Math.min(this.options.maxMs, this.options.initialMs * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return Math.round(base * (1 - this.options.jitter * this.random()));
  }

  reset(): void {
    this.#attempt = 0;
  }

  get attempts(): number {
    return this.#attempt;
  }
}
