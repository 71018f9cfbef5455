// Single flight: one run at a time, coalesced: triggers within `delayMs` make one run, and triggers during a run make one
// more after it. What the controller's passes and the agent's reconciles both need.
import type { Clock } from './time.js';

export class Coalescer {
  #timer: unknown;
  #running: Promise<void> | undefined;
  #again = false;
  #closed = false;

  constructor(
    private readonly run: () => Promise<void> | void,
    private readonly delayMs: number,
    private readonly clock: Clock,
  ) {}

  trigger(): void {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    if (this.#timer !== undefined) return;
    this.#timer = this.clock.setTimeout(() => {
      this.#timer = undefined;
      this.#running = Promise.resolve()
        .then(() => this.run())
        .finally(() => {
          this.#running = undefined;
          if (this.#again) {
            this.#again = false;
            this.trigger();
          }
        });
    }, this.delayMs);
  }

  /** Runs no more; resolves when a run in progress has ended. */
  async close(): Promise<void> {
    this.#closed = true;
    this.clock.clearTimeout(this.#timer);
    await this.#running?.catch(() => undefined);
  }
}
