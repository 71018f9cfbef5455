// What `ecnet top` shows, from two scrapes of a /metrics some seconds apart: rates of the counters (a counter
// that went down was reset, a restarted process: its value now is what it counted since), gauges as they are
// now, and setup-time quantiles from the histogram buckets' increase, as Prometheus' histogram_quantile would
// estimate them. Pure: parsed scrapes in, rows out (src/cli/top.ts scrapes and prints).
import type { Family, Sample } from '../metrics/parse.js';

export type Scrape = Map<string, Family>;

/** One service (agent: and target cluster) over the interval. */
export interface TopRow {
  /** namespace/name; `_other/_other` for the services past the metrics' label cap. */
  service: string;
  /** The target cluster's key (agent); undefined for a gateway's rows. */
  target?: string;
  /** The target is this node's own cluster (its local endpoints), when known. */
  local?: boolean;
  /** Connections (gateway: tunnels) established per second. */
  connPerS: number;
  /** Agent: failed attempts to reach the target per second; gateway: CONNECTs refused per second. */
  failPerS: number;
  /** The most frequent reason among those failures, if any. */
  failReason?: string;
  active: number;
  sentBytesPerS: number;
  receivedBytesPerS: number;
  /** Agent: ecnet_proxy_target_healthy (undefined: not reported); gateway: ecnet_gateway_service_ready. */
  healthy?: boolean;
  /** Gateway: ready endpoints by state. */
  endpoints?: { serving: number; ejected: number };
}

/** Setup time per target cluster (the agent's histogram has no service label); gateway: one, cluster undefined. */
export interface SetupRow {
  cluster?: string;
  local?: boolean;
  perS: number;
  /** Seconds; undefined when nothing was set up in the interval. */
  p50?: number;
  p99?: number;
  /** ecnet_proxy_gateway_up (agent, remote clusters). */
  gatewayUp?: boolean;
}

export interface TopView {
  kind: 'agent' | 'gateway';
  seconds: number;
  localCluster?: string;
  totals: {
    /** Agent: connections the node proxy accepted per second. */
    acceptedPerS?: number;
    /** Agent: connections reset before any upstream; gateway: refusals (every service and none). Per second. */
    rejectedPerS: number;
    rejectedByReason: Record<string, number>;
    /** Gateway: connections reset at a connection limit, per second. */
    limitedPerS?: number;
    catalogSynced?: boolean;
    catalogServices?: number;
  };
  rows: TopRow[];
  setup: SetupRow[];
}

const labelKey = (labels: Record<string, string>, names: readonly string[]): string => names.map((n) => labels[n] ?? '').join('\u0000');
const seriesKey = (labels: Record<string, string>): string => JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));

/** Every sample named `name`, wherever the reader filed it (a counter's family may or may not carry `_total`). */
function samples(s: Scrape, name: string): Sample[] {
  const out: Sample[] = [];
  for (const f of s.values()) for (const x of f.samples) if (x.name === name) out.push(x);
  return out;
}

/** Each series of counter `name` with its increase from `before` to `after`, never negative. */
export function increases(before: Scrape, after: Scrape, name: string): { labels: Record<string, string>; increase: number }[] {
  const was = new Map(samples(before, name).map((x) => [seriesKey(x.labels), x.value]));
  return samples(after, name).map((x) => {
    const prev = was.get(seriesKey(x.labels)) ?? 0;
    // Lower than before: the process started again (a hand-over, a crash); it counted `x.value` since.
    return { labels: x.labels, increase: x.value >= prev ? x.value - prev : x.value };
  });
}

/** `name`'s increase summed by the labels `by` (joined with \0), per second. */
function ratesBy(before: Scrape, after: Scrape, name: string, by: readonly string[], seconds: number, where: (l: Record<string, string>) => boolean = () => true): Map<string, number> {
  const out = new Map<string, number>();
  for (const { labels, increase } of increases(before, after, name)) {
    if (!where(labels)) continue;
    const k = labelKey(labels, by);
    out.set(k, (out.get(k) ?? 0) + increase / seconds);
  }
  return out;
}

