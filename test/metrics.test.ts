// Metrics against real traffic: the datapath redirects a client's connections to the node proxy, whose native
// front (or JavaScript, when the front hands over) tunnels them to two gateways; every figure read back from
// /metrics over HTTP, parsed strictly, must match what the clients did — connections per service and cluster,
// bytes both ways (the kernel splicer's, counted live), setup times, failures by reason, refusals. Root only.
import { connect } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RouteMap } from '../src/agent/agent.js';
import { Datapath } from '../src/bpf/datapath.js';
import { origDstCodec } from '../src/bpf/codecs.js';
import { defaults } from '../src/config.js';
import type { ChangingCatalog } from '../src/gateway/front.js';
import type { LocalService } from '../src/gateway/catalog.js';
import { Gateway } from '../src/gateway/gateway.js';
import { GatewayMetrics } from '../src/gateway/metrics.js';
import { componentRegistry } from '../src/metrics/registry.js';
import { startMetricsServer } from '../src/metrics/server.js';
import { type Family, parseMetrics, sumOf } from '../src/metrics/parse.js';
import { connectMarked } from '../src/native/sockets.js';
import { ProxyMetrics } from '../src/proxy/metrics.js';
import { NodeProxy, type Route } from '../src/proxy/proxy.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { type TestCgroup, type TestNetns, cleanupAll, makeCgroup, makeNetns, makePinDir, runClient } from './helpers/host.js';
import { greeter } from './helpers/greeter.js';

const CLUSTER_IP = '10.96.0.10';
const NO_ROUTE_IP = '10.96.0.11';
const HERE = 'default/default/default/here';
const A = 'default/default/default/cluster-a';
const B = 'default/default/default/cluster-b';
const C = 'default/default/default/cluster-c';

function catalogOf(services: LocalService[]): ChangingCatalog {
  const byKey = new Map(services.map((s) => [`${s.namespace}/${s.name}`, s]));
  return { get: (ns, n) => byKey.get(`${ns}/${n}`), all: () => byKey.values(), withIngress: () => [], subscribe: () => () => undefined };
}

const backend = greeter;

async function scrape(server: HttpServer): Promise<Map<string, Family>> {
  const { port } = server.address() as { port: number };
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseMetrics(await res.text());
}

