// A new export of a Service the member already has (the exporter's own, say): node agents watch only Services
// labelled flomesh.io/service-import, so until the controller's label reaches a user's Service an agent sees
// its import without its Service, and reports the import as NotRedirected (a Warning Event per agent). The
// controller must label the Service before it writes the import, so that no agent ever sees the one without
// the other.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, RouteMap } from '../src/agent/agent.js';
import type { ServiceEntry } from '../src/bpf/services.js';
import { createKubernetesSource } from '../src/sources/kubernetes.js';
import { Kinds, type KubeObject, type Source } from '../src/sources/source.js';
import { type ControlledSet, startControlledSet } from './helpers/controlled-set.js';
import { type KubeApiServer, startKubeApiServer } from './helpers/kube-api-server.js';
import { kube, service, serviceExport, trafficPolicy } from './helpers/objects.js';

const N = 40;

describe('a new export of a Service the member already has', () => {
  let member: KubeApiServer;
  let exporter: KubeApiServer;
  let set: ControlledSet;
  let source: Source;
  let agent: Agent;
  let written: ServiceEntry[] = [];
  beforeAll(async () => {
    member = await startKubeApiServer({ bookmarkIntervalMs: 100, latencyMs: 2 });
    exporter = await startKubeApiServer({ bookmarkIntervalMs: 100 });
    for (const s of [member, exporter]) s.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } } as KubeObject);
    // The agent's member has Services of these names of its own (not exported there).
    for (const s of [member, exporter]) for (let i = 0; i < N; i++) {
      s.put(kube({ ...service('shop', `web-${i}`, { clusterIP: `10.96.1.${i + 1}` }), spec: { ...service('shop', `web-${i}`).spec, clusterIP: `10.96.1.${i + 1}`, clusterIPs: [`10.96.1.${i + 1}`], selector: { app: `web-${i}` } } }));
    }
    // Active-active: the agent redirects them to the exporter's gateway.
    for (let i = 0; i < N; i++) member.put(kube(trafficPolicy('shop', `web-${i}`)));
    source = createKubernetesSource({ kubeconfig: member.kubeconfig });
    agent = new Agent({ source, localCluster: 'default/default/default/cluster-2', redirects: { replaceAll: (e) => (written = [...e]) }, routes: new RouteMap() });
    await agent.start();
    set = await startControlledSet([['cluster-1', exporter], ['cluster-2', member]], { subnet: '10.0.3', resyncMs: 60_000 });
  });
  afterAll(async () => {
    await agent?.close();
    await source?.close();
    await set?.close();
  });

  it('is redirected without an agent ever reporting it NotRedirected', async () => {
    for (let i = 0; i < N; i++) exporter.put(kube(serviceExport('shop', `web-${i}`, { loadBalancer: 'RoundRobinLoadBalancer' })));
    const end = Date.now() + 15_000;
    while (written.length < N && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    expect(written).toHaveLength(N);
    // Past the wait after which an agent reports a problem that lasts (2 s).
    await new Promise((r) => setTimeout(r, 2_500));
    const events = member.objects<KubeObject & { reason?: string; message?: string }>(Kinds.Event, 'shop').filter((e) => e.reason === 'NotRedirected');
    expect(events.map((e) => e.message)).toEqual([]);
  });

  it('is withdrawn without an agent ever reporting it NotRedirected (the label goes after the import)', async () => {
    // By name: the server lists objects sorted by name, not in the order they came.
    const before = new Set(member.objects(Kinds.Event, 'shop').map((e) => e.metadata.name));
    for (let i = 0; i < N; i++) exporter.remove(Kinds.ServiceExport, 'shop', `web-${i}`);
    const end = Date.now() + 15_000;
    while ((written.length || member.objects(Kinds.ServiceImport, 'shop').length || member.objects<KubeObject>(Kinds.Service, 'shop').some((x) => x.metadata.labels?.['flomesh.io/service-import'])) && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    expect(written).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 2_500));
    const events = member.objects<KubeObject & { reason?: string; message?: string }>(Kinds.Event, 'shop').filter((e) => !before.has(e.metadata.name) && e.reason === 'NotRedirected');
    expect(events.map((e) => e.message)).toEqual([]);
  });
});
