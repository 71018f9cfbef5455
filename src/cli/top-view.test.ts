import { describe, expect, it } from 'vitest';
import { GatewayMetrics } from '../gateway/metrics.js';
import { parseMetrics } from '../metrics/parse.js';
import { componentRegistry } from '../metrics/registry.js';
import { ProxyMetrics } from '../proxy/metrics.js';
import { formatBytesPerS, formatSeconds, renderTop } from './top.js';
import { bucketQuantile, topView } from './top-view.js';

const LOCAL = 'r/z/g/cluster-1';
const REMOTE = 'r/z/g/cluster-2';

/** An agent's scrape: `n` scales the counters, `setup` gives the histogram's cumulative buckets per cluster. */
function agentScrape(o: { opened: [number, number]; failed: number; sent: number; received: number; accepted: number; rejected: number; active: number; setup: Record<string, [number, number, number, number]> }): string {
  const bucket = (cluster: string, [a, b, c, inf]: [number, number, number, number]) =>
    [
      `ecnet_proxy_connection_setup_seconds_bucket{le="0.001",cluster="${cluster}"} ${a}`,
      `ecnet_proxy_connection_setup_seconds_bucket{le="0.01",cluster="${cluster}"} ${b}`,
      `ecnet_proxy_connection_setup_seconds_bucket{le="0.1",cluster="${cluster}"} ${c}`,
      `ecnet_proxy_connection_setup_seconds_bucket{le="+Inf",cluster="${cluster}"} ${inf}`,
      `ecnet_proxy_connection_setup_seconds_sum{cluster="${cluster}"} 1`,
      `ecnet_proxy_connection_setup_seconds_count{cluster="${cluster}"} ${inf}`,
    ].join('\n');
  return `# HELP ecnet_build_info Always 1
# TYPE ecnet_build_info gauge
ecnet_build_info{version="0.1.0",component="agent"} 1
# HELP ecnet_proxy_connections_accepted_total Connections the node proxy accepted
# TYPE ecnet_proxy_connections_accepted_total counter
ecnet_proxy_connections_accepted_total ${o.accepted}
# TYPE ecnet_proxy_connections_rejected_total counter
ecnet_proxy_connections_rejected_total{namespace="",service="",reason="no_route"} ${o.rejected}
ecnet_proxy_connections_rejected_total{namespace="shop",service="cart",reason="all_failed"} 0
# TYPE ecnet_proxy_connections_opened_total counter
ecnet_proxy_connections_opened_total{namespace="shop",service="cart",cluster="${LOCAL}"} ${o.opened[0]}
ecnet_proxy_connections_opened_total{namespace="shop",service="cart",cluster="${REMOTE}"} ${o.opened[1]}
# TYPE ecnet_proxy_connection_attempts_failed_total counter
ecnet_proxy_connection_attempts_failed_total{namespace="shop",service="cart",cluster="${REMOTE}",reason="refused"} ${o.failed}
ecnet_proxy_connection_attempts_failed_total{namespace="shop",service="cart",cluster="${REMOTE}",reason="timeout"} 1
# TYPE ecnet_proxy_bytes_total counter
ecnet_proxy_bytes_total{namespace="shop",service="cart",cluster="${REMOTE}",direction="sent"} ${o.sent}
ecnet_proxy_bytes_total{namespace="shop",service="cart",cluster="${REMOTE}",direction="received"} ${o.received}
# TYPE ecnet_proxy_connections_active gauge
ecnet_proxy_connections_active{namespace="shop",service="cart",cluster="${LOCAL}"} 0
ecnet_proxy_connections_active{namespace="shop",service="cart",cluster="${REMOTE}"} ${o.active}
# TYPE ecnet_proxy_target_healthy gauge
ecnet_proxy_target_healthy{namespace="shop",service="cart",cluster="${LOCAL}"} 1
ecnet_proxy_target_healthy{namespace="shop",service="cart",cluster="${REMOTE}"} 0
ecnet_proxy_target_healthy{namespace="web",service="front",cluster="${REMOTE}"} 1
# TYPE ecnet_proxy_gateway_up gauge
ecnet_proxy_gateway_up{cluster="${REMOTE}"} 0
# TYPE ecnet_proxy_connection_setup_seconds histogram
${Object.entries(o.setup).map(([c, b]) => bucket(c, b)).join('\n')}
`;
}

