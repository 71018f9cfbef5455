// The agent against an in-memory API server (the real client-node): an import it must leave out (addresses
// that are not its Service's ClusterIP) gets a Warning Event, once, and the node's other imports are still
// redirected; /healthz-style status says degraded. No privileges: the datapath is a stand-in set here.
import { afterAll, beforeAll, expect, it, describe } from 'vitest';
import { Agent, RouteMap } from '../src/agent/agent.js';
import { IMPORTED_LABEL } from '../src/api/flomesh.js';
import type { ServiceEntry } from '../src/bpf/services.js';
import { createKubernetesSource } from '../src/sources/kubernetes.js';
import { Kinds, type KubeObject, type Source } from '../src/sources/source.js';
import { type KubeApiServer, startKubeApiServer } from './helpers/kube-api-server.js';
import { kube, service, serviceImport, trafficPolicy } from './helpers/objects.js';

// Labelled as the controller labels the Services of imports: the agent watches only those.
const svc = (name: string, clusterIP: string) => kube(service('shop', name, { clusterIP, labels: { [IMPORTED_LABEL]: name } }));
const imp = (name: string, ips: string[]) => kube(serviceImport('shop', name, { ips, gateways: [{ cluster: 1, ip: '10.0.2.4', port: 80 }] }));
const aa = (name: string) => kube(trafficPolicy('shop', name));

describe('agent: an import left out is reported, the others stay', () => {
  let server: KubeApiServer;
  let source: Source;
  let agent: Agent;
  let written: ServiceEntry[] = [];
  beforeAll(async () => {
    server = await startKubeApiServer({ bookmarkIntervalMs: 100 });
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } } as KubeObject);
    for (const o of [svc('web', '10.96.0.10'), svc('db', '10.96.0.11'), imp('web', ['10.96.0.10']), imp('db', ['10.96.0.11', '10.96.0.1']), aa('web'), aa('db')]) server.put(o);
    source = createKubernetesSource({ kubeconfig: server.kubeconfig });
    agent = new Agent({ source, localCluster: 'default/default/default/cluster-2', redirects: { replaceAll: (e) => (written = [...e]) }, routes: new RouteMap(), debounceMs: 5 });
    await agent.start();
  });
  afterAll(async () => {
    await agent?.close();
    await source?.close();
    await server?.close();
  });

  it('redirects both own addresses, leaves the API server address out, and says so once in a Warning Event', async () => {
    expect(written.map((e) => e.ip).sort()).toEqual(['10.96.0.10', '10.96.0.11']);
    expect(agent.status.degraded).toEqual([{ import: 'shop/db', error: expect.stringMatching(/10\.96\.0\.1 is not the ClusterIP of Service shop\/db/) }]);
    const end = Date.now() + 5000;
    while (!server.objects(Kinds.Event, 'shop').length && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    const events = server.objects<KubeObject & { reason?: string; involvedObject?: { name?: string; kind?: string }; type?: string }>(Kinds.Event, 'shop');
    expect(events.map((e) => [e.type, e.reason, e.involvedObject?.kind, e.involvedObject?.name])).toEqual([['Warning', 'NotRedirected', 'ServiceImport', 'db']]);
    // Another reconcile with the same problem: no second Event.
    agent.trigger();
    await new Promise((r) => setTimeout(r, 300));
    expect(server.objects(Kinds.Event, 'shop')).toHaveLength(1);
  });

  it('reports nothing for a problem that goes within the wait (an import seen a moment before its Service)', async () => {
    server.put(aa('cart'));
    server.put(imp('cart', ['10.96.0.12']));
    await new Promise((r) => setTimeout(r, 500));
    expect(agent.status.degraded.map((d) => d.import)).toContain('shop/cart');
    server.put(svc('cart', '10.96.0.12'));
    const end = Date.now() + 5000;
    while (!written.some((e) => e.ip === '10.96.0.12') && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    expect(written.map((e) => e.ip)).toContain('10.96.0.12');
    await new Promise((r) => setTimeout(r, 2_500));
    const events = server.objects<KubeObject & { involvedObject?: { name?: string } }>(Kinds.Event, 'shop');
    expect(events.filter((e) => e.involvedObject?.name === 'cart')).toEqual([]);
  });

  it('lists and watches only the Services and EndpointSlices labelled as imported, not every one of the cluster', () => {
    for (const path of ['/api/v1/services', '/apis/discovery.k8s.io/v1/endpointslices']) {
      const asked = server.requests.filter((r) => r.path === path);
      expect(asked.length).toBeGreaterThan(0);
      expect(asked.every((r) => r.query.labelSelector === IMPORTED_LABEL)).toBe(true);
    }
  });
});
