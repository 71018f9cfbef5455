// Which cluster serves a connection: the GlobalTrafficPolicy of the service, what exports it, and which
// gateways are healthy, turned into an ordered list of candidates. The proxy tries them in order until one
// answers; an empty list means the connection is refused at once (the seed's "Not found" step).
// Pure: no I/O, randomness and health are passed in.
import type { ClusterKey, GlobalTrafficPolicySpec } from '../api/flomesh.js';

export interface Gateway {
  host: string;
  port: number;
}

/** One exporting cluster of the service, from its ServiceImport. */
export interface Exporter {
  clusterKey: ClusterKey;
  gateway: Gateway;
}

export interface PlanInput {
  /** The cluster this proxy runs in. */
  localCluster: ClusterKey;
  /** The service has ready endpoints in this cluster. */
  localEndpoints: boolean;
  exporters: Exporter[];
  /** The GlobalTrafficPolicy of the service (same namespace and name), if any. */
  policy: GlobalTrafficPolicySpec | undefined;
}

export type Candidate = { kind: 'local' } | { kind: 'remote'; clusterKey: ClusterKey; gateway: Gateway };

/**
 * Whether a cluster may be tried now for the service being planned (see HealthBook, kept per (cluster, service):
 * callers close over the service). When no candidate is healthy, all are tried (healthyFirst).
 */
export type IsHealthy = (clusterKey: ClusterKey) => boolean;

export const DEFAULT_WEIGHT = 100;

interface Weighted {
  candidate: Candidate;
  weight: number;
  healthy: boolean;
}

/**
 * Healthy candidates first, in the policy's order. If none is healthy, all of them, in the same order: health
 * is a guess, and trying a gateway thought down beats refusing the client (Envoy calls this panic mode).
 */
function healthyFirst(list: Weighted[]): Weighted[] {
  const healthy = list.filter((w) => w.healthy);
  return healthy.length ? healthy : list;
}

/** Weighted random order without replacement: the first is drawn by weight, then the next among the rest … */
function weightedOrder(list: Weighted[], random: () => number): Candidate[] {
  const pool = [...list];
  const out: Candidate[] = [];
  while (pool.length) {
    const total = pool.reduce((a, w) => a + w.weight, 0);
    let r = random() * total;
    let i = 0;
    while (i < pool.length - 1 && r >= pool[i]!.weight) r -= pool[i++]!.weight;
    out.push(pool[i]!.candidate);
    pool.splice(i, 1);
  }
  return out;
}

/**
 * What the policy makes of the input before any draw: candidates weighted for a draw (ActiveActive), or already
 * in their order (Locality, FailOver).
 */
type Shape = { weighted: Weighted[] } | { ordered: Candidate[] };

function shape(input: PlanInput, isHealthy: IsHealthy): Shape {
  const lbType = input.policy?.lbType ?? 'Locality';
  const targets = Array.isArray(input.policy?.targets) ? input.policy.targets : [];
  const exporter = new Map(input.exporters.map((e) => [e.clusterKey, e]));
  const local: Weighted = { candidate: { kind: 'local' }, weight: DEFAULT_WEIGHT, healthy: true };
  const remote = (key: ClusterKey, weight = DEFAULT_WEIGHT): Weighted | undefined => {
    const e = exporter.get(key);
    return e && key !== input.localCluster ? { candidate: { kind: 'remote', clusterKey: key, gateway: e.gateway }, weight, healthy: isHealthy(key) } : undefined;
  };

  switch (lbType) {
    case 'Locality': {
      // One target: that cluster only. None: this cluster only.
      const only = targets[0]?.clusterKey;
      if (only === undefined || only === input.localCluster) return { ordered: input.localEndpoints ? [local.candidate] : [] };
      const r = remote(only);
      return { ordered: r ? [r.candidate] : [] };
    }
    case 'ActiveActive': {
      const keys: { clusterKey: ClusterKey; weight?: number }[] = targets.length ? targets : input.exporters.map((e) => ({ clusterKey: e.clusterKey }));
      const pool: Weighted[] = [];
      for (const t of keys) {
        if (t.clusterKey === input.localCluster) continue;
        const r = remote(t.clusterKey, t.weight ?? DEFAULT_WEIGHT);
        if (r) pool.push(r);
      }
      if (input.localEndpoints) {
        const own = targets.find((t) => t.clusterKey === input.localCluster);
        pool.push({ ...local, weight: own?.weight ?? DEFAULT_WEIGHT });
      }
      return { weighted: healthyFirst(pool).filter((w) => w.weight > 0) };
    }
    case 'FailOver': {
      const ordered: Weighted[] = [];
      if (input.localEndpoints) ordered.push(local);
      for (const t of targets) {
        const r = remote(t.clusterKey);
        if (r) ordered.push(r);
      }
      return { ordered: healthyFirst(ordered).map((w) => w.candidate) };
    }
    default:
      // An lbType the schema does not know (a source that does not validate): refuse rather than guess.
      return { ordered: [] };
  }
}

/** The candidates, in the order to try them. */
export function plan(input: PlanInput, isHealthy: IsHealthy, random: () => number = Math.random): Candidate[] {
  const s = shape(input, isHealthy);
  return 'weighted' in s ? weightedOrder(s.weighted, random) : s.ordered;
}

/**
 * The first candidate plan() would give, as a distribution: each possible first candidate with its weight (the
 * node proxy's native front draws from it; what follows a failed first is plan()'s again).
 */
export function firstChoices(input: PlanInput, isHealthy: IsHealthy): { candidate: Candidate; weight: number }[] {
  const s = shape(input, isHealthy);
  if ('weighted' in s) return s.weighted.map((w) => ({ candidate: w.candidate, weight: w.weight }));
  return s.ordered.length ? [{ candidate: s.ordered[0]!, weight: 1 }] : [];
}

/**
 * Whether connections to this service need the node proxy: the policy may send one to another cluster (any
 * gateway healthy or not), or it refuses connections that kube-proxy would hand to local endpoints (a
 * Locality target that does not export the service, every weight 0). Otherwise — the policy answers exactly
 * "here" (no policy or Locality, with local endpoints), or nothing and there is nothing here either — the node
 * leaves the ClusterIP to kube-proxy: an exporting cluster's own callers never depend on ecnet while its policy
 * keeps them at home.
 */
export function needsNodeProxy(input: PlanInput): boolean {
  // Every weight drawn and every gateway healthy: the union of what any connection could try.
  const all = plan(input, () => true, () => 0);
  if (all.some((c) => c.kind === 'remote')) return true;
  return !all.length && input.localEndpoints;
}