describe('topView of an agent', () => {
  const before = parseMetrics(agentScrape({ opened: [10, 100], failed: 5, sent: 1000, received: 5000, accepted: 120, rejected: 2, active: 3, setup: { [LOCAL]: [5, 10, 10, 10], [REMOTE]: [0, 50, 100, 100] } }));
  const after = parseMetrics(agentScrape({ opened: [30, 300], failed: 25, sent: 3048, received: 25_480, accepted: 340, rejected: 6, active: 7, setup: { [LOCAL]: [25, 30, 30, 30], [REMOTE]: [0, 150, 296, 300] } }));
  const v = topView(before, after, 2, { localCluster: LOCAL });

  it('gives one row per service and target, with rates over the interval, sorted by new connections', () => {
    expect(v.kind).toBe('agent');
    expect(v.rows.map((r) => [r.service, r.target])).toEqual([
      ['shop/cart', REMOTE],
      ['shop/cart', LOCAL],
      ['web/front', REMOTE],
    ]);
    expect(v.rows[0]).toEqual({ service: 'shop/cart', target: REMOTE, local: false, connPerS: 100, failPerS: 10, failReason: 'refused', active: 7, sentBytesPerS: 1024, receivedBytesPerS: 10_240, healthy: false });
    expect(v.rows[1]).toMatchObject({ target: LOCAL, local: true, connPerS: 10, failPerS: 0, healthy: true });
    expect(v.rows[1]!.failReason).toBeUndefined();
    // A service with a health gauge and no traffic yet still has its row.
    expect(v.rows[2]).toMatchObject({ service: 'web/front', connPerS: 0, healthy: true });
  });

  it('totals accepted and rejected, by reason (the rejections without a route too)', () => {
    expect(v.totals).toEqual({ acceptedPerS: 110, rejectedPerS: 2, rejectedByReason: { no_route: 2 } });
  });

  it('estimates setup p50/p99 per target cluster from the buckets\' increase', () => {
    const local = v.setup.find((s) => s.cluster === LOCAL)!;
    const remote = v.setup.find((s) => s.cluster === REMOTE)!;
    // Local: 20 new, all in (0, 1ms]: p50 at rank 10 of 20 → 0.5 ms.
    expect(local).toMatchObject({ local: true, perS: 10 });
    expect(local.p50).toBeCloseTo(0.0005, 6);
    // Remote: 200 new, 100 in (1ms, 10ms], 96 in (10ms, 100ms], 4 above: p50 = 10 ms; p99 past the last finite bucket.
    expect(remote.p50).toBeCloseTo(0.01, 6);
    expect(remote.p99).toBe(0.1);
    expect(remote.gatewayUp).toBe(false);
  });

  it('gives no negative rate when the agent restarted between the scrapes (counters reset)', () => {
    const restarted = parseMetrics(agentScrape({ opened: [4, 6], failed: 0, sent: 100, received: 200, accepted: 12, rejected: 0, active: 1, setup: { [REMOTE]: [0, 2, 6, 6] } }));
    const r = topView(after, restarted, 2);
    for (const row of r.rows) for (const k of ['connPerS', 'failPerS', 'sentBytesPerS', 'receivedBytesPerS'] as const) expect(row[k], `${row.service} ${row.target} ${k}`).toBeGreaterThanOrEqual(0);
    // What the new process counted is what happened since.
    expect(r.rows.find((x) => x.target === REMOTE && x.service === 'shop/cart')).toMatchObject({ connPerS: 3, sentBytesPerS: 50, receivedBytesPerS: 100 });
    expect(r.totals.acceptedPerS).toBe(6);
    const remote = r.setup.find((s) => s.cluster === REMOTE)!;
    expect(remote.perS).toBe(3);
    expect(remote.p50).toBeGreaterThan(0.001);
    // Without a known local cluster, nothing is marked.
    expect(r.rows.every((x) => x.local === undefined)).toBe(true);
  });

  it('renders a table with the totals line, human units and the local mark', () => {
    const text = renderTop(v, '127.0.0.1:15000');
    expect(text).toMatch(/^agent 127\.0\.0\.1:15000 · 2\.0s · accepted 110\/s · rejected 2\.0\/s \(no_route 2\.0\)$/m);
    expect(text).toMatch(/^SERVICE\s+TARGET\s+CONN\/S\s+FAIL\/S\s+ACTIVE\s+SENT\/S\s+RECV\/S\s+HEALTH$/m);
    expect(text).toMatch(/^shop\/cart\s+r\/z\/g\/cluster-2\s+100\s+10 \(refused\)\s+7\s+1\.0 KiB\/s\s+10 KiB\/s\s+UNHEALTHY$/m);
    expect(text).toMatch(/^shop\/cart\s+r\/z\/g\/cluster-1 \(local\)\s+10\s+0\s+0\s+0 B\/s\s+0 B\/s\s+healthy$/m);
    expect(text).toMatch(/^r\/z\/g\/cluster-2\s+100\s+10\.0ms\s+100\.0ms\s+DOWN$/m);
  });
});

