// The node proxy with the real datapath: a client process in a test cgroup connects to a ClusterIP, connect4
// sends it to the proxy, the proxy takes the original destination from the kernel, asks the policy, and
// tunnels through a gateway to a backend. Two "clusters" are two gateways on loopback addresses of a
// network namespace of the test's own. Root only.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Datapath } from '../src/bpf/datapath.js';
import { connectMarked } from '../src/native/sockets.js';
import { defaults } from '../src/config.js';
import { staticCatalog } from '../src/gateway/catalog.js';
import { Gateway } from '../src/gateway/gateway.js';
import { Agent, RouteMap } from '../src/agent/agent.js';
import { NodeProxy, type Route } from '../src/proxy/proxy.js';
import { HealthChecks } from '../src/proxy/health-checks.js';
import { LocalSource } from '../src/sources/local.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { type TestCgroup, type TestNetns, cleanupAll, makeCgroup, makeNetns, makePinDir, runClient } from './helpers/host.js';

const key = (n: number) => `default/default/default/cluster-${n}`;
const CLUSTER_IP = '10.96.0.10';
/** A second service, `broken/broken`: at cluster-1 its only endpoint refuses (the gateway answers 503), at cluster-3 it works. */
const BROKEN_IP = '10.96.0.11';

describeKernel('node proxy over the datapath, through gateways', () => {
  const pins = makePinDir();
  let ns: TestNetns | undefined;
  let cg: TestCgroup | undefined;
  let dp: Datapath | undefined;
  let proxy: NodeProxy | undefined;
  const gateways = new Map<number, Gateway>();
  const agentRoutes = new RouteMap();
  let markedConnects = 0;
  let dir = '';
  let agent: Agent | undefined;
  let source: LocalSource | undefined;
  const backends: Server[] = [];
  const route: Route = {
    service: 'httpbin',
    namespace: 'httpbin',
    port: 8080,
    exporters: [1, 3].map((n) => ({ clusterKey: key(n), gateway: { host: `127.0.0.${10 + n}`, port: 8081 } })),
    policy: undefined,
    localEndpoints: [],
  };
  const broken: Route = {
    service: 'broken',
    namespace: 'broken',
    port: 8080,
    exporters: [1, 3].map((n) => ({ clusterKey: key(n), gateway: { host: `127.0.0.${10 + n}`, port: 8081 } })),
    policy: { lbType: 'FailOver', targets: [{ clusterKey: key(1) }, { clusterKey: key(3) }] },
    localEndpoints: [],
  };

  async function startGateway(n: number, backendPort: number): Promise<void> {
    const catalog = staticCatalog([
      { namespace: 'httpbin', name: 'httpbin', ports: new Map([[8080, [{ ip: `127.0.0.${20 + n}`, port: backendPort }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } },
      { namespace: 'broken', name: 'broken', ports: new Map([[8080, [{ ip: `127.0.0.${20 + n}`, port: n === 1 ? 9 : backendPort }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } },
    ]);
    // An ejected endpoint stays out for a minute: nothing below depends on how fast the test runs.
    gateways.set(n, await Gateway.start({ host: `127.0.0.${10 + n}`, port: 8081, catalog, kernelSplice: true, outliers: { baseEjectMs: 60_000 } }));
  }
  const call = async (count: number, ip = CLUSTER_IP) => {
    const results = await runClient({ cgroup: cg!.path, targets: Array.from({ length: count }, () => `${ip}:8080`), timeoutMs: 3000 });
    return results.map((r) => r.reply?.trim() ?? `error: ${r.error}`);
  };

  beforeAll(async () => {
    ns = makeNetns(['10.96.0.0/16']);
    ns.enter();
    cg = makeCgroup();
    dp = Datapath.open({ bpffs: pins.path, cgroup: cg.path, objectDir: defaults.objectDir, settings: { proxy: { ip: '127.0.0.1', port: 15001 }, proxyMark: defaults.proxyMark } });
    dp.services.set({ ip: CLUSTER_IP, port: 8080, protocol: 'tcp' }, { id: 1, disabled: false });
    dp.services.set({ ip: BROKEN_IP, port: 8080, protocol: 'tcp' }, { id: 2, disabled: false });
    for (const n of [1, 3]) {
      const b = createServer({ allowHalfOpen: true }, (c) => {
        c.on('data', () => undefined);
        c.on('end', () => c.end(`cluster-${n}\n`));
      });
      await new Promise<void>((r) => b.listen(9000, `127.0.0.${20 + n}`, r));
      backends.push(b);
      await startGateway(n, 9000);
    }
    proxy = await NodeProxy.start({
      kernelSplice: true,
      host: '127.0.0.1',
      port: 15001,
      localCluster: key(2),
      routes: { lookup: (ip, port) => agentRoutes.lookup(ip, port) ?? (port !== 8080 ? undefined : ip === CLUSTER_IP ? route : ip === BROKEN_IP ? broken : undefined) },
      originalDestination: (s) => dp!.takeOriginalDestination(s),
      connect: (host, port) => {
        markedConnects++;
        return connectMarked({ host, port, mark: defaults.proxyMark });
      },
      tunnelTimeoutMs: 1000,
    });
  });
  afterAll(async () => {
    agent?.destroy();
    source?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await proxy?.close(100);
    for (const g of gateways.values()) await g.close(100);
    for (const b of backends) b.close();
    cleanupAll(
      () => dp?.uninstall(),
      () => cg?.remove(),
      () => pins.remove(),
      () => ns?.remove(),
    );
  });

  it('with no policy and no local endpoints, the connection is refused at once', async () => {
    const started = Date.now();
    const replies = await call(3);
    expect(replies.every((r) => r.startsWith('error'))).toBe(true);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(proxy!.stats.refused).toBe(3);
  });

  it('ActiveActive answers from both clusters', async () => {
    route.policy = { lbType: 'ActiveActive', targets: [{ clusterKey: key(1) }, { clusterKey: key(3) }] };
    const before = markedConnects;
    const replies = await call(40);
    expect(new Set(replies)).toEqual(new Set(['cluster-1', 'cluster-3']));
    // Every tunnel went out on a socket carrying the mark the datapath skips.
    expect(markedConnects - before).toBe(40);
    // ... and carried its bytes in the kernel once established (the marked sockets are plain TCP).
    expect(proxy!.stats.kernelSpliced).toBeGreaterThanOrEqual(40);
  });

  it('FailOver: the first target only; when its gateway goes, every request succeeds from the other; and back', async () => {
    route.policy = { lbType: 'FailOver', targets: [{ clusterKey: key(1) }, { clusterKey: key(3) }] };
    expect(new Set(await call(10))).toEqual(new Set(['cluster-1']));
    await gateways.get(1)!.close(0);
    const during = await call(20);
    expect(during.filter((r) => r !== 'cluster-3')).toEqual([]);
    expect(proxy!.health.isHealthy(key(1), 'httpbin/httpbin', Date.now())).toBe(false);
    await startGateway(1, 9000);
    proxy!.health.checked(key(1), true); // what the active check does when the gateway answers /healthz again
    expect(new Set(await call(10))).toEqual(new Set(['cluster-1']));
  });

  it('three failures of one service at a cluster eject that (cluster, service) only: another service there keeps going', async () => {
    route.policy = { lbType: 'FailOver', targets: [{ clusterKey: key(1) }, { clusterKey: key(3) }] };
    const now = () => Date.now();
    expect(proxy!.health.isHealthy(key(1), 'broken/broken', now())).toBe(true);
    const retries = proxy!.stats.retries;
    // Each: cluster-1's gateway answers 503 (its endpoint refuses), cluster-3 answers; the client never sees it.
    expect(await call(3, BROKEN_IP)).toEqual(['cluster-3', 'cluster-3', 'cluster-3']);
    expect(proxy!.stats.retries - retries).toBe(3);
    expect(proxy!.health.isHealthy(key(1), 'broken/broken', now())).toBe(false);
    expect(proxy!.health.view(key(1), 'broken/broken', now()).reason).toMatch(/ejected/);
    // Ejected: straight to cluster-3, no failed try first.
    expect(await call(2, BROKEN_IP)).toEqual(['cluster-3', 'cluster-3']);
    expect(proxy!.stats.retries - retries).toBe(3);
    // The same cluster still serves the other service, first.
    expect(proxy!.health.isHealthy(key(1), 'httpbin/httpbin', now())).toBe(true);
    expect(await call(5)).toEqual(Array(5).fill('cluster-1'));
    // And cluster-3 was not ejected for broken/broken (half of its two clusters at most).
    expect(proxy!.health.isHealthy(key(3), 'broken/broken', now())).toBe(true);
  });

  it("the active check asks each gateway about the services routed there: one not ready at one cluster is that (cluster, service) only", async () => {
    const health = proxy!.health;
    health.forget(key(1));
    health.forget(key(3));
    const services = new Set(['httpbin/httpbin', 'broken/broken', 'shop/missing']);
    const checks = new HealthChecks({
      health,
      connect: (host, port) => connectMarked({ host, port, mark: defaults.proxyMark }),
      targets: () => new Map([1, 3].map((n) => [key(n), { gateway: { host: `127.0.0.${10 + n}`, port: 8081 }, services }] as const)),
    });
    try {
      await checks.checkOnce();
      const now = Date.now();
      expect(health.isHealthy(key(1), 'httpbin/httpbin', now)).toBe(true);
      // Its only endpoint at cluster-1 was ejected by that gateway (three refusals above): no ready endpoint left.
      expect(health.isHealthy(key(1), 'broken/broken', now)).toBe(false);
      expect(health.view(key(1), 'broken/broken', now).reason).toMatch(/no ready endpoint/);
      expect(health.isHealthy(key(3), 'broken/broken', now)).toBe(true);
      // Not in any gateway's answer: the gateway would refuse it.
      expect(health.isHealthy(key(3), 'shop/missing', now)).toBe(false);
      expect(health.isReachable(key(1))).toBe(true);
      // The second round: unchanged answers (304), the same verdicts.
      await checks.checkOnce();
      expect(health.isHealthy(key(1), 'broken/broken', Date.now())).toBe(false);
      expect(health.isHealthy(key(1), 'httpbin/httpbin', Date.now())).toBe(true);
      // broken/broken goes to cluster-3 first now; httpbin to cluster-1.
      expect(proxy!.decide(BROKEN_IP, 8080).candidates.map((c) => (c.kind === 'remote' ? c.clusterKey : 'local'))).toEqual([key(3)]);
      expect(await call(2)).toEqual(['cluster-1', 'cluster-1']);
    } finally {
      checks.close();
      health.forget(key(1));
    }
  });

  it('the agent programs the redirect and the route from the cluster\'s resources, and removes them', async () => {
    dir = mkdtempSync(join(tmpdir(), 'ecnet-agent-'));
    writeFileSync(
      join(dir, 'import.yaml'),
      `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {flomesh.io/service-import: web}}
spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 8080}]}
---
apiVersion: flomesh.io/v1alpha1
kind: ServiceImport
metadata: {name: web, namespace: shop}
spec:
  ips: [10.96.0.20]
  ports:
    - port: 8080
      endpoints:
        - {clusterKey: ${key(3)}, target: {host: 127.0.0.13, ip: 127.0.0.13, port: 8081, path: /}}
---
apiVersion: flomesh.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: web, namespace: shop}
spec: {lbType: ActiveActive}
`,
    );
    // The gateway of cluster-3 serves shop/web from the same backend.
    await gateways.get(3)!.close(0);
    const catalog = staticCatalog([
      { namespace: 'httpbin', name: 'httpbin', ports: new Map([[8080, [{ ip: '127.0.0.23', port: 9000 }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } },
      { namespace: 'shop', name: 'web', ports: new Map([[8080, [{ ip: '127.0.0.23', port: 9000 }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } },
    ]);
    gateways.set(3, await Gateway.start({ host: '127.0.0.13', port: 8081, catalog, kernelSplice: true }));
    source = new LocalSource({ dir });
    agent = new Agent({ source, localCluster: key(2), redirects: dp!.services, routes: agentRoutes, debounceMs: 5 });
    await agent.start();
    expect(dp!.services.get({ ip: '10.96.0.20', port: 8080, protocol: 'tcp' })).toBeDefined();
    const results = await runClient({ cgroup: cg!.path, targets: [`10.96.0.20:8080`, `10.96.0.20:8080`], timeoutMs: 3000 });
    expect(results.map((r) => [r.peer, r.reply?.trim()])).toEqual([
      ['10.96.0.20:8080', 'cluster-3'],
      ['10.96.0.20:8080', 'cluster-3'],
    ]);
    rmSync(join(dir, 'import.yaml'));
    const end = Date.now() + 5000;
    while (dp!.services.get({ ip: '10.96.0.20', port: 8080, protocol: 'tcp' }) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(dp!.services.get({ ip: '10.96.0.20', port: 8080, protocol: 'tcp' })).toBeUndefined();
    // Gone from the table; still answered for the grace period, for connections redirected just before.
    expect(agentRoutes.entries().map(([k]) => k)).not.toContain('10.96.0.20:8080');
    expect(agentRoutes.lookup('10.96.0.20', 8080)).toBeDefined();
  });
});