describeKernel('metrics match the traffic', () => {
  const pins = makePinDir();
  let ns: TestNetns | undefined;
  let cg: TestCgroup | undefined;
  let dp: Datapath | undefined;
  let proxy: NodeProxy | undefined;
  let proxyServer: HttpServer | undefined;
  const gwServers: Record<string, HttpServer> = {};
  const closers: (() => unknown)[] = [];
  const routes = new RouteMap();
  const route = (policy: Route['policy'], exporters: Route['exporters']): Route => ({ service: 'echo', namespace: 'ns', port: 8080, exporters, policy, localEndpoints: [] });
  const svc = { namespace: 'ns', service: 'echo' };

  beforeAll(async () => {
    ns = makeNetns(['10.96.0.0/16']);
    ns.enter();
    cg = makeCgroup();
    dp = Datapath.open({ bpffs: pins.path, cgroup: cg.path, objectDir: defaults.objectDir, settings: { proxy: { ip: '127.0.0.1', port: 15001 }, proxyMark: defaults.proxyMark } });
    dp.services.set({ ip: CLUSTER_IP, port: 8080, protocol: 'tcp' }, { id: 1, disabled: false });
    dp.services.set({ ip: NO_ROUTE_IP, port: 8080, protocol: 'tcp' }, { id: 2, disabled: false });
    for (const [name, gwIp, beIp] of [['a', '127.0.0.11', '127.0.0.21'], ['b', '127.0.0.12', '127.0.0.22']] as const) {
      const be = await backend(name, beIp, 9000);
      const registry = componentRegistry('gateway');
      const metrics = new GatewayMetrics({ registry });
      const gw = await Gateway.start({
        host: gwIp,
        port: 8081,
        catalog: catalogOf([{ namespace: 'ns', name: 'echo', ports: new Map([[8080, [{ ip: beIp, port: 9000 }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } }]),
        kernelSplice: true,
        front: true,
        metrics,
      });
      gwServers[name] = await startMetricsServer(registry, { host: '127.0.0.1', port: 0 });
      closers.push(() => be.close(), () => gw.destroy(), () => gwServers[name]!.close());
    }
    const registry = componentRegistry('agent');
    const metrics = new ProxyMetrics({ registry, localCluster: HERE });
    proxy = await NodeProxy.start({
      host: '127.0.0.1',
      port: 15001,
      localCluster: HERE,
      routes,
      originalDestination: (s) => dp!.takeOriginalDestination(s),
      connect: (host, port) => connectMarked({ host, port, mark: defaults.proxyMark }),
      kernelSplice: true,
      front: { connections: dp.map('connections'), destinationOf: (v) => origDstCodec.decode(v), mark: defaults.proxyMark },
      metrics,
    });
    const splicer = proxy.tunnels.splicer!;
    metrics.addNative({ read: () => splicer.tagStats(), reset: (tags) => splicer.tagReset(tags) });
    proxyServer = await startMetricsServer(registry, { host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await proxy?.close(100);
    proxyServer?.close();
    cleanupAll(
      ...closers,
      () => dp?.uninstall(),
      () => cg?.remove(),
      () => pins.remove(),
      () => ns?.remove(),
    );
  });

  const settle = () => new Promise((r) => setTimeout(r, 50));
  const call = async (n: number, ip = CLUSTER_IP) => runClient({ cgroup: cg!.path, targets: Array.from({ length: n }, () => `${ip}:8080`), timeoutMs: 5_000 });
  /** Polls a scrape until `ok` (the splicer's ends and counters settle on its own thread). */
  async function until(server: HttpServer, ok: (f: Map<string, Family>) => boolean): Promise<Map<string, Family>> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const f = await scrape(server);
      if (ok(f) || Date.now() > deadline) return f;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('connections, bytes and setup times per service and cluster, the same at the proxy and at each gateway', async () => {
    routes.replace(new Map([[`${CLUSTER_IP}:8080`, route({ lbType: 'ActiveActive', targets: [{ clusterKey: A, weight: 3 }, { clusterKey: B, weight: 1 }] }, [
      { clusterKey: A, gateway: { host: '127.0.0.11', port: 8081 } },
      { clusterKey: B, gateway: { host: '127.0.0.12', port: 8081 } },
    ])]]));
    await settle();
    const results = await call(40);
    // What the clients sent and got, per cluster: each sent one line the backend echoed, between its greeting and its bye.
    const want = { a: { n: 0, sent: 0, got: 0 }, b: { n: 0, sent: 0, got: 0 } };
    for (const r of results) {
      expect(r.reply, JSON.stringify(r)).toMatch(/^hello from ([ab])\nhello from \d+\nbye from \1$/);
      const w = want[r.reply!.slice(11, 12) as 'a' | 'b'];
      w.n++;
      w.sent += r.reply!.split('\n')[1]!.length + 1;
      w.got += r.reply!.length + 1;
    }
    expect([want.a.n, want.b.n]).toEqual([30, 10]);
    const labels = (cluster: string) => ({ ...svc, cluster });
    const p = await until(proxyServer!, (f) => sumOf(f, 'ecnet_proxy_connections_active') === 0 && sumOf(f, 'ecnet_proxy_bytes_total', { ...labels(A), direction: 'received' }) === want.a.got);
    expect(sumOf(p, 'ecnet_proxy_connections_accepted_total')).toBe(40);
    expect(sumOf(p, 'ecnet_proxy_connections_opened_total', labels(A))).toBe(30);
    expect(sumOf(p, 'ecnet_proxy_connections_opened_total', labels(B))).toBe(10);
    for (const [cluster, w] of [[A, want.a], [B, want.b]] as const) {
      expect(sumOf(p, 'ecnet_proxy_bytes_total', { ...labels(cluster), direction: 'sent' })).toBe(w.sent);
      expect(sumOf(p, 'ecnet_proxy_bytes_total', { ...labels(cluster), direction: 'received' })).toBe(w.got);
      expect(sumOf(p, 'ecnet_proxy_connection_setup_seconds', { cluster }, 'ecnet_proxy_connection_setup_seconds_count')).toBe(w.n);
      expect(sumOf(p, 'ecnet_proxy_connection_setup_seconds', { cluster }, 'ecnet_proxy_connection_setup_seconds_sum')).toBeGreaterThan(0);
    }
    expect(sumOf(p, 'ecnet_proxy_connections_active')).toBe(0);
    expect(sumOf(p, 'ecnet_proxy_connection_attempts_failed_total')).toBe(0);
    // Each gateway counted the same tunnels and the same bytes (the CONNECT and its 200 are not payload).
    for (const [name, w] of [['a', want.a], ['b', want.b]] as const) {
      const g = await until(gwServers[name]!, (f) => sumOf(f, 'ecnet_gateway_bytes_total', { ...svc, direction: 'received' }) === w.got);
      expect(sumOf(g, 'ecnet_gateway_tunnels_opened_total', svc)).toBe(w.n);
      expect(sumOf(g, 'ecnet_gateway_bytes_total', { ...svc, direction: 'sent' })).toBe(w.sent);
      expect(sumOf(g, 'ecnet_gateway_bytes_total', { ...svc, direction: 'received' })).toBe(w.got);
      expect(sumOf(g, 'ecnet_gateway_tunnel_setup_seconds', {}, 'ecnet_gateway_tunnel_setup_seconds_count')).toBe(w.n);
      expect(sumOf(g, 'ecnet_gateway_tunnels_active', svc)).toBe(0);
    }
  });

  it('failures by reason and cluster, retries, and a rejection for want of a route', async () => {
    // cluster-c's gateway is not there: each connection's first try is refused, the next cluster answers.
    routes.replace(new Map([[`${CLUSTER_IP}:8080`, route({ lbType: 'FailOver', targets: [{ clusterKey: C }, { clusterKey: B }] }, [
      { clusterKey: C, gateway: { host: '127.0.0.13', port: 8081 } },
      { clusterKey: B, gateway: { host: '127.0.0.12', port: 8081 } },
    ])]]));
    await settle();
    const before = await scrape(proxyServer!);
    const results = await call(5);
    for (const r of results) expect(r.reply, JSON.stringify(r)).toMatch(/^hello from b\n/);
    const [none] = await call(1, NO_ROUTE_IP);
    expect(none!.reply).toBeUndefined();
    const p = await until(proxyServer!, (f) => sumOf(f, 'ecnet_proxy_connections_active') === 0);
    const d = (name: string, match: Record<string, string> = {}) => sumOf(p, name, match) - sumOf(before, name, match);
    expect(d('ecnet_proxy_connections_opened_total', { ...svc, cluster: B })).toBe(5);
    // Refused at least once per connection (a reset or refusal is worth one more try at the same address) …
    const refused = d('ecnet_proxy_connection_attempts_failed_total', { ...svc, cluster: C, reason: 'refused' });
    expect(refused).toBeGreaterThanOrEqual(5);
    expect(d('ecnet_proxy_connection_attempts_failed_total', { ...svc, cluster: C })).toBe(refused);
    // … and every try after a connection's first is a retry.
    expect(d('ecnet_proxy_retries_total', svc)).toBe(refused);
    expect(d('ecnet_proxy_connections_rejected_total', { namespace: '', service: '', reason: 'no_route' })).toBe(1);
    expect(d('ecnet_proxy_connections_accepted_total')).toBe(6);
  });

  it('a gateway counts a CONNECT for a made-up service without its name', async () => {
    const g0 = await scrape(gwServers.a!);
    const reply = await new Promise<string>((resolve) => {
      const s = connect({ host: '127.0.0.11', port: 8081 });
      let data = '';
      s.on('connect', () => s.write('CONNECT nope.invented.svc.clusterset.local:80 HTTP/1.1\r\nhost: x\r\n\r\n'));
      s.on('data', (b) => (data += b.toString()));
      s.on('close', () => resolve(data));
      s.on('error', () => undefined);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 404/);
    const g = await scrape(gwServers.a!);
    const d = (match: Record<string, string>) => sumOf(g, 'ecnet_gateway_tunnels_refused_total', match) - sumOf(g0, 'ecnet_gateway_tunnels_refused_total', match);
    expect(d({ namespace: '', service: '', reason: 'not_found' })).toBe(1);
    expect(g.get('ecnet_gateway_tunnels_refused_total')!.samples.some((s) => s.labels.namespace === 'invented')).toBe(false);
  });
});
