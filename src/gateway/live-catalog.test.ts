import { describe, expect, it } from 'vitest';
import type { Service } from '../api/core.js';
import type { ServiceExport } from '../api/flomesh.js';
import type { EndpointSlice } from '../api/core.js';
import { decide, staticCatalog } from './catalog.js';
import { catalogFrom } from './live-catalog.js';

const svc = (namespace: string, name: string): Service => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace }, spec: { clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443 }] } });
const slice = (namespace: string, name: string): EndpointSlice => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  addressType: 'IPv4',
  metadata: { name: `${name}-1`, namespace, labels: { 'kubernetes.io/service-name': name } },
  endpoints: [{ addresses: ['172.18.0.2'], conditions: { ready: true } }],
  ports: [{ name: 'https', port: 6443, protocol: 'TCP' }],
});
const exp = (namespace: string, name: string) => ({ apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceExport', metadata: { name, namespace }, spec: {} }) as unknown as ServiceExport;

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
