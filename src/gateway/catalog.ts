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
}

/** The local services, as the agent last saw them. */
export interface Catalog {
  get(namespace: string, name: string): LocalService | undefined;
  all(): Iterable<LocalService>;
  /** The exported services with ingress path rules: what a plain HTTP request is matched against. */
  withIngress(): Iterable<LocalService>;
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
  const rules = svc.export.rules ?? [];
  const portExported = svc.ports.has(t.port) && (rules.length === 0 || rules.some((r) => r.portNumber === undefined || r.portNumber === t.port));
  if (!portExported) return { status: STATUS.notExported, reason: `port ${t.port} of ${t.namespace}/${t.service} is not exported` };
  const endpoints = svc.ports.get(t.port) ?? [];
  if (!endpoints.length) return { status: STATUS.noEndpoint, reason: `${t.namespace}/${t.service}:${t.port} has no ready endpoint` };
  return { status: 200, endpoints };
}
