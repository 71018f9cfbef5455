// What a node's datapath and proxy must hold, from the resources of its cluster: a ClusterIP:port of an
// imported service is redirected to the node proxy while its policy may send a connection to another cluster
// (or refuses one that kube-proxy would serve here),
// and the proxy's route for it names the service, the exporting clusters' gateways, the GlobalTrafficPolicy and
// the service's ready local endpoints. When the policy keeps every connection here (no policy or Locality,
// with ready local endpoints) the address is left to kube-proxy, as before the service was exported.
// Pure: resources in, desired state out.
import { isIP, isIPv4 } from 'node:net';
import { type Service, clusterIPsOf } from '../api/core.js';
import { ipBytes, readAddress } from '../bpf/address.js';
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
 * not loopback, unspecified or link-local (a metadata service), nor one of `denied` (canonical addresses, the
 * dialling node's own):
 * an endpoint anyone can write must not open a way to what only the node itself should reach.
 */
export function dialable(ip: unknown, denied: ReadonlySet<string> = new Set()): ip is string {
  // A zone (fe80::1%eth0) or anything but a plain address: no. Then the bytes and their canonical text, so that
  // no spelling of an address (::ffff:7f00:1, 0:0:0:0:0:0:0:1) slips past the checks below.
  if (typeof ip !== 'string' || ip.includes('%') || !isIP(ip)) return false;
  let b: Buffer;
  try {
    b = ipBytes(ip);
  } catch {
    return false;
  }
  const canonical = readAddress(b, 0);
  if (denied.has(canonical)) return false;
  if (isIPv4(canonical)) return b[12] !== 127 && b[12] !== 0 && !(b[12] === 169 && b[13] === 254);
  const w0 = b.readUInt16BE(0);
  if (b.subarray(0, 12).every((x) => x === 0)) return false; // ::/96: ::, ::1, and the old IPv4-compatible forms
  if (w0 === 0x64 && b.readUInt16BE(2) === 0xff9b) return false; // NAT64: any IPv4 address, through the node's NAT64
  if ((w0 & 0xffc0) === 0xfe80 || (w0 & 0xff00) === 0xff00) return false; // link-local, multicast
  return canonical !== 'fd00:ec2::254'; // a cloud's IPv6 metadata address
}

/** EndpointSlices by `namespace/service-name` (their label): one pass, so a rebuild is not services × slices. */
export function slicesByService(slices: EndpointSlice[]): Map<string, EndpointSlice[]> {
  const out = new Map<string, EndpointSlice[]>();
  for (const s of slices) {
    const name = s.metadata.labels?.[SERVICE_NAME_LABEL];
    if (name === undefined) continue;
    const k = `${s.metadata.namespace ?? 'default'}/${name}`;
    const list = out.get(k);
    if (list) list.push(s);
    else out.set(k, [s]);
  }
  return out;
}

/**
 * Ready endpoints of a local Service, per service port (resolving the target port through the slices' port
 * names). `slices`: all of them, or the index of slicesByService.
 */
export function localEndpoints(service: Service | undefined, slices: EndpointSlice[] | Map<string, EndpointSlice[]>, denied?: ReadonlySet<string>): Map<number, Endpoint[]> {
  const out = new Map<number, Endpoint[]>();
  if (!service) return out;
  const candidates = Array.isArray(slices) ? slices : (slices.get(`${service.metadata.namespace ?? 'default'}/${service.metadata.name}`) ?? []);
  const mine = candidates.filter(
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
  /** Kept between calls (the agent's): imports whose inputs did not change are not computed again. */
  memo?: DesiredMemo;
}): DesiredNode {
  const key = (ns: string | undefined, name: string) => `${ns ?? 'default'}/${name}`;
  const policies = new Map(input.policies.map((p) => [key(p.metadata.namespace, p.metadata.name), p.spec]));
  const services = new Map(input.services.map((s) => [key(s.metadata.namespace, s.metadata.name), s]));
  const redirects: RedirectEntry[] = [];
  const routes = new Map<string, Route>();
  const kept = new Map<string, Route>();
  const problems: { import: string; error: string }[] = [];
  const sliceIndex = slicesByService(input.endpointSlices);
  // In namespace/name order: when two imports claim one ip:port, or more than fit, the rule below is stable.
  // (Keys computed once, compared by code unit: localeCompare in a sort of 10k is most of a reconcile.)
  const imports = input.imports.map((i) => [key(i.metadata.namespace, i.metadata.name), i] as const).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, i]) => i);
  const seen = new Set<string>();
  for (const imp of imports) {
    if (imp.spec.type === 'Headless') continue; // no ClusterIP to redirect
    const k = key(imp.metadata.namespace, imp.metadata.name);
    const svc = services.get(k);
    const policy = policies.get(k);
    const slices = sliceIndex.get(k) ?? [];
    // Unchanged inputs (informers replace an object when it changes): the last answer, not a new one.
    const deps = [imp, policy, svc, input.localCluster, ...slices];
    let part = input.memo?.get(k);
    if (!part || part.deps.length !== deps.length || part.deps.some((d, i) => d !== deps[i])) {
      part = { deps, ...importPart(k, imp, svc, policy, slices, input.localCluster) };
      input.memo?.set(k, part);
    }
    seen.add(k);
    problems.push(...part.problems);
    // What the datapath can take: each ip:port once (the first import in namespace/name order keeps it), IP
    // addresses only, at most `capacity` entries; the rest is left out and reported, never the whole set.
    for (const e of part.redirects) {
      const rk = routeKey(e.ip, e.port);
      if (!isIP(e.ip)) problems.push({ import: k, error: `${e.ip} is not an IP address: not redirected` });
      else if (routes.has(rk)) problems.push({ import: k, error: `${rk} is redirected for ${routes.get(rk)!.namespace}/${routes.get(rk)!.service} already: left out` });
      else if (redirects.length >= (input.capacity ?? Infinity)) problems.push({ import: k, error: `the datapath holds ${input.capacity} redirects: ${rk} left out` });
      else {
        redirects.push(e);
        routes.set(rk, part.routes.get(rk)!);
      }
    }
    for (const [a, b] of part.kept) if (!kept.has(a)) kept.set(a, b);
  }
  if (input.memo) for (const k of input.memo.keys()) if (!seen.has(k)) input.memo.delete(k);
  return { redirects, routes, kept, problems };
}

