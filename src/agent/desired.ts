// What a node's datapath and proxy must hold, from the resources of its cluster: a ClusterIP:port of an
// imported service is redirected to the node proxy while its policy may send a connection to another cluster
// (or refuses one that kube-proxy would serve here),
// and the proxy's route for it names the service, the exporting clusters' gateways, the GlobalTrafficPolicy and
// the service's ready local endpoints. When the policy keeps every connection here (no policy or Locality,
// with ready local endpoints) the address is left to kube-proxy, as before the service was exported.
// Pure: resources in, desired state out.
import type { Service } from '../api/core.js';
import type { ClusterKey, GlobalTrafficPolicy, ServiceImport } from '../api/flomesh.js';
import type { Endpoint } from '../gateway/catalog.js';
import { needsNodeProxy } from '../policy/plan.js';
import type { Route } from '../proxy/proxy.js';

/** discovery.k8s.io/v1 EndpointSlice, the fields read. */
export interface EndpointSlice {
  apiVersion: 'discovery.k8s.io/v1';
  kind: 'EndpointSlice';
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  endpoints?: { addresses: string[]; conditions?: { ready?: boolean } }[];
  ports?: { name?: string; port?: number; protocol?: string }[];
}

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface RedirectEntry {
  ip: string;
  port: number;
  /** A stable number for the service port, shown by `ecnet bpf dump`. */
  id: number;
}

export interface DesiredNode {
  redirects: RedirectEntry[];
  /** `ip:port` → route, for each redirect */
  routes: Map<string, Route>;
  /** `ip:port` → route of imported addresses left to kube-proxy (the policy keeps them in this cluster). */
  kept: Map<string, Route>;
  /** Imports left out because they (or their policy) could not be read. */
  problems: { import: string; error: string }[];
}

export const routeKey = (ip: string, port: number): string => `${ip}:${port}`;

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Ready endpoints of a local Service, per service port (resolving the target port through the slices' port names). */
export function localEndpoints(service: Service | undefined, slices: EndpointSlice[]): Map<number, Endpoint[]> {
  const out = new Map<number, Endpoint[]>();
  if (!service) return out;
  const mine = slices.filter((s) => s.metadata.labels?.[SERVICE_NAME_LABEL] === service.metadata.name && s.metadata.namespace === service.metadata.namespace);
  for (const sp of service.spec.ports ?? []) {
    if ((sp.protocol ?? 'TCP') !== 'TCP') continue;
    const eps: Endpoint[] = [];
    for (const slice of mine) {
      const p = (slice.ports ?? []).find((x) => (x.name ?? '') === (sp.name ?? '') && (x.protocol ?? 'TCP') === 'TCP');
      if (p?.port === undefined) continue;
      for (const e of slice.endpoints ?? []) {
        if (e.conditions?.ready === false) continue;
        for (const ip of e.addresses) eps.push({ ip, port: p.port });
      }
    }
    out.set(sp.port, eps);
  }
  return out;
}

export function desiredNode(input: {
  localCluster: ClusterKey;
  imports: ServiceImport[];
  policies: GlobalTrafficPolicy[];
  services: Service[];
  endpointSlices: EndpointSlice[];
}): DesiredNode {
  const key = (ns: string | undefined, name: string) => `${ns ?? 'default'}/${name}`;
  const policies = new Map(input.policies.map((p) => [key(p.metadata.namespace, p.metadata.name), p.spec]));
  const services = new Map(input.services.map((s) => [key(s.metadata.namespace, s.metadata.name), s]));
  const redirects: RedirectEntry[] = [];
  const routes = new Map<string, Route>();
  const kept = new Map<string, Route>();
  const problems: { import: string; error: string }[] = [];
  for (const imp of input.imports) {
    if (imp.spec.type === 'Headless') continue; // no ClusterIP to redirect
    const k = key(imp.metadata.namespace, imp.metadata.name);
    // One import (or its policy) that does not hold together costs only itself, not the node's other services.
    try {
      const r = new Map<string, Route>();
      const kp = new Map<string, Route>();
      const rd: RedirectEntry[] = [];
      const local = localEndpoints(services.get(k), input.endpointSlices);
      for (const port of imp.spec.ports ?? []) {
        if ((port.protocol ?? 'TCP') !== 'TCP') continue; // the datapath redirects TCP only (UDP comes later)
        const route: Route = {
          service: imp.metadata.name,
          namespace: imp.metadata.namespace ?? 'default',
          port: port.port,
          exporters: port.endpoints.map((e) => ({ clusterKey: e.clusterKey, gateway: { host: e.target.ip || e.target.host, port: e.target.port } })),
          policy: policies.get(k),
          localEndpoints: local.get(port.port) ?? [],
        };
        const leaves = needsNodeProxy({ localCluster: input.localCluster, localEndpoints: route.localEndpoints.length > 0, exporters: route.exporters, policy: route.policy });
        for (const ip of imp.spec.ips ?? []) {
          if (!leaves) {
            kp.set(routeKey(ip, port.port), route);
            continue;
          }
          rd.push({ ip, port: port.port, id: fnv1a(`${k}:${port.port}`) });
          r.set(routeKey(ip, port.port), route);
        }
      }
      redirects.push(...rd);
      for (const [a, b] of r) routes.set(a, b);
      for (const [a, b] of kp) kept.set(a, b);
    } catch (err) {
      problems.push({ import: k, error: (err as Error).message });
    }
  }
  return { redirects, routes, kept, problems };
}
