// Export → import aggregation: from what every member exports, what every member must import. Pure: the same
// views in, the same desired state out, whatever happened before — which is what makes the controller converge.
// The rules are the MCS ones (KEP-1645): ports are the union, merged by name then by (protocol, port); type and
// session affinity come from the oldest export; whatever conflicts is reported on every export of the service,
// and the older definition keeps the traffic. Exports of both APIs count alike: a flomesh.io ServiceExport, and
// an MCS one (multicluster.x-k8s.io, no spec: every member, no rules), converted by mcsExportView and marked. A
// service with at least one flomesh.io export gets flomesh.io ServiceImports, one with at least one MCS export
// gets MCS ones, with the same ports, type, address, session affinity and exporting clusters.
import { isIP } from 'node:net';
import { type Service, type ServicePort, clusterIPsOf } from '../api/core.js';
import { isClusterMachinery } from '../api/protected.js';
import { API_VERSION, type ClusterKey, type ImportEndpoint, type ImportPort, type ServiceExport, type ServiceImportSpec } from '../api/flomesh.js';
import type { McsServiceExport, McsServiceImportSpec } from '../api/mcs.js';
import { MANAGED_BY, MANAGED_BY_LABEL } from '../sources/source.js';
import { isRecord } from '../util/objects.js';

/** Which API an export was made with. */
export type ExportApi = 'flomesh' | 'mcs';

/** An export as the aggregation takes it: a flomesh.io ServiceExport (api unset), or an MCS one (mcsExportView). */
export type ExportView = ServiceExport & { api?: ExportApi };

/** An MCS ServiceExport in the aggregation's shape: no rules, no targetClusters, the default load balancer. */
export const mcsExportView = (e: McsServiceExport): ExportView => ({
  apiVersion: API_VERSION,
  kind: 'ServiceExport',
  metadata: e.metadata,
  spec: { loadBalancer: 'RoundRobinLoadBalancer' },
  api: 'mcs',
});

/** What the controller knows of one member: its identity, gateway and last known exports and services. */
export interface MemberView {
  /** metadata.name of its Cluster resource. */
  name: string;
  key: ClusterKey;
  /** Where other clusters reach it; without one it cannot serve exports. */
  gateway: { host: string; port: number } | undefined;
  /** Of both APIs (a Service exported both ways is one export of the member's, see mergeExports). */
  exports: ExportView[];
  services: Service[];
}

/** A condition as the aggregation decides it; the controller adds the transition time. */
export interface ConditionState {
  type: 'Valid' | 'Conflict' | 'Ready';
  status: 'True' | 'False';
  reason: string;
  message: string;
}

export interface DesiredImport {
  namespace: string;
  name: string;
  spec: ServiceImportSpec;
  /** The exporting clusters, as status.clusters. */
  clusters: ClusterKey[];
}

/** A selector-less Service that makes the import's ordinary name resolve in a member without one of its own. */
export interface DerivedService {
  namespace: string;
  name: string;
  spec: { type: 'ClusterIP'; clusterIP?: 'None'; ports: ServicePort[]; sessionAffinity: 'None' | 'ClientIP' };
}

/** An MCS ServiceImport as it must be in one member. */
export interface DesiredMcsImport {
  namespace: string;
  name: string;
  spec: McsServiceImportSpec;
  /** The exporting clusters' ids (their Cluster resources' names), as status.clusters. */
  clusters: string[];
}

export interface MemberDesired {
  /** `namespace/name` → flomesh.io import (services with at least one flomesh.io export) */
  imports: Map<string, DesiredImport>;
  /** `namespace/name` → MCS import (services with at least one MCS export); absent: none */
  mcsImports?: Map<string, DesiredMcsImport>;
  /** `namespace/name` → derived Service */
  services: Map<string, DerivedService>;
  /** `namespace/name` of this member's flomesh.io ServiceExports → their Valid and Conflict conditions */
  exportConditions: Map<string, ConditionState[]>;
  /** `namespace/name` of this member's MCS ServiceExports → their Valid and Conflict conditions (Ready: member-plan) */
  mcsExportConditions?: Map<string, ConditionState[]>;
}

/**
 * Whether ecnet created this object and may change or delete it. A Service with a selector is a user's even
 * if it carries the label (e.g. a user applied their own Service over a derived one, keeping its labels).
 */
export const isManaged = (o: { kind?: string; metadata: { labels?: Record<string, string> }; spec?: unknown }): boolean =>
  o.metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY &&
  !(o.kind === 'Service' && Object.keys((o.spec as { selector?: Record<string, string> } | undefined)?.selector ?? {}).length > 0);

const keyOf = (ns: string | undefined, name: string) => `${ns ?? 'default'}/${name}`;

