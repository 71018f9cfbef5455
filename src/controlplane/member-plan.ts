// The writes one member needs: from what it holds now (as its informers list it) and what the aggregation says
// it must hold, the ServiceImports, derived Services and ServiceExport conditions to create, replace, delete or
// update, as plain data. Pure: no I/O, no clock, no logger; the controller runs the plan (its in-flight memo,
// concurrency and retries). ecnet never replaces or deletes an object it does not manage, nor a user's Service.
import type { Namespace, Service } from '../api/core.js';
import type { ServiceExport, ServiceImport } from '../api/flomesh.js';
import { type EventNote, type KindRef, Kinds, type KubeObject, MANAGED_BY, MANAGED_BY_LABEL, type Precondition, objectKey } from '../sources/source.js';
import { type DerivedService, type MemberDesired, isManaged } from './aggregate.js';
import { canonical, conditionsDiffer, mergeConditions } from './conditions.js';

/** What a member holds now: its informers' objects (all, or those of the services a pass looks at). */
export interface MemberHolds {
  imports: ServiceImport[];
  services: Service[];
  exports: ServiceExport[];
}

/** One step of a write; a write's steps run in order and a failing one ends it. */
export type WriteStep =
  | {
      /** create: the member had none when planned; replace: the object seen. Both are an apply. */
      op: 'create' | 'replace';
      object: KubeObject;
      /** `absent` or the uid of the object seen; none for ServiceImports (as ecnet has always written them). */
      precondition?: Precondition;
      /** Created first if the member has no namespace of that name (Kubernetes refuses objects in a missing one). */
      ensureNamespace?: Namespace;
      /** spec.ips becomes the ClusterIPs of the Service the step before wrote (when it got any). */
      ipsOfPrevious?: true;
    }
  | { op: 'delete'; kind: KindRef; name: string; namespace: string | undefined; precondition?: { uid: string } }
  | { op: 'status'; kind: KindRef; name: string; namespace: string | undefined; status: unknown }
  /** A Kubernetes Event about `object`, best effort (not waited for). */
  | { op: 'event'; object: KubeObject; note: EventNote };

export interface PlannedWrite {
  /** `member|Kind|namespace/name`: the in-flight memo's key (an informer event of that object clears it). */
  key: string;
  /** What the write brings about: while the same key and content are in flight, the write is not queued again. */
  content: string;
  steps: WriteStep[];
}

export interface MemberPlan {
  /** In the order they are to be queued: imports, import deletions, Services, Service deletions, conditions. */
  writes: PlannedWrite[];
  /** `namespace/name` of ServiceImports the member must hold but that exist unmanaged: left alone. */
  leftAlone: string[];
}

export interface PlanInput {
  /** The member's name (its Cluster's), for the memo keys. */
  member: string;
  holds: MemberHolds;
  desired: MemberDesired;
  /** RFC 3339, the transition time of conditions that change. */
  now: string;
  /** canonical(), possibly memoised for the informers' (immutable) objects. */
  canonicalOf?: (o: object) => string;
}

const managedLabels = { [MANAGED_BY_LABEL]: MANAGED_BY };
const byKey = <T extends KubeObject>(list: T[]): Map<string, T> => new Map(list.map((o) => [objectKey(o), o]));
const uidOf = (o: KubeObject): { precondition?: { uid: string } } => (o.metadata.uid ? { precondition: { uid: o.metadata.uid } } : {});

const namespaceObject = (name: string): Namespace => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { ...managedLabels } } });

function derivedObject(d: DerivedService): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: d.name, namespace: d.namespace, labels: { ...managedLabels, 'flomesh.io/service-import': d.name } },
    spec: d.spec,
  };
}

const apply = (op: 'create' | 'replace', object: KubeObject, precondition?: Precondition): WriteStep => ({
  op,
  object,
  ...(precondition ? { precondition } : {}),
  ...(object.metadata.namespace ? { ensureNamespace: namespaceObject(object.metadata.namespace) } : {}),
});

/** Deletes the very object seen (its uid, when it has one). */
const remove = (kind: KindRef, cur: KubeObject): WriteStep => ({ op: 'delete', kind, name: cur.metadata.name, namespace: cur.metadata.namespace, ...uidOf(cur) });
const deletion = (member: string, kind: KindRef, cur: KubeObject): PlannedWrite => ({ key: `${member}|${kind.kind}|${objectKey(cur)}`, content: 'deleted', steps: [remove(kind, cur)] });

/** A member whose Cluster was deleted: every import and Service ecnet wrote there goes. */
export function planCleanup(member: string, holds: Pick<MemberHolds, 'imports' | 'services'>): PlannedWrite[] {
  return [...holds.imports.filter(isManaged).map((o) => deletion(member, Kinds.ServiceImport, o)), ...holds.services.filter(isManaged).map((o) => deletion(member, Kinds.Service, o))];
}