function gaugesBy(s: Scrape, name: string, by: readonly string[], where: (l: Record<string, string>) => boolean = () => true): Map<string, number> {
  const out = new Map<string, number>();
  for (const x of samples(s, name)) {
    if (!where(x.labels)) continue;
    const k = labelKey(x.labels, by);
    out.set(k, (out.get(k) ?? 0) + x.value);
  }
  return out;
}

/**
 * The q-quantile of cumulative buckets ({le, count}, +Inf last), interpolated linearly inside the bucket the
 * rank falls in, as Prometheus' histogram_quantile; in the +Inf bucket: the highest finite bound.
 */
export function bucketQuantile(q: number, buckets: readonly { le: number; count: number }[]): number | undefined {
  const b = [...buckets].sort((x, y) => x.le - y.le);
  const total = b[b.length - 1]?.count ?? 0;
  if (!b.length || total <= 0 || b[b.length - 1]!.le !== Infinity) return undefined;
  const rank = q * total;
  const i = b.findIndex((x) => x.count >= rank);
  if (b[i]!.le === Infinity) return b.length > 1 ? b[b.length - 2]!.le : undefined;
  const lower = i === 0 ? 0 : b[i - 1]!.le;
  const below = i === 0 ? 0 : b[i - 1]!.count;
  const inBucket = b[i]!.count - below;
  return inBucket > 0 ? lower + ((b[i]!.le - lower) * (rank - below)) / inBucket : b[i]!.le;
}

/** Histogram `name`'s buckets' increase per value of label `by` (a reset: the buckets now, whole). */
function histogramIncrease(before: Scrape, after: Scrape, name: string, by: string | undefined): Map<string, { le: number; count: number }[]> {
  const countBefore = gaugesBy(before, `${name}_count`, by ? [by] : []);
  const countAfter = gaugesBy(after, `${name}_count`, by ? [by] : []);
  const was = new Map(samples(before, `${name}_bucket`).map((x) => [seriesKey(x.labels), x.value]));
  const out = new Map<string, { le: number; count: number }[]>();
  for (const x of samples(after, `${name}_bucket`)) {
    const k = by ? (x.labels[by] ?? '') : '';
    const reset = (countAfter.get(k) ?? 0) < (countBefore.get(k) ?? 0);
    const prev = reset ? 0 : (was.get(seriesKey(x.labels)) ?? 0);
    const le = x.labels.le === '+Inf' ? Infinity : Number(x.labels.le);
    if (Number.isNaN(le)) continue;
    let list = out.get(k);
    if (!list) out.set(k, (list = []));
    list.push({ le, count: Math.max(0, x.value - prev) });
  }
  // Cumulative counts stay non-decreasing whatever the rounding of the scrapes.
  for (const list of out.values()) {
    list.sort((a, b) => a.le - b.le);
    for (let i = 1; i < list.length; i++) list[i]!.count = Math.max(list[i]!.count, list[i - 1]!.count);
  }
  return out;
}

/** The reason with the highest rate in `byReason` (keys `prefix\0reason`) for `prefix`. */
function topReason(byReason: Map<string, number>, prefix: string): string | undefined {
  let best: [string, number] | undefined;
  for (const [k, v] of byReason) {
    if (!k.startsWith(`${prefix}\u0000`) || v <= 0) continue;
    const reason = k.slice(prefix.length + 1);
    if (!best || v > best[1]) best = [reason, v];
  }
  return best?.[0];
}

/** Rates keyed by reason (the last label of the key), the zero ones left out. */
function perReason(m: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of m) {
    const reason = k.slice(k.lastIndexOf('\u0000') + 1);
    if (v > 0) out[reason] = (out[reason] ?? 0) + v;
  }
  return out;
}

/** Whose scrape this is: ecnet_build_info's component, else which families it has. */
export function scrapeKind(s: Scrape): 'agent' | 'gateway' | undefined {
  const component = samples(s, 'ecnet_build_info')[0]?.labels.component;
  if (component === 'agent' || component === 'gateway') return component;
  const names = [...s.keys()];
  if (names.some((n) => n.startsWith('ecnet_proxy_'))) return 'agent';
  if (names.some((n) => n.startsWith('ecnet_gateway_'))) return 'gateway';
  return undefined;
}

