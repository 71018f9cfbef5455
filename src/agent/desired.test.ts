import { describe, expect, it } from 'vitest';
import type { Service } from '../api/core.js';
import type { ServiceImport } from '../api/flomesh.js';
import { type EndpointSlice, desiredNode, localEndpoints } from './desired.js';

const imp = (ips: string[] | undefined, extra: Partial<ServiceImport['spec']> = {}): ServiceImport => ({
  apiVersion: 'flomesh.io/v1alpha1',
  kind: 'ServiceImport',
  metadata: { name: 'httpbin', namespace: 'httpbin' },
  spec: {
    type: 'ClusterSetIP',
    sessionAffinity: 'None',
    ...(ips ? { ips } : {}),
    ports: [
      {
        protocol: 'TCP',
        port: 8080,
        endpoints: [{ clusterKey: 'default/default/default/cluster-1', target: { host: 'gw-1.example.org', ip: '', port: 80, path: '/' } }],
      },
      { protocol: 'UDP', port: 53, endpoints: [] },
    ],
    ...extra,
  },
});
const service: Service = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'httpbin', namespace: 'httpbin' },
  spec: { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 8080, targetPort: 'web' }] },
};
const slice = (ready: boolean[]): EndpointSlice => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: 'httpbin-abc', namespace: 'httpbin', labels: { 'kubernetes.io/service-name': 'httpbin' } },
  endpoints: ready.map((r, i) => ({ addresses: [`10.42.0.${i + 1}`], conditions: { ready: r } })),
  ports: [{ name: 'http', port: 9080, protocol: 'TCP' }],
});

describe('a node\'s desired state', () => {
  it('redirects every ClusterIP:port of an imported service (TCP only), routed to the exporters with the policy', () => {
    const d = desiredNode({
      localCluster: 'default/default/default/cluster-2',
      imports: [imp(['10.96.0.10'])],
      policies: [{ apiVersion: 'flomesh.io/v1alpha1', kind: 'GlobalTrafficPolicy', metadata: { name: 'httpbin', namespace: 'httpbin' }, spec: { lbType: 'ActiveActive' } }],
      services: [],
      endpointSlices: [],
    });
    expect(d.redirects.map((r) => `${r.ip}:${r.port}`)).toEqual(['10.96.0.10:8080']);
    expect(d.routes.get('10.96.0.10:8080')).toMatchObject({
      service: 'httpbin',
      namespace: 'httpbin',
      port: 8080,
      exporters: [{ clusterKey: 'default/default/default/cluster-1', gateway: { host: 'gw-1.example.org', port: 80 } }],
      policy: { lbType: 'ActiveActive' },
      localEndpoints: [],
    });
  });

  it('no address yet (the derived Service not created) or headless: nothing to redirect', () => {
    const base = { localCluster: 'x/x/x/x', policies: [], services: [], endpointSlices: [] };
    expect(desiredNode({ ...base, imports: [imp(undefined)] }).redirects).toEqual([]);
    expect(desiredNode({ ...base, imports: [imp(['10.96.0.10'], { type: 'Headless' })] }).redirects).toEqual([]);
  });

  it('local endpoints: ready ones only, with the target port the slices name', () => {
    expect(localEndpoints(service, [slice([true, false, true])]).get(8080)).toEqual([
      { ip: '10.42.0.1', port: 9080 },
      { ip: '10.42.0.3', port: 9080 },
    ]);
  });
});
