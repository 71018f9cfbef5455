// Another controller owns a user's Service's labels (an operator that writes the whole label set back, a GitOps
// tool with self-heal) and takes the flomesh.io/service-import label off every time: ecnet must not fight it
// at the speed of its watch (one PATCH per round trip, for as long as both run).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from '../src/api/core.js';
import { IMPORTED_LABEL } from '../src/api/flomesh.js';
import { Kinds, type KubeObject } from '../src/sources/source.js';
import { type ControlledSet, startControlledSet } from './helpers/controlled-set.js';
import { type KubeApiServer, startKubeApiServer } from './helpers/kube-api-server.js';
import { kube, service, serviceExport } from './helpers/objects.js';

describe('a user Service whose labels another controller owns', () => {
  let member: KubeApiServer;
  let set: ControlledSet;
  beforeAll(async () => {
    member = await startKubeApiServer({ bookmarkIntervalMs: 100 });
    member.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } } as KubeObject);
    member.put(kube({ ...service('shop', 'web'), spec: { ...service('shop', 'web').spec, selector: { app: 'web' } } }));
    member.put(kube(serviceExport('shop', 'web', { loadBalancer: 'RoundRobinLoadBalancer' })));
    set = await startControlledSet([['cluster-1', member]], { subnet: '10.0.4', resyncMs: 60_000 });
  });
  afterAll(async () => {
    await set?.close();
  });

  it('is labelled, but not again and again while the other one takes it off', async () => {
    const labelled = () => member.object<Service>(Kinds.Service, 'shop', 'web')?.metadata.labels?.[IMPORTED_LABEL];
    const end0 = Date.now() + 10_000;
    while (!labelled() && Date.now() < end0) await new Promise((r) => setTimeout(r, 10));
    expect(labelled()).toBe('web');
    const patches = () => member.requests.filter((r) => r.method === 'PATCH' && r.path === '/api/v1/namespaces/shop/services/web').length;
    const before = patches();
    // The other controller: puts the Service back as it wants it whenever the label is there.
    const end = Date.now() + 3_000;
    let removals = 0;
    while (Date.now() < end) {
      const cur = member.object<Service>(Kinds.Service, 'shop', 'web')!;
      if (cur.metadata.labels?.[IMPORTED_LABEL]) {
        const { [IMPORTED_LABEL]: _gone, ...rest } = cur.metadata.labels;
        member.put({ ...cur, metadata: { ...cur.metadata, labels: rest } });
        removals++;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    // Before: one PATCH per removal (394 in 3 s); now a doubling delay between them.
    expect(removals).toBeGreaterThan(1);
    expect(patches() - before).toBeLessThan(10);
  });
});