interface Candidate {
  member: MemberView;
  export: ServiceExport;
  /** The APIs the member exports the service with. */
  apis: Set<ExportApi>;
  service: Service;
  type: ServiceImportSpec['type'];
  ports: (ServicePort & { protocol: ImportPort['protocol'] })[];
}

/** Oldest first; ties broken by cluster name so the order never depends on arrival. */
const byAge = (a: Candidate, b: Candidate): number => {
  const ta = a.export.metadata.creationTimestamp ?? '';
  const tb = b.export.metadata.creationTimestamp ?? '';
  return ta < tb ? -1 : ta > tb ? 1 : a.member.name < b.member.name ? -1 : a.member.name > b.member.name ? 1 : 0;
};

const portLabel = (p: ServicePort) => `${p.name ? `${p.name} ` : ''}${p.port}/${p.protocol ?? 'TCP'}`;

function validity(member: MemberView, exp: ServiceExport, service: Service | undefined): ConditionState {
  const what = `${exp.metadata.namespace ?? 'default'}/${exp.metadata.name}`;
  if (isClusterMachinery(exp.metadata.namespace, exp.metadata.name)) {
    return { type: 'Valid', status: 'False', reason: 'ClusterMachinery', message: `${what} is the cluster's own (the API server's Service, or kube-system), which ecnet never exports` };
  }
  if (!service) return { type: 'Valid', status: 'False', reason: 'NoService', message: `no Service ${what} in ${member.key}` };
  if (service.spec.type === 'ExternalName') {
    return { type: 'Valid', status: 'False', reason: 'InvalidServiceType', message: `Service ${what} is of type ExternalName, which cannot be exported` };
  }
  if (!service.spec.ports?.length) return { type: 'Valid', status: 'False', reason: 'NoPorts', message: `Service ${what} has no ports` };
  if (!member.gateway) {
    return { type: 'Valid', status: 'False', reason: 'NoGateway', message: `Cluster ${member.name} has no spec.gatewayHost, so other clusters cannot reach it` };
  }
  return { type: 'Valid', status: 'True', reason: 'Valid', message: `exported from ${member.key}` };
}

/** The rule path the gateway serves for a port (ErieCanal puts it in the endpoint's target). */
function pathFor(exp: ServiceExport, port: number): string {
  const rule = exp.spec.rules?.find((r) => r.portNumber === port) ?? exp.spec.rules?.find((r) => r.portNumber === undefined);
  return rule?.path ?? '/';
}

interface MergedPort {
  port: ImportPort;
  from: Candidate[];
}

interface Aggregate {
  /** Valid, non-conflicting contributions, oldest first. */
  ports: MergedPort[];
  spec: Omit<ServiceImportSpec, 'ports' | 'ips'>;
  conditions: Map<Candidate, ConditionState[]>;
}

function aggregateService(candidates: Candidate[]): Aggregate {
  const sorted = [...candidates].sort(byAge);
  const oldest = sorted[0]!;
  const spec: Aggregate['spec'] = {
    type: oldest.type,
    sessionAffinity: oldest.service.spec.sessionAffinity ?? 'None',
    ...(oldest.service.spec.sessionAffinityConfig ? { sessionAffinityConfig: oldest.service.spec.sessionAffinityConfig } : {}),
    ...(oldest.export.spec.serviceAccountName ? { serviceAccountName: oldest.export.spec.serviceAccountName } : {}),
  };
  const ports: MergedPort[] = [];
  const conflicts: { reason: string; message: string }[] = [];
  for (const c of sorted) {
    if (c.type !== spec.type) {
      conflicts.push({ reason: 'TypeConflict', message: `${c.member.key} exports a ${c.type} service, ${oldest.member.key} (oldest) a ${spec.type} one; ${c.member.key} is left out` });
      continue;
    }
    const affinity = c.service.spec.sessionAffinity ?? 'None';
    if (affinity !== spec.sessionAffinity) {
      conflicts.push({ reason: 'SessionAffinityConflict', message: `${c.member.key} has sessionAffinity ${affinity}, ${oldest.member.key} (oldest, used) ${spec.sessionAffinity}` });
    } else if (JSON.stringify(c.service.spec.sessionAffinityConfig ?? null) !== JSON.stringify(spec.sessionAffinityConfig ?? null)) {
      conflicts.push({ reason: 'SessionAffinityConfigConflict', message: `${c.member.key} has another sessionAffinityConfig than ${oldest.member.key} (oldest, used)` });
    }
    for (const p of c.ports) {
      const name = p.name ?? '';
      const byName = ports.find((m) => (m.port.name ?? '') === name);
      const same = (m: MergedPort) => m.port.port === p.port && m.port.protocol === p.protocol;
      const target = byName ?? ports.find(same);
      if (!target && ports.length && (!p.name || ports.some((m) => !m.port.name))) {
        // Kubernetes names every port of a Service with more than one: an unnamed one cannot join others.
        conflicts.push({ reason: 'PortConflict', message: `${c.member.key} exports port ${portLabel(p)}, which cannot be merged with ${ports.map((m) => portLabel(m.port)).join(', ')} (a Service with several ports must name them all)` });
      } else if (!target) {
        ports.push({ port: { ...(p.name ? { name: p.name } : {}), protocol: p.protocol, ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}), port: p.port, endpoints: [] }, from: [c] });
      } else if (same(target) && (target.port.name ?? '') === name) {
        target.from.push(c);
      } else {
        conflicts.push({ reason: 'PortConflict', message: `${c.member.key} exports port ${portLabel(p)}, which clashes with ${portLabel(target.port)} of ${target.from[0]!.member.key} (older, used)` });
      }
    }
  }
  const conditions = new Map<Candidate, ConditionState[]>();
  const conflict: ConditionState = conflicts.length
    ? { type: 'Conflict', status: 'True', reason: conflicts[0]!.reason, message: conflicts.map((x) => x.message).join('; ') }
    : { type: 'Conflict', status: 'False', reason: 'NoConflicts', message: 'no conflicts with other exports of this service' };
  for (const c of sorted) conditions.set(c, [validity(c.member, c.export, c.service), conflict]);
  return { ports, spec, conditions };
}

