// `npm run bench`: what one change costs the gateway and the agent at 10,000 services (20,000 EndpointSlices,
// 10,000 exports, imports and policies). Both keep their state per service and recompute only what an event
// touched; the baseline, measured in the same run, is what a rebuild from every resource costs (catalogFrom,
// desiredNode plus a replaceAll of the whole redirect set), which is what a change cost before.
//  - gateway: 300 changes (an EndpointSlice's endpoints, an export added and removed); the longest time the
//    event loop was held during them (monitorEventLoopDelay, 1 ms resolution: the figure includes up to 1 ms
//    of timer slack) against one full rebuild.
//  - agent: the same for slices, policies and imports coming and going, with the redirect set in a real BPF
//    map when run as root (else a stand-in in memory, said in the output).
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Agent, RouteMap, type RedirectSet } from '../../src/agent/agent.js';
import { desiredNode } from '../../src/agent/desired.js';
import type { EndpointSlice, Service } from '../../src/api/core.js';
import type { GlobalTrafficPolicy, ServiceExport, ServiceImport } from '../../src/api/flomesh.js';
import { Datapath } from '../../src/bpf/datapath.js';
import { defaults } from '../../src/config.js';
import { LiveCatalog, catalogFrom } from '../../src/gateway/live-catalog.js';
import type { KubeObject } from '../../src/sources/source.js';
import { cleanupAll, kernelSkipReason, makeCgroup, makePinDir } from '../helpers/host.js';
import { MemorySource, memoryRedirects } from '../helpers/memory-source.js';

const N = Number(process.env.SERVICES ?? 10_000);
const CHANGES = Number(process.env.CHANGES ?? 300);
const LOCAL = 'default/default/default/cluster-2';

