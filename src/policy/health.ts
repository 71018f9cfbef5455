// What the proxy believes about each (cluster, service) target, from two kinds of evidence: active checks (the
// gateway's /healthz/services answer, or /healthz for an older gateway) and passive ones (connections that
// failed or succeeded). A cluster whose gateway does not answer has every service down; a service the gateway
// says is not ready (or does not list: it would refuse it) is down at that cluster only; passive failures eject
// one (cluster, service) by outlier detection (outliers.ts: the group is the service, its members the clusters
// it may go to). Pure: the caller reports outcomes and passes the time.
import type { ClusterKey } from '../api/flomesh.js';
import { type OutlierOptions, OutlierDetector, defaultOutliers } from './outliers.js';

/** A service as the proxy routes it: `namespace/name`. */
export type ServiceKey = string;

export interface HealthOptions {
  /** Consecutive connect failures that eject a (cluster, service). */
  failuresToEject: number;
  /** First ejection; each further one doubles it, up to maxEjectMs. */
  baseEjectMs: number;
  maxEjectMs: number;
  /** At most this share of a service's clusters ejected at once (at least one may be). */
  maxEjectionPercent?: number;
  /** The ejection multiplier drops by one per decayMs in (see outliers.ts). */
  decayMs?: number;
}

export const defaultHealth: HealthOptions = { failuresToEject: 3, baseEjectMs: 5_000, maxEjectMs: 60_000, maxEjectionPercent: defaultOutliers.maxEjectionPercent, decayMs: defaultOutliers.decayMs };

export interface HealthView {
  clusterKey: ClusterKey;
  service: ServiceKey;
  healthy: boolean;
  reason: string;
}

export class HealthBook {
  readonly #outliers: OutlierDetector;
  /** Clusters whose gateway failed its last active check (unreachable, or an error status). */
  readonly #unreachable = new Set<ClusterKey>();
  /** Per cluster, the services its gateway said were not ready (or did not list) at the last check. */
  readonly #notReady = new Map<ClusterKey, Map<ServiceKey, string>>();

  constructor(options: HealthOptions = defaultHealth) {
    const o: Partial<OutlierOptions> = { consecutiveFailures: options.failuresToEject, baseEjectMs: options.baseEjectMs, maxEjectMs: options.maxEjectMs };
    if (options.maxEjectionPercent !== undefined) o.maxEjectionPercent = options.maxEjectionPercent;
    if (options.decayMs !== undefined) o.decayMs = options.decayMs;
    this.#outliers = new OutlierDetector(o);
  }

  /** A connection to `service` through this cluster's gateway worked (the tunnel was accepted). */
  success(cluster: ClusterKey, service: ServiceKey, now: number): void {
    this.#outliers.success(service, cluster, now);
  }

  /**
   * A connection to `service` through this cluster's gateway failed before reaching an endpoint (refused,
   * timed out, 503). `targets`: how many clusters the service may go to (the cap on the share ejected).
   */
  failure(cluster: ClusterKey, service: ServiceKey, now: number, targets?: number): void {
    this.#outliers.failure(service, cluster, now, targets);
  }

  /**
   * Whether the cluster's gateway answered its active check. Failing: every service there is down until it
   * answers again. Passing with no word on services (a gateway without /healthz/services): the ejections at
   * that cluster end, as a passing check ended them before (Envoy's successful_active_health_check_uneject_host).
   */
  checked(cluster: ClusterKey, ok: boolean, now = 0): void {
    if (!ok) return void this.#unreachable.add(cluster);
    this.#unreachable.delete(cluster);
    this.#notReady.delete(cluster);
    for (const service of this.#outliers.groups()) this.#outliers.success(service, cluster, now);
  }

  /** The cluster's gateway answered (its word on services comes with serviceChecked): no longer unreachable. */
  reached(cluster: ClusterKey): void {
    this.#unreachable.delete(cluster);
  }

  /**
   * The gateway's word on one service (its /healthz/services answer, the gateway reachable). Ready ends a
   * passive ejection of (cluster, service); not ready marks it down until a check says otherwise.
   */
  serviceChecked(cluster: ClusterKey, service: ServiceKey, ready: boolean, now: number, reason = 'the gateway says it is not ready'): void {
    this.#unreachable.delete(cluster);
    let m = this.#notReady.get(cluster);
    if (ready) {
      m?.delete(service);
      if (m && !m.size) this.#notReady.delete(cluster);
      this.#outliers.success(service, cluster, now);
      return;
    }
    if (!m) this.#notReady.set(cluster, (m = new Map()));
    m.set(service, reason);
  }

  isHealthy(cluster: ClusterKey, service: ServiceKey, now: number): boolean {
    return !this.#unreachable.has(cluster) && !this.#notReady.get(cluster)?.has(service) && !this.#outliers.isEjected(service, cluster, now);
  }

  /** Whether the cluster's gateway answered its last active check (the cluster-level state). */
  isReachable(cluster: ClusterKey): boolean {
    return !this.#unreachable.has(cluster);
  }

  view(cluster: ClusterKey, service: ServiceKey, now: number): HealthView {
    const v = (healthy: boolean, reason: string): HealthView => ({ clusterKey: cluster, service, healthy, reason });
    if (this.#unreachable.has(cluster)) return v(false, 'active check failed');
    const notReady = this.#notReady.get(cluster)?.get(service);
    if (notReady !== undefined) return v(false, notReady);
    const o = this.#outliers.view(service, cluster, now);
    if (o.ejectedForMs > 0) return v(false, `ejected for ${Math.ceil(o.ejectedForMs / 1000)}s after failed connections`);
    if (o.failures) return v(true, `${o.failures} recent failure(s)`);
    return v(true, o.multiplier ? 'ok' : 'no failures seen');
  }

  /** Forgets a cluster (no route goes there any more); with `service`, that (cluster, service) only. */
  forget(cluster: ClusterKey, service?: ServiceKey): void {
    if (service !== undefined) {
      this.#outliers.forget(service, cluster);
      this.#notReady.get(cluster)?.delete(service);
      return;
    }
    this.#unreachable.delete(cluster);
    this.#notReady.delete(cluster);
    for (const s of this.#outliers.groups()) this.#outliers.forget(s, cluster);
  }

  /**
   * Keeps the active checks' word only on what is routed now (`routed`: per cluster, its services): a service or
   * a cluster no route names any more is forgotten, rather than held (and believed again, stale, when it comes
   * back before its next check). Tenants make and remove services: this state must not grow with them.
   */
  retain(routed: ReadonlyMap<ClusterKey, { services: ReadonlySet<ServiceKey> }>): void {
    for (const cluster of this.#unreachable) if (!routed.has(cluster)) this.#unreachable.delete(cluster);
    for (const [cluster, m] of this.#notReady) {
      const services = routed.get(cluster)?.services;
      for (const service of m.keys()) if (!services?.has(service)) m.delete(service);
      if (!m.size) this.#notReady.delete(cluster);
    }
  }

  /** Drops passive state not heard of for `idleMs` (see OutlierDetector.prune). */
  prune(now: number, idleMs: number): void {
    this.#outliers.prune(now, idleMs);
  }
}