/**
 * A member's exports by service: one per `namespace/name`, with the APIs it was made with. A Service exported
 * both ways counts once: the flomesh.io export's spec without targetClusters (the MCS export exports to every
 * member), as old as the older of the two.
 */
function mergeExports(exports: ExportView[]): Map<string, { export: ServiceExport; apis: Set<ExportApi> }> {
  const out = new Map<string, { export: ServiceExport; apis: Set<ExportApi> }>();
  for (const e of exports) {
    const key = keyOf(e.metadata.namespace, e.metadata.name);
    const api = e.api ?? 'flomesh';
    const { api: _api, ...plain } = e;
    const cur = out.get(key);
    if (!cur) {
      out.set(key, { export: plain, apis: new Set([api]) });
      continue;
    }
    if (cur.apis.has(api)) continue;
    cur.apis.add(api);
    const flomesh = api === 'flomesh' ? plain : cur.export;
    const other = api === 'flomesh' ? cur.export : plain;
    const a = flomesh.metadata.creationTimestamp ?? '';
    const b = other.metadata.creationTimestamp ?? '';
    const { targetClusters: _t, ...spec } = flomesh.spec;
    cur.export = { ...flomesh, metadata: { ...flomesh.metadata, ...(b && (!a || b < a) ? { creationTimestamp: b } : {}) }, spec };
  }
  return out;
}

/** The MCS ServiceImport spec of an aggregated service: the flomesh.io import's, without endpoints, one address at most. */
function mcsSpecOf(spec: Omit<ServiceImportSpec, 'ports' | 'ips'>, ips: string[], ports: ImportPort[]): McsServiceImportSpec {
  return {
    type: spec.type,
    ports: ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), protocol: p.protocol, ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}), port: p.port })),
    ...(spec.type === 'ClusterSetIP' && ips.length ? { ips: [ips[0]!] } : {}),
    sessionAffinity: spec.sessionAffinity,
    ...(spec.sessionAffinityConfig ? { sessionAffinityConfig: spec.sessionAffinityConfig } : {}),
  };
}

const exportedTo = (exp: ServiceExport, member: MemberView): boolean => {
  const targets = exp.spec.targetClusters ?? [];
  return targets.length === 0 || targets.includes(member.key);
};

function endpointOf(c: Candidate, port: number): ImportEndpoint {
  const gw = c.member.gateway!;
  return { clusterKey: c.member.key, target: { host: gw.host, ip: isIP(gw.host) ? gw.host : '', port: gw.port, path: pathFor(c.export, port) } };
}

const PROTOCOLS = new Set(['TCP', 'UDP', 'SCTP']);

/**
 * Objects as they may arrive: a ServiceExport with no spec (the usual MCS style, which the CRD allows), or in
 * local mode a hand-written Service with odd ports. Only well-formed ports are kept; the rest is left out.
 */
function sane(m: MemberView): MemberView {
  const exports = m.exports.map((e) => (isRecord(e.spec) ? e : { ...e, spec: {} as ServiceExport['spec'] }));
  const services = m.services.map((s) => {
    const spec = isRecord(s.spec) ? s.spec : {};
    const ports = (Array.isArray(spec.ports) ? spec.ports : []).filter(
      (p): p is ServicePort =>
        isRecord(p) && Number.isInteger(p.port) && (p.port as number) >= 1 && (p.port as number) <= 65535 && (p.protocol === undefined || PROTOCOLS.has(p.protocol as string)),
    );
    return { ...s, spec: { ...spec, ports } };
  });
  return { ...m, exports, services };
}

