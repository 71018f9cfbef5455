// What a node's datapath and proxy must hold, from the resources of its cluster: a ClusterIP:port of an
// imported service is redirected to the node proxy while its policy may send a connection to another cluster
// (or refuses one that kube-proxy would serve here),
// and the proxy's route for it names the service, the exporting clusters' gateways, the GlobalTrafficPolicy and
// the service's ready local endpoints. When the policy keeps every connection here (no policy or Locality,
// with ready local endpoints) the address is left to kube-proxy, as before the service was exported.
// Pure: resources in, desired state out.
import { isIP, isIPv4 } from 'node:net';
import { type Service, clusterIPsOf } from '../api/core.js';
import type { ClusterKey, GlobalTrafficPolicy, ServiceImport } from '../api/flomesh.js';
import type { Endpoint } from '../gateway/catalog.js';
import { isClusterMachinery } from '../api/protected.js';
import { needsNodeProxy } from '../policy/plan.js';
import type { Route } from '../proxy/proxy.js';

/** discovery.k8s.io/v1 EndpointSlice, the fields read. */
export interface EndpointSlice {
  apiVersion: 'discovery.k8s.io/v1';
  kind: 'EndpointSlice';
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  /** IPv4, IPv6 or FQDN; FQDN slices are never dialled (a name would be resolved by whoever dials it). */
  addressType?: string;
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

/**
 * Whether an EndpointSlice address may be dialled: an IP address (never a name, which would be resolved), and
 * not loopback, unspecified or link-local (a metadata service), nor one of `denied` (the dialling node's own):
 * an endpoint anyone can write must not open a way to what only the node itself should reach.
 */
export function dialable(ip: unknown, denied: ReadonlySet<string> = new Set()): ip is string {
  if (typeof ip !== 'string' || !isIP(ip) || denied.has(ip)) return false;
  const v4 = isIPv4(ip) ? ip : /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1];
  if (v4 !== undefined) return !/^(127|0)\./.test(v4) && !/^169\.254\./.test(v4);
  const low = ip.toLowerCase();
  return low !== '::1' && low !== '::' && !/^fe[89ab][0-9a-f]:/.test(low);
}

/** Ready endpoints of a local Service, per service port (resolving the target port through the slices' port names). */
export function localEndpoints(service: Service | undefined, slices: EndpointSlice[], denied?: ReadonlySet<string>): Map<number, Endpoint[]> {
  const out = new Map<number, Endpoint[]>();
  if (!service) return out;
  const mine = slices.filter(
    (s) => s.metadata.labels?.[SERVICE_NAME_LABEL] === service.metadata.name && s.metadata.namespace === service.metadata.namespace && (s.addressType === undefined || s.addressType === 'IPv4' || s.addressType === 'IPv6'),
  );
  for (const sp of service.spec.ports ?? []) {
    if ((sp.protocol ?? 'TCP') !== 'TCP') continue;
    const eps: Endpoint[] = [];
    for (const slice of mine) {
      const p = (slice.ports ?? []).find((x) => (x.name ?? '') === (sp.name ?? '') && (x.protocol ?? 'TCP') === 'TCP');
      if (!p || !Number.isInteger(p.port) || p.port! < 1 || p.port! > 65535) continue;
      for (const e of slice.endpoints ?? []) {
        if (e.conditions?.ready === false) continue;
        for (const ip of Array.isArray(e.addresses) ? e.addresses : []) if (dialable(ip, denied)) eps.push({ ip, port: p.port! });
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
  /** How many redirects the datapath holds (its map's capacity); default: no limit. */
  capacity?: number;
}): DesiredNode {
  const key = (ns: string | undefined, name: string) => `${ns ?? 'default'}/${name}`;
  const policies = new Map(input.policies.map((p) => [key(p.metadata.namespace, p.metadata.name), p.spec]));
  const services = new Map(input.services.map((s) => [key(s.metadata.namespace, s.metadata.name), s]));
  const redirects: RedirectEntry[] = [];
  const routes = new Map<string, Route>();
  const kept = new Map<string, Route>();
  const problems: { import: string; error: string }[] = [];
  // In namespace/name order: when two imports claim one ip:port, or more than fit, the rule below is stable.
  const imports = [...input.imports].sort((a, b) => key(a.metadata.namespace, a.metadata.name).localeCompare(key(b.metadata.namespace, b.metadata.name)));
  for (const imp of imports) {
    if (imp.spec.type === 'Headless') continue; // no ClusterIP to redirect
    const k = key(imp.metadata.namespace, imp.metadata.name);
    if (isClusterMachinery(imp.metadata.namespace, imp.metadata.name)) {
      problems.push({ import: k, error: "the cluster's own Service (the API server's, or kube-system): never redirected" });
      continue;
    }
    // Only this cluster's own ClusterIP of the same-named Service (the derived Service, or the exporter's own):
    // an import must not take over any other address (another team's VIP, an external database).
    const svc = services.get(k);
    const own = new Set(svc ? clusterIPsOf(svc) : []);
    const ips = (Array.isArray(imp.spec.ips) ? imp.spec.ips : []).filter((ip) => own.has(ip));
    const foreign = (Array.isArray(imp.spec.ips) ? imp.spec.ips : []).filter((ip) => !own.has(ip));
    if (foreign.length) problems.push({ import: k, error: `spec.ips ${foreign.join(', ')} ${foreign.length > 1 ? 'are' : 'is'} not the ClusterIP of Service ${k} in this cluster: not redirected` });
    // One import (or its policy) that does not hold together costs only itself, not the node's other services.
    try {
      const r = new Map<string, Route>();
      const kp = new Map<string, Route>();
      const rd: RedirectEntry[] = [];
      const local = localEndpoints(svc, input.endpointSlices);
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
        for (const ip of ips) {
          if (!leaves) {
            kp.set(routeKey(ip, port.port), route);
            continue;
          }
          rd.push({ ip, port: port.port, id: fnv1a(`${k}:${port.port}`) });
          r.set(routeKey(ip, port.port), route);
        }
      }
      // What the datapath can take: each ip:port once (the first import in namespace/name order keeps it), IP
      // addresses only, at most `capacity` entries; the rest is left out and reported, never the whole set.
      for (const e of rd) {
        const rk = routeKey(e.ip, e.port);
        if (!isIP(e.ip)) problems.push({ import: k, error: `${e.ip} is not an IP address: not redirected` });
        else if (routes.has(rk)) problems.push({ import: k, error: `${rk} is redirected for ${routes.get(rk)!.namespace}/${routes.get(rk)!.service} already: left out` });
        else if (redirects.length >= (input.capacity ?? Infinity)) problems.push({ import: k, error: `the datapath holds ${input.capacity} redirects: ${rk} left out` });
        else {
          redirects.push(e);
          routes.set(rk, r.get(rk)!);
        }
      }
      for (const [a, b] of kp) if (!kept.has(a)) kept.set(a, b);
    } catch (err) {
      problems.push({ import: k, error: (err as Error).message });
    }
  }
  return { redirects, routes, kept, problems };
}