const ns = (i: number) => `team-${i % 50}`;
const vip = (i: number) => `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const service = (i: number): Service => ({ apiVersion: 'v1', kind: 'Service', metadata: { namespace: ns(i), name: `svc-${i}` }, spec: { clusterIP: vip(i), clusterIPs: [vip(i)], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] } });
const slice = (i: number, j: number, gen = 0): EndpointSlice => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  addressType: 'IPv4',
  metadata: { namespace: ns(i), name: `svc-${i}-${j}`, labels: { 'kubernetes.io/service-name': `svc-${i}` } },
  endpoints: [{ addresses: [`10.${1 + j}.${(i >> 8) & 255}.${(i + gen) & 255}`], conditions: { ready: true } }],
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
});
const exported = (i: number): ServiceExport => ({ apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceExport', metadata: { namespace: ns(i), name: `svc-${i}`, creationTimestamp: '2026-01-01T00:00:00Z' }, spec: {} }) as unknown as ServiceExport;
const imported = (i: number): ServiceImport =>
  ({
    apiVersion: 'flomesh.io/v1alpha1',
    kind: 'ServiceImport',
    metadata: { namespace: ns(i), name: `svc-${i}` },
    spec: { type: 'ClusterSetIP', ips: [vip(i)], ports: [{ port: 80, protocol: 'TCP', endpoints: [{ clusterKey: 'default/default/default/cluster-1', target: { host: '192.168.0.2', ip: '192.168.0.2', port: 8091, path: '/' } }] }] },
  }) as unknown as ServiceImport;
const policy = (i: number, lbType = 'ActiveActive'): GlobalTrafficPolicy => ({ apiVersion: 'flomesh.io/v1alpha1', kind: 'GlobalTrafficPolicy', metadata: { namespace: ns(i), name: `svc-${i}` }, spec: { lbType } }) as unknown as GlobalTrafficPolicy;

const obj = (o: unknown) => o as KubeObject;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean): Promise<void> {
  const end = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error('a change was not applied within 10 s');
    await sleep(1);
  }
}
const time = (f: () => unknown): number => {
  const t = performance.now();
  f();
  return performance.now() - t;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const f1 = (n: number) => n.toFixed(1);

function populate(src: MemorySource): void {
  for (let i = 0; i < N; i++) {
    src.put(obj(service(i)));
    src.put(obj(slice(i, 0)));
    src.put(obj(slice(i, 1)));
    src.put(obj(exported(i)));
    src.put(obj(imported(i)));
    src.put(obj(policy(i)));
  }
}

/** The longest event-loop block (ms) while `changes` run one after the other, each until it is applied. */
async function longestBlock(changes: (k: number) => Promise<void>): Promise<{ max: number; p99: number }> {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  for (let k = 0; k < CHANGES; k++) await changes(k);
  h.disable();
  return { max: h.max / 1e6, p99: h.percentile(99) / 1e6 };
}
const blocks = (b: { max: number; p99: number }, full: number) =>
  `event-loop delay p99 ${f1(b.p99)} ms, longest ${f1(b.max)} ms = ${(b.max / full).toFixed(3)}× a full rebuild`;

async function gateway(): Promise<void> {
  const src = new MemorySource();
  populate(src);
  const [services, slices, exports] = [
    Array.from({ length: N }, (_, i) => service(i)),
    Array.from({ length: 2 * N }, (_, i) => slice(i >> 1, i & 1)),
    Array.from({ length: N }, (_, i) => exported(i)),
  ];
  const full = median(Array.from({ length: 5 }, () => time(() => catalogFrom(services, slices, exports))));
  const catalog = new LiveCatalog();
  const t0 = performance.now();
  await catalog.start(src, 20);
  const first = performance.now() - t0;
  const block = await longestBlock(async (k) => {
    const i = (k * 7919) % N;
    if (k % 3 === 2) {
      src.remove(obj(exported(i)));
      await until(() => catalog.get(ns(i), `svc-${i}`)?.export === undefined);
      src.put(obj(exported(i)));
      await until(() => catalog.get(ns(i), `svc-${i}`)?.export !== undefined);
    } else {
      const next = slice(i, 0, k + 1);
      src.put(obj(next));
      const want = next.endpoints![0]!.addresses[0];
      await until(() => catalog.get(ns(i), `svc-${i}`)?.ports.get(80)?.some((e) => e.ip === want) ?? false);
    }
  });
  catalog.close();
  console.log(`gateway catalog, ${N.toLocaleString('en-US')} services: full rebuild ${f1(full)} ms (first build on start ${f1(first)} ms); ${CHANGES} changes, ${blocks(block, full)}`);
}

async function agent(): Promise<void> {
  let redirects: RedirectSet & { size(): number };
  let close = () => {};
  let where: string;
  if (!kernelSkipReason) {
    const pins = makePinDir();
    const cg = makeCgroup();
    const dp = Datapath.open({ bpffs: pins.path, cgroup: cg.path, objectDir: defaults.objectDir, settings: { proxy: { ip: '10.0.0.1', port: 15001 }, proxyMark: defaults.proxyMark } });
    redirects = { replaceAll: (e, o) => dp.services.replaceAll(e, o), apply: (u, r) => dp.services.apply(u, r), capacity: dp.services.capacity, size: () => dp.services.list().length };
    close = () => cleanupAll(() => dp.close(), () => Datapath.isLoaded(pins.path) && Datapath.uninstall(pins.path), () => cg.remove(), () => pins.remove());
    where = 'the redirect set in a real BPF map';
  } else {
    redirects = memoryRedirects();
    where = `the redirect set in memory (${kernelSkipReason})`;
  }
  try {
    const src = new MemorySource();
    populate(src);
    const input = {
      localCluster: LOCAL as `${string}/${string}/${string}/${string}`,
      imports: Array.from({ length: N }, (_, i) => imported(i)),
      policies: Array.from({ length: N }, (_, i) => policy(i)),
      services: Array.from({ length: N }, (_, i) => service(i)),
      endpointSlices: Array.from({ length: 2 * N }, (_, i) => slice(i >> 1, i & 1)),
    };
    const full = median(
      Array.from({ length: 5 }, () =>
        // Verifying, as the agent's whole writes at start and at its resync are (a dump of the map, then the diff).
        time(() => redirects.replaceAll(desiredNode(input).redirects.map((r) => ({ ip: r.ip, port: r.port, protocol: 'tcp' as const, id: r.id, disabled: false })), { verify: true })),
      ),
    );
    const routes = new RouteMap();
    const a = new Agent({ source: src, localCluster: LOCAL, redirects, routes, debounceMs: 20 });
    const t0 = performance.now();
    await a.start();
    const first = performance.now() - t0;
    if (redirects.size() !== N) throw new Error(`${redirects.size()} redirects after start, not ${N}`);
    const extra = (k: number) => N + k;
    const block = await longestBlock(async (k) => {
      const i = (k * 7919) % N;
      if (k % 3 === 0) {
        const next = slice(i, 0, k + 1);
        src.put(obj(next));
        const want = next.endpoints![0]!.addresses[0];
        await until(() => routes.lookup(vip(i), 80)?.localEndpoints.some((e) => e.ip === want) ?? false);
      } else if (k % 3 === 1) {
        // A policy that keeps connections here: the address goes back to kube-proxy, and comes back.
        src.put(obj(policy(i, 'Locality')));
        await until(() => a.status.redirects === N - 1);
        src.put(obj(policy(i)));
        await until(() => a.status.redirects === N);
      } else {
        const j = extra(k);
        for (const o of [service(j), imported(j), policy(j)]) src.put(obj(o));
        await until(() => a.status.redirects === N + 1);
        src.remove(obj(imported(j)));
        await until(() => a.status.redirects === N);
      }
    });
    if (redirects.size() !== N) throw new Error(`${redirects.size()} redirects after the changes, not ${N}`);
    await a.close();
    console.log(`agent, ${N.toLocaleString('en-US')} imports, ${where}: full rebuild ${f1(full)} ms (first reconcile on start ${f1(first)} ms); ${CHANGES} changes, ${blocks(block, full)}`);
  } finally {
    close();
  }
}

await gateway();
await agent();