const byRateThenName = (a: TopRow, b: TopRow): number => b.connPerS - a.connPerS || b.active - a.active || a.service.localeCompare(b.service) || (a.target ?? '').localeCompare(b.target ?? '');

/**
 * The view of the interval between two scrapes `seconds` apart. `localCluster`: this node's cluster key, to
 * mark its rows (its local endpoints); unknown: the keys alone.
 */
export function topView(before: Scrape, after: Scrape, seconds: number, o: { localCluster?: string; kind?: 'agent' | 'gateway' } = {}): TopView {
  if (!(seconds > 0)) throw new RangeError(`seconds must be positive, got ${seconds}`);
  const kind = o.kind ?? scrapeKind(after) ?? 'agent';
  return kind === 'gateway' ? gatewayView(before, after, seconds) : agentView(before, after, seconds, o.localCluster);
}

function agentView(before: Scrape, after: Scrape, seconds: number, localCluster: string | undefined): TopView {
  const SC = ['namespace', 'service', 'cluster'] as const;
  const named = (l: Record<string, string>) => Boolean(l.namespace || l.service);
  const opened = ratesBy(before, after, 'ecnet_proxy_connections_opened_total', SC, seconds);
  const failed = ratesBy(before, after, 'ecnet_proxy_connection_attempts_failed_total', SC, seconds);
  const failedByReason = ratesBy(before, after, 'ecnet_proxy_connection_attempts_failed_total', [...SC, 'reason'], seconds);
  const sent = ratesBy(before, after, 'ecnet_proxy_bytes_total', SC, seconds, (l) => l.direction === 'sent');
  const received = ratesBy(before, after, 'ecnet_proxy_bytes_total', SC, seconds, (l) => l.direction === 'received');
  const active = gaugesBy(after, 'ecnet_proxy_connections_active', SC);
  const healthy = gaugesBy(after, 'ecnet_proxy_target_healthy', SC);
  const keys = new Set<string>();
  for (const name of ['ecnet_proxy_connections_opened_total', 'ecnet_proxy_connection_attempts_failed_total', 'ecnet_proxy_bytes_total', 'ecnet_proxy_connections_active', 'ecnet_proxy_target_healthy']) {
    for (const x of samples(after, name)) if (named(x.labels)) keys.add(labelKey(x.labels, SC));
  }
  const rows: TopRow[] = [...keys].map((k) => {
    const [namespace, service, cluster] = k.split('\u0000') as [string, string, string];
    const h = healthy.get(k);
    const reason = topReason(failedByReason, k);
    return {
      service: `${namespace}/${service}`,
      target: cluster,
      ...(localCluster !== undefined ? { local: cluster === localCluster } : {}),
      connPerS: opened.get(k) ?? 0,
      failPerS: failed.get(k) ?? 0,
      ...(reason ? { failReason: reason } : {}),
      active: active.get(k) ?? 0,
      sentBytesPerS: sent.get(k) ?? 0,
      receivedBytesPerS: received.get(k) ?? 0,
      ...(h !== undefined ? { healthy: h > 0 } : {}),
    };
  });
  rows.sort(byRateThenName);

  const setupHist = histogramIncrease(before, after, 'ecnet_proxy_connection_setup_seconds', 'cluster');
  const gatewayUp = gaugesBy(after, 'ecnet_proxy_gateway_up', ['cluster']);
  const clusters = new Set([...setupHist.keys(), ...gatewayUp.keys(), ...rows.map((r) => r.target!)]);
  const setup: SetupRow[] = [...clusters].sort().map((cluster) => {
    const b = setupHist.get(cluster) ?? [];
    const total = b[b.length - 1]?.count ?? 0;
    const up = gatewayUp.get(cluster);
    const p50 = bucketQuantile(0.5, b);
    const p99 = bucketQuantile(0.99, b);
    return {
      cluster,
      ...(localCluster !== undefined ? { local: cluster === localCluster } : {}),
      perS: total / seconds,
      ...(p50 !== undefined ? { p50 } : {}),
      ...(p99 !== undefined ? { p99 } : {}),
      ...(up !== undefined ? { gatewayUp: up > 0 } : {}),
    };
  });

  const rejected = ratesBy(before, after, 'ecnet_proxy_connections_rejected_total', ['reason'], seconds);
  return {
    kind: 'agent',
    seconds,
    ...(localCluster !== undefined ? { localCluster } : {}),
    totals: {
      acceptedPerS: sumRates(ratesBy(before, after, 'ecnet_proxy_connections_accepted_total', [], seconds)),
      rejectedPerS: sumRates(rejected),
      rejectedByReason: perReason(rejected),
    },
    rows,
    setup,
  };
}

