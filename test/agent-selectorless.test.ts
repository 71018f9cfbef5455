// An imported Service without a selector whose EndpointSlices its owner writes (or Kubernetes mirrors from
// Endpoints): Kubernetes' EndpointSlice controller does not manage those slices, so nothing copies the
// Service's flomesh.io/service-import label to them. An agent watching only labelled slices (the default)
// watches such a service's slices by name instead (kubernetes.io/service-name), so it still sees its local
// endpoints, as it did when it watched all of them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, RouteMap } from '../src/agent/agent.js';
import { IMPORTED_LABEL } from '../src/api/flomesh.js';
import { createKubernetesSource } from '../src/sources/kubernetes.js';
import type { KubeObject, Source } from '../src/sources/source.js';
import { type KubeApiServer, startKubeApiServer } from './helpers/kube-api-server.js';
import { endpointSlice, kube, service, serviceImport, trafficPolicy } from './helpers/objects.js';

describe.each(['imported', 'all'] as const)('agent --watch-services %s: a selectorless imported Service with its own EndpointSlices', (watchServices) => {
  let server: KubeApiServer;
  let source: Source;
  let agent: Agent;
  const routes = new RouteMap();
  beforeAll(async () => {
    server = await startKubeApiServer({ bookmarkIntervalMs: 100 });
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } } as KubeObject);
    // As the controller leaves it: the user's Service labelled; the slice the user wrote is not.
    server.put(kube(service('shop', 'db', { clusterIP: '10.96.0.20', labels: { [IMPORTED_LABEL]: 'db' } })));
    server.put(kube({ ...endpointSlice('shop', 'db', ['10.1.0.7'], { name: 'db-manual', port: 80 }), metadata: { name: 'db-manual', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'db', 'endpointslice.kubernetes.io/managed-by': 'staff' } } }));
    server.put(kube(serviceImport('shop', 'db', { ips: ['10.96.0.20'], gateways: [{ cluster: 1, ip: '10.0.2.4', port: 80 }] })));
    server.put(kube(trafficPolicy('shop', 'db')));
    source = createKubernetesSource({ kubeconfig: server.kubeconfig });
    agent = new Agent({ source, localCluster: 'default/default/default/cluster-2', redirects: { replaceAll: () => undefined }, routes, debounceMs: 5, watchServices });
    await agent.start();
  });
  afterAll(async () => {
    await agent?.close();
    await source?.close();
    await server?.close();
  });

  it('routes to its local endpoints too, and follows its slices as they change', async () => {
    const until = async (ok: () => boolean) => {
      const end = Date.now() + 5000;
      while (!ok() && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    };
    const local = () => (routes.lookup('10.96.0.20', 80)?.localEndpoints ?? []).map((e) => JSON.stringify(e)).sort();
    await until(() => local().length === 1);
    expect(local()).toEqual([expect.stringContaining('10.1.0.7')]);
    // Another slice its owner writes: seen too.
    server.put(kube({ ...endpointSlice('shop', 'db', ['10.1.0.8'], { name: 'db-manual-2', port: 80 }), metadata: { name: 'db-manual-2', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'db', 'endpointslice.kubernetes.io/managed-by': 'staff' } } }));
    await until(() => local().length === 2);
    expect(local()).toEqual([expect.stringContaining('10.1.0.7'), expect.stringContaining('10.1.0.8')]);
    if (watchServices === 'imported') {
      // By name, in its namespace: not every slice of the cluster.
      const byName = server.requests.filter((r) => r.path === '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices');
      expect(byName.length).toBeGreaterThan(0);
      expect(byName.every((r) => r.query.labelSelector === 'kubernetes.io/service-name=db')).toBe(true);
      // Given a selector, its slices are the EndpointSlice controller's (labelled): the watch by name goes, and
      // the hand-written slices, unlabelled, no longer count.
      server.put(kube(service('shop', 'db', { clusterIP: '10.96.0.20', labels: { [IMPORTED_LABEL]: 'db' }, selector: { app: 'db' } })));
      await until(() => local().length === 0);
      expect(local()).toEqual([]);
    }
  });
});
