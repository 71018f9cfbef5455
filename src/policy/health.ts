// What the proxy believes about each gateway's health, from two kinds of evidence: active checks (a probe of
// the gateway's /healthz) and passive ones (connections that failed or succeeded). Outlier ejection as Envoy
// does it: consecutive failures eject a gateway for a time that grows with each ejection; a success or a
// passing active check brings it back. Pure: the caller reports outcomes and passes the time.
import type { ClusterKey } from '../api/flomesh.js';

export interface HealthOptions {
  /** Consecutive connect failures that eject a gateway. */
  failuresToEject: number;
  /** First ejection; each further one doubles it, up to maxEjectMs. */
  baseEjectMs: number;
  maxEjectMs: number;
}

export const defaultHealth: HealthOptions = { failuresToEject: 3, baseEjectMs: 5_000, maxEjectMs: 60_000 };

interface State {
  failures: number;
  ejections: number;
  ejectedUntil: number;
  /** Last active check said it is down. */
  checkFailed: boolean;
}

export interface HealthView {
  clusterKey: ClusterKey;
  healthy: boolean;
  reason: string;
}

export class HealthBook {
  readonly #states = new Map<ClusterKey, State>();
  constructor(private readonly options: HealthOptions = defaultHealth) {}

  #state(key: ClusterKey): State {
    let s = this.#states.get(key);
    if (!s) this.#states.set(key, (s = { failures: 0, ejections: 0, ejectedUntil: 0, checkFailed: false }));
    return s;
  }

  /** A connection through this gateway worked (any byte came back, or the tunnel was accepted). */
  success(key: ClusterKey): void {
    const s = this.#state(key);
    s.failures = 0;
    s.ejectedUntil = 0;
    s.checkFailed = false;
  }

  /** A connection through this gateway failed before reaching an endpoint (refused, timed out, 503). */
  failure(key: ClusterKey, now: number): void {
    const s = this.#state(key);
    s.failures++;
    if (s.failures >= this.options.failuresToEject && s.ejectedUntil <= now) {
      s.ejectedUntil = now + Math.min(this.options.maxEjectMs, this.options.baseEjectMs * 2 ** s.ejections);
      s.ejections++;
      s.failures = 0;
    }
  }

  /** The result of an active check. A passing check ends an ejection; a failing one marks it down at once. */
  checked(key: ClusterKey, ok: boolean): void {
    const s = this.#state(key);
    s.checkFailed = !ok;
    if (ok) {
      s.ejectedUntil = 0;
      s.failures = 0;
      s.ejections = 0;
    }
  }

  isHealthy(key: ClusterKey, now: number): boolean {
    const s = this.#states.get(key);
    return !s || (!s.checkFailed && s.ejectedUntil <= now);
  }

  view(key: ClusterKey, now: number): HealthView {
    const s = this.#states.get(key);
    if (!s) return { clusterKey: key, healthy: true, reason: 'no failures seen' };
    if (s.checkFailed) return { clusterKey: key, healthy: false, reason: 'active check failed' };
    if (s.ejectedUntil > now) return { clusterKey: key, healthy: false, reason: `ejected for ${Math.ceil((s.ejectedUntil - now) / 1000)}s after failed connections` };
    return { clusterKey: key, healthy: true, reason: s.failures ? `${s.failures} recent failure(s)` : 'ok' };
  }

  forget(key: ClusterKey): void {
    this.#states.delete(key);
  }
}