describe('topView of a gateway', () => {
  const scrape = (opened: number, refused: number, unknown: number, limited: number) => `# TYPE ecnet_build_info gauge
ecnet_build_info{version="0.1.0",component="gateway"} 1
# TYPE ecnet_gateway_tunnels_opened_total counter
ecnet_gateway_tunnels_opened_total{namespace="shop",service="cart"} ${opened}
# TYPE ecnet_gateway_tunnels_refused_total counter
ecnet_gateway_tunnels_refused_total{namespace="shop",service="cart",reason="no_endpoint"} ${refused}
ecnet_gateway_tunnels_refused_total{namespace="",service="",reason="not_found"} ${unknown}
# TYPE ecnet_gateway_tunnels_active gauge
ecnet_gateway_tunnels_active{namespace="shop",service="cart"} 4
# TYPE ecnet_gateway_endpoints gauge
ecnet_gateway_endpoints{namespace="shop",service="cart",state="serving"} 2
ecnet_gateway_endpoints{namespace="shop",service="cart",state="ejected"} 1
# TYPE ecnet_gateway_service_ready gauge
ecnet_gateway_service_ready{namespace="shop",service="cart"} 1
# TYPE ecnet_gateway_catalog_synced gauge
ecnet_gateway_catalog_synced 1
# TYPE ecnet_gateway_catalog_services gauge
ecnet_gateway_catalog_services 3
# TYPE ecnet_gateway_connections_limited_total counter
ecnet_gateway_connections_limited_total ${limited}
# TYPE ecnet_gateway_tunnel_setup_seconds histogram
ecnet_gateway_tunnel_setup_seconds_bucket{le="0.001"} ${opened}
ecnet_gateway_tunnel_setup_seconds_bucket{le="+Inf"} ${opened}
ecnet_gateway_tunnel_setup_seconds_sum 0.1
ecnet_gateway_tunnel_setup_seconds_count ${opened}
`;

  it('shows tunnels per exported service; refusals for no service count in the totals only', () => {
    const v = topView(parseMetrics(scrape(10, 0, 0, 0)), parseMetrics(scrape(30, 4, 6, 2)), 2);
    expect(v.kind).toBe('gateway');
    expect(v.rows).toEqual([{ service: 'shop/cart', connPerS: 10, failPerS: 2, failReason: 'no_endpoint', active: 4, sentBytesPerS: 0, receivedBytesPerS: 0, healthy: true, endpoints: { serving: 2, ejected: 1 } }]);
    expect(v.totals).toEqual({ rejectedPerS: 5, rejectedByReason: { no_endpoint: 2, not_found: 3 }, limitedPerS: 1, catalogSynced: true, catalogServices: 3 });
    expect(v.setup[0]).toMatchObject({ perS: 10 });
    expect(v.setup[0]!.p50).toBeCloseTo(0.0005, 6);
    const text = renderTop(v, 'http://10.0.0.5:15090/metrics');
    expect(text).toMatch(/^gateway http:\/\/10\.0\.0\.5:15090\/metrics · 2\.0s · refused 5\.0\/s \(not_found 3\.0, no_endpoint 2\.0\) · limited 1\.0\/s · catalog synced, 3 services$/m);
    expect(text).toMatch(/^shop\/cart\s+10\s+2\.0 \(no_endpoint\)\s+4\s+0 B\/s\s+0 B\/s\s+2 serving, 1 ejected\s+ready$/m);
  });
});