/** A held Service's spec as far as ecnet decides it, with what the API server defaults filled in. */
function comparable(s: Service['spec']): { ports: unknown[]; sessionAffinity: string; headless: boolean } {
  return {
    ports: (s.ports ?? []).map((p) => ({ ...(p.name ? { name: p.name } : {}), protocol: p.protocol ?? 'TCP', ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}), port: p.port, targetPort: p.targetPort ?? p.port })),
    sessionAffinity: s.sessionAffinity ?? 'None',
    headless: s.clusterIP === 'None',
  };
}

/** The writes that make `holds` what `desired` says, managed objects only. */
export function planMember(input: PlanInput): MemberPlan {
  const { member, desired } = input;
  const canonicalOf = input.canonicalOf ?? canonical;
  const heldImports = byKey(input.holds.imports);
  const heldServices = byKey(input.holds.services);
  const writes: PlannedWrite[] = [];
  const leftAlone: string[] = [];

  // ServiceImports: spec, then status.clusters.
  /** Derived Services created together with their import (so the import gets its ips in one write). */
  const withImport = new Set<string>();
  for (const [key, d] of desired.imports) {
    const cur = heldImports.get(key);
    const spec = d.spec;
    const status = { clusters: d.clusters.map((cluster) => ({ cluster })) };
    const memo = `${member}|ServiceImport|${key}`;
    if (cur && !isManaged(cur)) {
      leftAlone.push(key);
      continue;
    }
    if (!cur || canonicalOf(cur.spec as object) !== canonical(spec)) {
      const obj: ServiceImport = { apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceImport', metadata: { name: d.name, namespace: d.namespace, labels: { ...managedLabels } }, spec };
      const derived = !spec.ips && !heldServices.has(key) ? desired.services.get(key) : undefined;
      const steps: WriteStep[] = [];
      if (derived) {
        // The derived Service first: its ClusterIP is the import's address.
        withImport.add(key);
        steps.push(apply('create', derivedObject(derived), { absent: true }));
      }
      steps.push({ ...apply(cur ? 'replace' : 'create', obj), ...(derived ? { ipsOfPrevious: true as const } : {}) });
      steps.push({ op: 'status', kind: Kinds.ServiceImport, name: d.name, namespace: d.namespace, status });
      writes.push({ key: memo, content: canonical(spec), steps });
    } else if (canonicalOf(cur.status ?? {}) !== canonical(status)) {
      writes.push({ key: memo, content: `status:${canonical(status)}`, steps: [{ op: 'status', kind: Kinds.ServiceImport, name: d.name, namespace: d.namespace, status }] });
    }
  }
  for (const [key, cur] of heldImports) {
    if (!desired.imports.has(key) && isManaged(cur)) writes.push(deletion(member, Kinds.ServiceImport, cur));
  }

  // Derived Services: only where none of the user's stands.
  for (const [key, d] of desired.services) {
    if (withImport.has(key)) continue;
    const cur = heldServices.get(key);
    if (cur && !isManaged(cur)) continue;
    const want = { ports: d.spec.ports, sessionAffinity: d.spec.sessionAffinity, headless: d.spec.clusterIP === 'None' };
    const have = cur && comparable(cur.spec);
    if (have && canonical(have) === canonical(want)) continue;
    const obj = derivedObject(d);
    const steps: WriteStep[] =
      cur && have && have.headless !== want.headless
        ? // ClusterIP ↔ headless cannot be changed in place (the API server refuses): replace the Service.
          [remove(Kinds.Service, cur), apply('create', obj, { absent: true })]
        : // Only the object seen (a user may have created theirs since), or only if none exists.
          [cur ? apply('replace', obj, { uid: cur.metadata.uid ?? '' }) : apply('create', obj, { absent: true })];
    writes.push({ key: `${member}|Service|${key}`, content: canonical(want), steps });
  }
  for (const [key, cur] of heldServices) {
    if (!desired.services.has(key) && isManaged(cur)) writes.push(deletion(member, Kinds.Service, cur));
  }

  // ServiceExport conditions (and an Event when an export becomes invalid or starts conflicting).
  for (const [key, exp] of byKey(input.holds.exports)) {
    const want = desired.exportConditions.get(key);
    if (!want) continue;
    const have = exp.status?.conditions;
    if (!conditionsDiffer(have, want, exp.metadata.generation)) continue;
    const conditions = mergeConditions(have, want, input.now, exp.metadata.generation);
    const becameConflict = want.some((c) => c.type === 'Conflict' && c.status === 'True') && !have?.some((c) => c.type === 'Conflict' && c.status === 'True');
    const bad = want.find((c) => c.status === 'True' && c.type === 'Conflict') ?? want.find((c) => c.type === 'Valid' && c.status === 'False');
    const steps: WriteStep[] = [{ op: 'status', kind: Kinds.ServiceExport, name: exp.metadata.name, namespace: exp.metadata.namespace, status: { conditions } }];
    if (bad && (becameConflict || bad.type === 'Valid')) steps.push({ op: 'event', object: exp, note: { type: 'Warning', reason: bad.reason, message: bad.message } });
    writes.push({ key: `${member}|ServiceExport|${key}`, content: `status:${canonical(want)}`, steps });
  }
  return { writes, leftAlone };
}
