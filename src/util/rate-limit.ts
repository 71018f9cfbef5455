// A token bucket for log events that the network can cause (a failed connection, a refused tunnel): a flood of
// them must not flood the logs, and what was left out is said in the next event that is written.
export class EventLimiter {
  #tokens: number;
  #last: number;
  #suppressed = 0;

  /** `perSecond` events on average, bursts of up to `burst`. */
  constructor(
    private readonly perSecond = 10,
    private readonly burst = 20,
    private readonly now: () => number = Date.now,
  ) {
    this.#tokens = burst;
    this.#last = now();
  }

  /** Whether to write this event; when it is, how many were left out since the last one written. */
  take(): { suppressed: number } | undefined {
    const t = this.now();
    this.#tokens = Math.min(this.burst, this.#tokens + ((t - this.#last) / 1000) * this.perSecond);
    this.#last = t;
    if (this.#tokens < 1) {
      this.#suppressed++;
      return undefined;
    }
    this.#tokens--;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    return { suppressed };
  }
}