/** Every member's desired imports, derived Services and export conditions, from the members' current views. */
export function aggregate(input: MemberView[]): Map<string, MemberDesired> {
  const members = input.map(sane);
  const out = new Map<string, MemberDesired>();
  for (const m of members) out.set(m.name, { imports: new Map(), mcsImports: new Map(), services: new Map(), exportConditions: new Map(), mcsExportConditions: new Map() });
  /** Conditions go to the export of each API the member exports the service with. */
  const setConditions = (member: string, key: string, apis: Set<ExportApi>, conds: ConditionState[]) => {
    const d = out.get(member)!;
    if (apis.has('flomesh')) d.exportConditions.set(key, conds);
    if (apis.has('mcs')) d.mcsExportConditions!.set(key, conds);
  };

  // Every export, checked against its member's own Service (never against one ecnet derived there).
  const byService = new Map<string, Candidate[]>();
  const allServices = new Map<string, Map<string, Service>>();
  for (const m of members) {
    const all = new Map(m.services.map((s) => [keyOf(s.metadata.namespace, s.metadata.name), s]));
    allServices.set(m.name, all);
    for (const [key, { export: exp, apis }] of mergeExports(m.exports)) {
      const found = all.get(key);
      const service = found && !isManaged(found) ? found : undefined;
      const valid = validity(m, exp, service);
      if (valid.status === 'False' || !service) {
        setConditions(m.name, key, apis, [valid, { type: 'Conflict', status: 'False', reason: 'NoConflicts', message: 'not exported' }]);
        continue;
      }
      const type = service.spec.clusterIP === 'None' ? 'Headless' : 'ClusterSetIP';
      const ports = (service.spec.ports ?? []).map((p) => ({ ...p, protocol: p.protocol ?? 'TCP' }));
      const list = byService.get(key) ?? [];
      list.push({ member: m, export: exp, apis, service, type, ports });
      byService.set(key, list);
    }
  }

  for (const [key, candidates] of byService) {
    let agg: Aggregate;
    try {
      agg = aggregateService(candidates);
    } catch (err) {
      // Whatever slipped past the checks above stays with its service: the others are still served.
      for (const c of candidates) {
        setConditions(c.member.name, key, c.apis, [
          { type: 'Valid', status: 'False', reason: 'InvalidSpec', message: `cannot aggregate this service: ${(err as Error).message}` },
          { type: 'Conflict', status: 'False', reason: 'NoConflicts', message: 'not exported' },
        ]);
      }
      continue;
    }
    for (const [c, conds] of agg.conditions) setConditions(c.member.name, key, c.apis, conds);
    const apis = new Set(candidates.flatMap((c) => [...c.apis]));
    const [namespace, name] = key.split('/') as [string, string];
    for (const importer of members) {
      const ports: ImportPort[] = [];
      const clusters = new Set<ClusterKey>();
      const names = new Set<string>();
      for (const mp of agg.ports) {
        const from = mp.from.filter((c) => exportedTo(c.export, importer)).sort((a, b) => (a.member.key < b.member.key ? -1 : 1));
        if (!from.length) continue;
        for (const c of from) {
          clusters.add(c.member.key);
          names.add(c.member.name);
        }
        ports.push({ ...mp.port, endpoints: from.map((c) => endpointOf(c, mp.port.port)) });
      }
      if (!ports.length) continue;
      const desired = out.get(importer.name)!;
      // The import's address is the ClusterIP of whatever Service carries the name there: the user's own, or ours.
      const local = allServices.get(importer.name)!.get(key);
      const ips = local ? clusterIPsOf(local) : [];
      // The flomesh.io import is also the node agents' routing record (its ports carry the exporters' gateways):
      // written for every exported service, whichever API exported it.
      desired.imports.set(key, { namespace, name, spec: { ...agg.spec, ...(ips.length ? { ips } : {}), ports }, clusters: [...clusters].sort() });
      if (apis.has('mcs')) desired.mcsImports!.set(key, { namespace, name, spec: mcsSpecOf(agg.spec, ips, ports), clusters: [...names].sort() });
      if (!local || isManaged(local)) {
        desired.services.set(key, {
          namespace,
          name,
          spec: {
            type: 'ClusterIP',
            ...(agg.spec.type === 'Headless' ? { clusterIP: 'None' as const } : {}),
            ports: ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), protocol: p.protocol, ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}), port: p.port, targetPort: p.port })),
            sessionAffinity: agg.spec.sessionAffinity,
          },
        });
      }
    }
  }
  return out;
}