function gatewayView(before: Scrape, after: Scrape, seconds: number): TopView {
  const S = ['namespace', 'service'] as const;
  const named = (l: Record<string, string>) => Boolean(l.namespace || l.service);
  const opened = ratesBy(before, after, 'ecnet_gateway_tunnels_opened_total', S, seconds);
  const refused = ratesBy(before, after, 'ecnet_gateway_tunnels_refused_total', S, seconds, named);
  const refusedByReason = ratesBy(before, after, 'ecnet_gateway_tunnels_refused_total', [...S, 'reason'], seconds);
  const sent = ratesBy(before, after, 'ecnet_gateway_bytes_total', S, seconds, (l) => l.direction === 'sent');
  const received = ratesBy(before, after, 'ecnet_gateway_bytes_total', S, seconds, (l) => l.direction === 'received');
  const active = gaugesBy(after, 'ecnet_gateway_tunnels_active', S);
  const ready = gaugesBy(after, 'ecnet_gateway_service_ready', S);
  const serving = gaugesBy(after, 'ecnet_gateway_endpoints', S, (l) => l.state === 'serving');
  const ejected = gaugesBy(after, 'ecnet_gateway_endpoints', S, (l) => l.state === 'ejected');
  const keys = new Set<string>();
  for (const name of ['ecnet_gateway_tunnels_opened_total', 'ecnet_gateway_tunnels_refused_total', 'ecnet_gateway_bytes_total', 'ecnet_gateway_tunnels_active', 'ecnet_gateway_service_ready', 'ecnet_gateway_endpoints']) {
    for (const x of samples(after, name)) if (named(x.labels)) keys.add(labelKey(x.labels, S));
  }
  const rows: TopRow[] = [...keys].map((k) => {
    const [namespace, service] = k.split('\u0000') as [string, string];
    const r = ready.get(k);
    const reason = topReason(refusedByReason, k);
    return {
      service: `${namespace}/${service}`,
      connPerS: opened.get(k) ?? 0,
      failPerS: refused.get(k) ?? 0,
      ...(reason ? { failReason: reason } : {}),
      active: active.get(k) ?? 0,
      sentBytesPerS: sent.get(k) ?? 0,
      receivedBytesPerS: received.get(k) ?? 0,
      ...(r !== undefined ? { healthy: r > 0 } : {}),
      ...(serving.has(k) || ejected.has(k) ? { endpoints: { serving: serving.get(k) ?? 0, ejected: ejected.get(k) ?? 0 } } : {}),
    };
  });
  rows.sort(byRateThenName);
  const b = histogramIncrease(before, after, 'ecnet_gateway_tunnel_setup_seconds', undefined).get('') ?? [];
  const p50 = bucketQuantile(0.5, b);
  const p99 = bucketQuantile(0.99, b);
  const allRefused = ratesBy(before, after, 'ecnet_gateway_tunnels_refused_total', ['reason'], seconds);
  const synced = samples(after, 'ecnet_gateway_catalog_synced')[0];
  const services = samples(after, 'ecnet_gateway_catalog_services')[0];
  return {
    kind: 'gateway',
    seconds,
    totals: {
      rejectedPerS: sumRates(allRefused),
      rejectedByReason: perReason(allRefused),
      limitedPerS: sumRates(ratesBy(before, after, 'ecnet_gateway_connections_limited_total', [], seconds)),
      ...(synced ? { catalogSynced: synced.value > 0 } : {}),
      ...(services ? { catalogServices: services.value } : {}),
    },
    rows,
    setup: [{ perS: (b[b.length - 1]?.count ?? 0) / seconds, ...(p50 !== undefined ? { p50 } : {}), ...(p99 !== undefined ? { p99 } : {}) }],
  };
}

function sumRates(m: Map<string, number>): number {
  let s = 0;
  for (const v of m.values()) s += v;
  return s;
}
