// What a gateway knows of its own cluster's services, and what it answers a tunnel request with. Pure: the
// catalog is a snapshot the agent keeps up to date (Services, their ready endpoints, ServiceExports).
import type { Endpoint } from '../api/core.js';
import type { ClusterKey, ServiceExportSpec } from '../api/flomesh.js';
import { STATUS, type ServiceTarget } from '../tunnel/protocol.js';


export interface LocalService {
  namespace: string;
  name: string;
  /** Service port → ready endpoints (address and target port) for it. */
  ports: Map<number, Endpoint[]>;
  /** The ServiceExport's spec, undefined when the service is not exported. */
  export: ServiceExportSpec | undefined;
  /** When it was exported (the ServiceExport's creationTimestamp): the older export keeps a shared ingress path. */
  exportedAt?: string;
  /**
   * Its ingress rules serve no ingress caller: its flomesh.io export names targetClusters, which an MCS export
   * beside it lifts for the cluster set (export.targetClusters is then gone), not for callers outside it.
   */
  ingressClosed?: true;
}

/** Whether the ingress rules of a service serve plain HTTP callers (who prove no cluster): not for an export to some clusters only. */
export const ingressOpen = (s: LocalService): boolean => !s.ingressClosed && !s.export?.targetClusters?.length;

/** Whether a catalog is worth serving from: listed once (synced), and its watches working (healthy). */
export interface CatalogReadiness {
  synced: boolean;
  healthy: boolean;
  /** Why not, when not. */
  reason?: string;
}

/** The local services, as the agent last saw them. */
export interface Catalog {
  get(namespace: string, name: string): LocalService | undefined;
  all(): Iterable<LocalService>;
  /** The exported services with ingress path rules: what a plain HTTP request is matched against. */
  withIngress(): Iterable<LocalService>;
  /** Synced and healthy (a catalog without it, as a static one, always is). */
  readiness?(): CatalogReadiness;
}

export const hasIngress = (s: LocalService): boolean => (s.export?.rules ?? []).some((r) => r.path !== undefined);

/** A catalog over a fixed list (tests, and the agent's snapshots). */
export function staticCatalog(services: LocalService[]): Catalog {
  const byKey = new Map(services.map((s) => [`${s.namespace}/${s.name}`, s]));
  const ingress = [...byKey.values()].filter(hasIngress);
  return { get: (ns, name) => byKey.get(`${ns}/${name}`), all: () => byKey.values(), withIngress: () => ingress };
}

/** Who calls, as a gateway with cluster identities knows it: the cluster from its certificate, the workload it asserted. */
export interface Caller {
  cluster: ClusterKey;
  workload: string | undefined;
}

export type Decision = { status: 200; endpoints: Endpoint[] } | { status: number; reason: string };

/**
 * The answer to CONNECT <service>.<namespace>…:<port>. A port is exported when the export has no rules, or a
 * rule names that port (or no port); with a `caller` (cluster identities), to its cluster and workload only
 * as the export's targetClusters and serviceAccountName say. Nothing tells an outsider more than the status: 404 unknown, 403 not
 * exported, 503 no ready endpoint.
 */
export function decide(catalog: Catalog, t: ServiceTarget, caller?: Caller): Decision {
  const svc = catalog.get(t.namespace, t.service);
  if (!svc) return { status: STATUS.unknown, reason: `no service ${t.namespace}/${t.service} in this cluster` };
  if (!svc.export) return { status: STATUS.notExported, reason: `${t.namespace}/${t.service} is not exported` };
  if (caller) {
    // An export for some clusters only (targetClusters) opens to those, proven by their certificate.
    const clusters = svc.export.targetClusters ?? [];
    if (clusters.length && !clusters.includes(caller.cluster)) return { status: STATUS.notExported, reason: `${t.namespace}/${t.service} is not exported to ${caller.cluster}` };
    // serviceAccountName ('*' or unset: any workload): `name` in the export's namespace, or `namespace/name`.
    const wanted = svc.export.serviceAccountName;
    if (wanted && wanted !== '*') {
      const allowed = wanted.includes('/') ? wanted : `${t.namespace}/${wanted}`;
      if (caller.workload !== allowed) {
        return { status: STATUS.notExported, reason: `${t.namespace}/${t.service} is exported to ServiceAccount ${allowed} only, not ${caller.workload ?? 'a caller without one (a host-network process)'}` };
      }
    }
  }
  if (!portExported(svc, t.port)) return { status: STATUS.notExported, reason: `port ${t.port} of ${t.namespace}/${t.service} is not exported` };
  const endpoints = svc.ports.get(t.port) ?? [];
  if (!endpoints.length) return { status: STATUS.noEndpoint, reason: `${t.namespace}/${t.service}:${t.port} has no ready endpoint` };
  return { status: 200, endpoints };
}

/** A port is exported when the export has no rules, or a rule names that port (or no port). */
export function portExported(svc: LocalService, port: number): boolean {
  const rules = svc.export?.rules ?? [];
  return svc.ports.has(port) && (rules.length === 0 || rules.some((r) => r.portNumber === undefined || r.portNumber === port));
}

/** One service in a gateway's /healthz/services answer: ready (some exported port has an endpoint in), and per port how many. */
export interface ServiceHealth {
  ready: boolean;
  ports: Record<string, number>;
}

/**
 * What a gateway tells a caller of its services' health (/healthz/services): the services it would open a
 * tunnel to for that caller's cluster, as decide() judges it (exported; with a `callerCluster`, exported to
 * it by targetClusters; the workload rule is not asked: a node's proxy carries many), each exported port with
 * its ready endpoints not ejected (`isOut`). At most `limit` services, by name; `truncated` says some were left
 * out. Pure.
 */
export function servicesHealth(catalog: Catalog, callerCluster: ClusterKey | undefined, isOut: (group: string, e: Endpoint) => boolean, limit: number): { services: Map<string, ServiceHealth>; truncated: boolean } {
  const offered: LocalService[] = [];
  for (const svc of catalog.all()) {
    if (!svc.export) continue;
    const clusters = svc.export.targetClusters ?? [];
    if (callerCluster !== undefined && clusters.length && !clusters.includes(callerCluster)) continue;
    offered.push(svc);
  }
  const key = (s: LocalService) => `${s.namespace}/${s.name}`;
  offered.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  const services = new Map<string, ServiceHealth>();
  for (const svc of offered.slice(0, Math.max(0, limit))) {
    const ports: Record<string, number> = {};
    let ready = false;
    for (const [port, endpoints] of svc.ports) {
      if (!portExported(svc, port)) continue;
      const group = `${key(svc)}:${port}`;
      const n = endpoints.reduce((a, e) => a + (isOut(group, e) ? 0 : 1), 0);
      ports[String(port)] = n;
      if (n > 0) ready = true;
    }
    services.set(key(svc), { ready, ports });
  }
  return { services, truncated: offered.length > services.size };
}
