import { describe, expect, it } from 'vitest';
import { endpointSlice, service, serviceExport } from '../../test/helpers/objects.js';
import { decide, staticCatalog } from './catalog.js';
import { catalogFrom } from './live-catalog.js';

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
});
