// The agent's sweep of ecnet_conn_dst: records no proxy took (the client reset before it was accepted, or no
// proxy ran) are deleted once older than the bound, rather than left until the LRU evicts them. The proxy
// already ignores such a record; the sweep keeps the map to the connections in flight.
import { defaults } from '../defaults.js';
import { type Logger, componentLogger } from '../logger.js';
import { type Clock, systemClock } from '../util/time.js';
import type { SweepResult } from './datapath.js';

export interface SweeperOptions {
  /** One sweep: Datapath.sweepConnections. */
  sweep: () => SweepResult;
  /** Between two sweeps; default defaults.connRecordSweepMs. */
  everyMs?: number;
  clock?: Clock;
  logger?: Logger;
}

export class ConnRecordSweeper {
  readonly #o: SweeperOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  #timer: unknown;
  #closed = false;
  /** Sweeps run, records deleted by them, and the last sweep's error (undefined once one succeeds). */
  readonly stats: { sweeps: number; swept: number; lastError: string | undefined } = { sweeps: 0, swept: 0, lastError: undefined };

  constructor(options: SweeperOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.logger ?? componentLogger('datapath');
  }

  /** Sweeps every `everyMs` from now until close(). */
  start(): void {
    if (this.#closed || this.#timer !== undefined) return;
    this.#schedule();
  }

  #schedule(): void {
    this.#timer = this.#clock.setTimeout(() => {
      this.sweepNow();
      if (!this.#closed) this.#schedule();
    }, this.#o.everyMs ?? defaults.connRecordSweepMs);
    (this.#timer as { unref?: () => void }).unref?.();
  }

  /** One sweep now; a failure is logged and counted, never thrown (the next sweep tries again). */
  sweepNow(): SweepResult | undefined {
    try {
      const r = this.#o.sweep();
      this.stats.sweeps++;
      this.stats.swept += r.swept;
      this.stats.lastError = undefined;
      if (r.swept) this.#log.debug(r, 'stale original destinations swept');
      return r;
    } catch (err) {
      this.stats.lastError = (err as Error).message;
      this.#log.warn({ err }, 'sweeping stale original destinations failed');
      return undefined;
    }
  }

  /** Stops the timer; idempotent. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
