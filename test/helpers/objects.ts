// Resources as tests write them: a Service, its EndpointSlice, a ServiceExport, ServiceImport and
// GlobalTrafficPolicy, with the fields ecnet reads and defaults for the rest. One place, so that tests of the
// agent, the gateway, local mode and the benchmarks describe a cluster the same way.
import type { EndpointSlice, Service, ServicePort } from '../../src/api/core.js';
import type { ClusterKey, GlobalTrafficPolicy, ServiceExport, ServiceImport } from '../../src/api/flomesh.js';
import type { KubeObject } from '../../src/sources/source.js';

export const clusterKey = (n: number): ClusterKey => `default/default/default/cluster-${n}`;

export function service(namespace: string, name: string, o: { clusterIP?: string; clusterIPs?: string[]; ports?: ServicePort[]; type?: Service['spec']['type']; labels?: Record<string, string>; selector?: Record<string, string> } = {}): Service {
  const clusterIP = o.clusterIP ?? o.clusterIPs?.[0] ?? '10.96.0.10';
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace, ...(o.labels ? { labels: o.labels } : {}) },
    spec: { clusterIP, ...(o.clusterIPs ? { clusterIPs: o.clusterIPs } : {}), ...(o.type ? { type: o.type } : {}), ...(o.selector ? { selector: o.selector } : {}), ports: o.ports ?? [{ name: 'http', port: 80, protocol: 'TCP' }] },
  };
}

/** An EndpointSlice of `service`; an address is ready unless given as [address, false]. */
export function endpointSlice(namespace: string, service: string, addresses: (string | [string, boolean])[], o: { name?: string; port?: number; portName?: string; addressType?: string } = {}): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    addressType: o.addressType ?? 'IPv4',
    metadata: { name: o.name ?? `${service}-1`, namespace, labels: { 'kubernetes.io/service-name': service } },
    endpoints: addresses.map((a) => (typeof a === 'string' ? { addresses: [a], conditions: { ready: true } } : { addresses: [a[0]], conditions: { ready: a[1] } })),
    ports: [{ name: o.portName ?? 'http', port: o.port ?? 8080, protocol: 'TCP' }],
  };
}

export function serviceExport(namespace: string, name: string, spec: Partial<ServiceExport['spec']> = {}, created?: string): ServiceExport {
  return { apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceExport', metadata: { name, namespace, ...(created ? { creationTimestamp: created } : {}) }, spec } as ServiceExport;
}

/** A ServiceImport of `ips`, each port served by the `gateways` of exporting clusters. */
export function serviceImport(namespace: string, name: string, o: { ips?: string[]; ports?: number[]; gateways?: { cluster: number; ip: string; port: number }[]; type?: 'ClusterSetIP' | 'Headless' } = {}): ServiceImport {
  const gateways = o.gateways ?? [{ cluster: 1, ip: '192.168.0.2', port: 8091 }];
  return {
    apiVersion: 'flomesh.io/v1alpha1',
    kind: 'ServiceImport',
    metadata: { name, namespace },
    spec: {
      type: o.type ?? 'ClusterSetIP',
      ...(o.ips ? { ips: o.ips } : {}),
      ports: (o.ports ?? [80]).map((port) => ({ port, protocol: 'TCP', endpoints: gateways.map((g) => ({ clusterKey: clusterKey(g.cluster), target: { host: g.ip, ip: g.ip, port: g.port, path: '/' } })) })),
    },
  } as unknown as ServiceImport;
}

export function trafficPolicy(namespace: string, name: string, lbType: 'Locality' | 'ActiveActive' | 'FailOver' = 'ActiveActive', targets?: number[]): GlobalTrafficPolicy {
  return {
    apiVersion: 'flomesh.io/v1alpha1',
    kind: 'GlobalTrafficPolicy',
    metadata: { name, namespace },
    spec: { lbType, ...(targets ? { targets: targets.map((n) => ({ clusterKey: clusterKey(n) })) } : {}) },
  } as unknown as GlobalTrafficPolicy;
}

/** Any of the above where a Source takes a KubeObject. */
export const kube = (o: Service | EndpointSlice | ServiceExport | ServiceImport | GlobalTrafficPolicy): KubeObject => o as unknown as KubeObject;
