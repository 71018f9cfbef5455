import { describe, expect, it } from 'vitest';
import { endpointSlice, service, serviceExport } from '../../test/helpers/objects.js';
import { decide, staticCatalog } from './catalog.js';
import { catalogFrom, localService } from './live-catalog.js';

const svc = (namespace: string, name: string) => service(namespace, name, { clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443 }] });
const slice = (namespace: string, name: string) => endpointSlice(namespace, name, ['172.18.0.2'], { portName: 'https', port: 6443 });
const exp = (namespace: string, name: string) => serviceExport(namespace, name);

describe("the gateway's catalog", () => {
  it("never offers the cluster's own machinery, whatever export someone writes", () => {
    const c = catalogFrom(
      [svc('default', 'kubernetes'), svc('kube-system', 'kube-dns'), svc('shop', 'web')],
      [slice('default', 'kubernetes'), slice('kube-system', 'kube-dns'), slice('shop', 'web')],
      [exp('default', 'kubernetes'), exp('kube-system', 'kube-dns'), exp('shop', 'web')],
    );
    const cat = staticCatalog([...c.values()]);
    expect(decide(cat, { service: 'kubernetes', namespace: 'default', port: 443 }).status).toBe(404);
    expect(decide(cat, { service: 'kube-dns', namespace: 'kube-system', port: 443 }).status).toBe(404);
    expect(decide(cat, { service: 'web', namespace: 'shop', port: 443 }).status).toBe(200);
  });

  it('an MCS export alone exports every port to every member; with a flomesh.io one, its targetClusters no longer narrow it', () => {
    const mcs = { apiVersion: 'multicluster.x-k8s.io/v1alpha1', kind: 'ServiceExport', metadata: { name: 'web', namespace: 'shop', creationTimestamp: '2026-01-01T00:00:00Z' } };
    const alone = localService(svc('shop', 'web'), [slice('shop', 'web')], undefined, undefined, mcs)!;
    expect(alone.export).toEqual({});
    expect(decide(staticCatalog([alone]), { service: 'web', namespace: 'shop', port: 443 }, { cluster: 'a/b/c/any', workload: undefined }).status).toBe(200);
    const narrow = { ...exp('shop', 'web'), spec: { targetClusters: ['a/b/c/one'], serviceAccountName: 'shop/api' } };
    const both = localService(svc('shop', 'web'), [slice('shop', 'web')], narrow as never, undefined, mcs)!;
    expect(both.export).toEqual({ serviceAccountName: 'shop/api' });
    expect(both.exportedAt).toBe('2026-01-01T00:00:00Z');
    expect(localService(svc('shop', 'web'), [slice('shop', 'web')], undefined)?.export).toBeUndefined();
  });
});