interface ImportPart {
  redirects: RedirectEntry[];
  routes: Map<string, Route>;
  kept: Map<string, Route>;
  problems: { import: string; error: string }[];
}

/** Per import: the inputs its part was computed from, and the part. */
export type DesiredMemo = Map<string, ImportPart & { deps: unknown[] }>;

/** One import's redirects, routes and kept addresses, or its problems; never throws. */
function importPart(k: string, imp: ServiceImport, svc: Service | undefined, policy: GlobalTrafficPolicy['spec'] | undefined, slices: EndpointSlice[], localCluster: ClusterKey): ImportPart {
  const out: ImportPart = { redirects: [], routes: new Map(), kept: new Map(), problems: [] };
  const [namespace, name] = [imp.metadata.namespace, imp.metadata.name];
  if (isClusterMachinery(namespace, name)) {
    out.problems.push({ import: k, error: "the cluster's own Service (the API server's, or kube-system): never redirected" });
    return out;
  }
  // Only this cluster's own ClusterIP of the same-named Service (the derived Service, or the exporter's own):
  // an import must not take over any other address (another team's VIP, an external database).
  const own = new Set(svc ? clusterIPsOf(svc) : []);
  const all = Array.isArray(imp.spec.ips) ? imp.spec.ips : [];
  const ips = all.filter((ip) => own.has(ip));
  const foreign = all.filter((ip) => !own.has(ip));
  if (foreign.length) out.problems.push({ import: k, error: `spec.ips ${foreign.join(', ')} ${foreign.length > 1 ? 'are' : 'is'} not the ClusterIP of Service ${k} in this cluster: not redirected` });
  // One import (or its policy) that does not hold together costs only itself, not the node's other services.
  try {
    const local = localEndpoints(svc, slices);
    const redirects: RedirectEntry[] = [];
    const routes = new Map<string, Route>();
    const kept = new Map<string, Route>();
    for (const port of imp.spec.ports ?? []) {
      if ((port.protocol ?? 'TCP') !== 'TCP') continue; // the datapath redirects TCP only (UDP comes later)
      const route: Route = {
        service: name,
        namespace: namespace ?? 'default',
        port: port.port,
        exporters: port.endpoints.map((e) => ({ clusterKey: e.clusterKey, gateway: { host: e.target.ip || e.target.host, port: e.target.port } })),
        policy,
        localEndpoints: local.get(port.port) ?? [],
      };
      const leaves = needsNodeProxy({ localCluster, localEndpoints: route.localEndpoints.length > 0, exporters: route.exporters, policy });
      for (const ip of ips) {
        if (!leaves) {
          kept.set(routeKey(ip, port.port), route);
          continue;
        }
        redirects.push({ ip, port: port.port, id: fnv1a(`${k}:${port.port}`) });
        routes.set(routeKey(ip, port.port), route);
      }
    }
    Object.assign(out, { redirects, routes, kept });
  } catch (err) {
    out.problems.push({ import: k, error: (err as Error).message });
  }
  return out;
}