// The registries as the processes make them: their families beside prom-client's process metrics and build_info.
describe('from the real registries', () => {
  it('reads what ProxyMetrics exposes (names, labels, histogram) as the hand-written scrapes above', async () => {
    const registry = componentRegistry('agent');
    const m = new ProxyMetrics({ registry, localCluster: LOCAL });
    const before = parseMetrics(await registry.metrics());
    for (let i = 0; i < 4; i++) m.accepted.inc();
    m.openedOne({ namespace: 'shop', service: 'cart' }, REMOTE, 0.004).ended({ up: 2048, down: 4096 });
    m.openedOne({ namespace: 'shop', service: 'cart' }, REMOTE, 0.006);
    m.failedAttempt({ namespace: 'shop', service: 'cart' }, REMOTE, 'refused');
    m.rejectedOne('no_route');
    m.targetHealthy.set({ namespace: 'shop', service: 'cart', cluster: REMOTE }, 1);
    const after = parseMetrics(await registry.metrics());
    const v = topView(before, after, 1);
    expect(v.kind).toBe('agent');
    expect(v.totals).toEqual({ acceptedPerS: 4, rejectedPerS: 1, rejectedByReason: { no_route: 1 } });
    expect(v.rows).toEqual([{ service: 'shop/cart', target: REMOTE, connPerS: 2, failPerS: 1, failReason: 'refused', active: 1, sentBytesPerS: 2048, receivedBytesPerS: 4096, healthy: true }]);
    expect(v.setup).toEqual([{ cluster: REMOTE, perS: 2, p50: 0.005, p99: expect.closeTo(0.0099, 9) }]);
  });

  it('reads what GatewayMetrics exposes', async () => {
    const registry = componentRegistry('gateway');
    const m = new GatewayMetrics({ registry });
    const before = parseMetrics(await registry.metrics());
    m.openedOne({ namespace: 'shop', service: 'cart' }, 0.002).ended({ up: 10, down: 20 });
    m.refusedOne('not_found', { namespace: 'x', service: 'y' }, false);
    const v = topView(before, parseMetrics(await registry.metrics()), 1);
    expect(v.kind).toBe('gateway');
    expect(v.rows).toEqual([{ service: 'shop/cart', connPerS: 1, failPerS: 0, active: 0, sentBytesPerS: 10, receivedBytesPerS: 20 }]);
    expect(v.totals.rejectedByReason).toEqual({ not_found: 1 });
  });
});

describe('helpers', () => {
  it('bucketQuantile interpolates as histogram_quantile', () => {
    const b = [
      { le: 0.1, count: 10 },
      { le: 0.2, count: 30 },
      { le: Infinity, count: 40 },
    ];
    expect(bucketQuantile(0.5, b)).toBeCloseTo(0.15, 9); // rank 20: halfway through (0.1, 0.2]
    expect(bucketQuantile(0.1, b)).toBeCloseTo(0.04, 9); // rank 4 of the first bucket, from 0
    expect(bucketQuantile(0.99, b)).toBe(0.2); // in +Inf: the highest finite bound
    expect(bucketQuantile(0.5, [{ le: 0.1, count: 0 }, { le: Infinity, count: 0 }])).toBeUndefined();
    expect(bucketQuantile(0.5, [])).toBeUndefined();
  });

  it('formats bytes and times for people', () => {
    expect(formatBytesPerS(0)).toBe('0 B/s');
    expect(formatBytesPerS(1536)).toBe('1.5 KiB/s');
    expect(formatBytesPerS(300 * 1024 * 1024)).toBe('300 MiB/s');
    expect(formatSeconds(0.00025)).toBe('250µs');
    expect(formatSeconds(0.0042)).toBe('4.20ms');
    expect(formatSeconds(0.25)).toBe('250.0ms');
    expect(formatSeconds(2)).toBe('2.00s');
    expect(formatSeconds(undefined)).toBe('-');
  });

  it('refuses a non-positive interval', () => {
    expect(() => topView(new Map(), new Map(), 0)).toThrow(RangeError);
  });
});
