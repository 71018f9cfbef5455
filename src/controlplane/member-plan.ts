// The writes one member needs: from what it holds now (as its informers list it) and what the aggregation says
// it must hold, the ServiceImports, derived Services and ServiceExport conditions to create, replace, delete or
// update, and the EndpointSlices of its MCS imports, as plain data. Pure: no I/O, no clock, no logger; the controller runs the plan (its in-flight memo,
// concurrency and retries). ecnet never replaces or deletes an object it does not manage, nor a user's Service.
import { createHash } from 'node:crypto';
import type { EndpointSlice, Namespace, Service } from '../api/core.js';
import { IMPORTED_LABEL, type ServiceExport, type ServiceImport } from '../api/flomesh.js';
import { MCS_API_VERSION, MCS_GROUP, type McsServiceExport, type McsServiceImport } from '../api/mcs.js';
import { type EventNote, type KindRef, Kinds, type KubeObject, MANAGED_BY, MANAGED_BY_LABEL, type Precondition, objectKey } from '../sources/source.js';
import { type DerivedService, type MemberDesired, isManaged } from './aggregate.js';
import { type ConditionInput, canonical, conditionsDiffer, mergeConditions, wellFormed } from './conditions.js';

/** What a member holds now: its informers' objects (all, or those of the services a pass looks at). */
export interface MemberHolds {
  imports: ServiceImport[];
  services: Service[];
  exports: ServiceExport[];
  /** The MCS API's (multicluster.x-k8s.io); absent: none. */
  mcsImports?: McsServiceImport[];
  mcsExports?: McsServiceExport[];
  /**
   * The EndpointSlices of MCS imports ecnet wrote (those labelled `endpointslice.kubernetes.io/managed-by` ecnet);
   * absent: they are not known (not listed yet, or not readable), and none is written or deleted.
   */
  mcsSlices?: EndpointSlice[];
}

/** KEP-1645's label tying an EndpointSlice to the ServiceImport of that name (never kubernetes.io/service-name). */
export const MCS_SERVICE_NAME_LABEL = 'multicluster.kubernetes.io/service-name';
/** The label saying which controller manages an EndpointSlice (the EndpointSlice controller's is endpointslice-controller.k8s.io). */
export const SLICE_MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
/** What the controller's EndpointSlice informer in a member lists: the slices it wrote. */
export const MCS_SLICE_SELECTOR = `${SLICE_MANAGED_BY_LABEL}=${MANAGED_BY}`;

/**
 * The name of the EndpointSlice of the MCS import `name`: `<name>-ecnet`, within 63 characters (a longer name is
 * cut, with a hash of the whole name so that two long names sharing a start do not collide).
 */
export function mcsSliceName(name: string): string {
  const plain = `${name}-ecnet`;
  if (plain.length <= 63) return plain;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${name.slice(0, 63 - '-ecnet'.length - hash.length - 1)}-${hash}-ecnet`;
}

/** Whether ecnet wrote this EndpointSlice (both its managed-by labels), and so may replace or delete it. */
export const isManagedSlice = (s: KubeObject): boolean => s.metadata.labels?.[SLICE_MANAGED_BY_LABEL] === MANAGED_BY && s.metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY;

/**
 * The EndpointSlice of a ClusterSetIP MCS import with its address: one endpoint, the ClusterSetIP (connections to
 * it are what ecnet's datapath takes to the node proxy, which tunnels them by policy), ready, with the import's
 * ports. Undefined for a Headless import or one without its address yet.
 */
export function mcsSliceOf(i: { name: string; namespace: string; spec: McsServiceImport['spec'] }): EndpointSlice | undefined {
  const ip = i.spec.type === 'ClusterSetIP' ? i.spec.ips?.[0] : undefined;
  if (!ip) return undefined;
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: mcsSliceName(i.name),
      namespace: i.namespace,
      labels: { [MCS_SERVICE_NAME_LABEL]: i.name, [SLICE_MANAGED_BY_LABEL]: MANAGED_BY, ...managedLabels },
    },
    addressType: ip.includes(':') ? 'IPv6' : 'IPv4',
    endpoints: [{ addresses: [ip], conditions: { ready: true, serving: true, terminating: false } }],
    ports: i.spec.ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), protocol: p.protocol ?? 'TCP', port: p.port, ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}) })),
  };
}

/** A slice as far as ecnet decides it, with what the API server defaults (a port's name "", protocol TCP) filled in. */
function sliceComparable(s: EndpointSlice): unknown {
  return {
    labels: { [MCS_SERVICE_NAME_LABEL]: s.metadata.labels?.[MCS_SERVICE_NAME_LABEL], [SLICE_MANAGED_BY_LABEL]: s.metadata.labels?.[SLICE_MANAGED_BY_LABEL], [MANAGED_BY_LABEL]: s.metadata.labels?.[MANAGED_BY_LABEL], service: s.metadata.labels?.['kubernetes.io/service-name'] ?? null },
    addressType: s.addressType,
    endpoints: (s.endpoints ?? []).map((e) => ({ addresses: e.addresses, ready: e.conditions?.ready ?? null, serving: e.conditions?.serving ?? null, terminating: e.conditions?.terminating ?? null })),
    ports: (s.ports ?? []).map((p) => ({ name: p.name ?? '', protocol: p.protocol ?? 'TCP', port: p.port ?? null, appProtocol: p.appProtocol ?? null })),
  };
}

const managedLabels = { [MANAGED_BY_LABEL]: MANAGED_BY };


/**
 * A kind as the in-flight memo's keys (`member|Kind|namespace/name`) and the write metrics name it: the MCS API's
 * kinds, whose names are flomesh.io's, as McsServiceImport and McsServiceExport.
 */
export const memoKind = (k: { group: string; kind: string }): string => (k.group === MCS_GROUP ? `Mcs${k.kind}` : k.kind);

/** One ServiceImport (of either API) a member must hold. */
interface ImportWant {
  kind: KindRef;
  cur: KubeObject | undefined;
  object: KubeObject;
  spec: object;
  /** Its spec has the address it will keep (or needs none). */
  hasIps: boolean;
  status: object;
  /** At most this many addresses (the MCS API's ips holds one). */
  ipsLimit?: number;
}

/** The status write of an import: against the object seen, or the one the write's spec step wrote (see #perform). */
const statusStep = (w: ImportWant): WriteStep => ({ op: 'status', kind: w.kind, name: w.object.metadata.name, namespace: w.object.metadata.namespace, status: w.status, ...(w.cur ? { seen: w.cur } : {}) });

/** One step of a write; a write's steps run in order and a failing one ends it. */
export type WriteStep =
  | {
      /** create: the member had none when planned; replace: the object seen. Both are an apply. */
      op: 'create' | 'replace';
      object: KubeObject;
      /**
       * `absent` (a create: one that appeared since the plan, another writer's, is not overwritten) or the uid of
       * the object seen; none for a replace of a ServiceImport (ecnet's own, by its label).
       */
      precondition?: Precondition;
      /** Created first if the member has no namespace of that name (Kubernetes refuses objects in a missing one). */
      ensureNamespace?: Namespace;
      /** spec.ips becomes the ClusterIPs of the Service an earlier step of the write created (when it got any). */
      ipsOfPrevious?: true;
      /** With ipsOfPrevious: at most this many of them. */
      ipsLimit?: number;
      /** The object as the plan saw it (null: none), so the source need not read it first (ApplyOptions.seen). */
      seen?: KubeObject | null;
    }
  | { op: 'delete'; kind: KindRef; name: string; namespace: string | undefined; precondition?: { uid: string } }
  | { op: 'status'; kind: KindRef; name: string; namespace: string | undefined; status: unknown; seen?: KubeObject }
  /** Sets (a string) or removes (null) these labels and nothing else: a user's Service's IMPORTED_LABEL. */
  | { op: 'label'; kind: KindRef; name: string; namespace: string | undefined; labels: Record<string, string | null>; bestEffort?: true }
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
  /** In the order they are to be queued: imports, import deletions, Services, Service deletions, EndpointSlices, conditions. */
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
  /** Whether every readable member holds the MCS import of `namespace/name` as desired (the Ready condition). */
  mcsReady?: (key: string) => boolean;
  /** canonical(), possibly memoised for the informers' (immutable) objects. */
  canonicalOf?: (o: object) => string;
}

const byKey = <T extends KubeObject>(list: T[]): Map<string, T> => new Map(list.map((o) => [objectKey(o), o]));
const uidOf = (o: KubeObject): { precondition?: { uid: string } } => (o.metadata.uid ? { precondition: { uid: o.metadata.uid } } : {});

const namespaceObject = (name: string): Namespace => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { ...managedLabels } } });

function derivedObject(d: DerivedService): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: d.name, namespace: d.namespace, labels: { ...managedLabels, [IMPORTED_LABEL]: d.name } },
    spec: d.spec,
  };
}

const apply = (op: 'create' | 'replace', object: KubeObject, precondition?: Precondition, seen?: KubeObject): Extract<WriteStep, { op: 'create' | 'replace' }> => ({
  op,
  object,
  ...(op === 'create' ? { seen: null } : seen ? { seen } : {}),
  ...(precondition ? { precondition } : {}),
  ...(object.metadata.namespace ? { ensureNamespace: namespaceObject(object.metadata.namespace) } : {}),
});

/** Deletes the very object seen (its uid, when it has one). */
const remove = (kind: KindRef, cur: KubeObject): WriteStep => ({ op: 'delete', kind, name: cur.metadata.name, namespace: cur.metadata.namespace, ...uidOf(cur) });
const deletion = (member: string, kind: KindRef, cur: KubeObject): PlannedWrite => ({ key: `${member}|${memoKind(kind)}|${objectKey(cur)}`, content: 'deleted', steps: [remove(kind, cur)] });

/** A member whose Cluster was deleted: every import, Service and EndpointSlice ecnet wrote there goes. */
export function planCleanup(member: string, holds: Pick<MemberHolds, 'imports' | 'services' | 'mcsImports' | 'mcsSlices'>): PlannedWrite[] {
  return [
    ...holds.imports.filter(isManaged).map((o) => deletion(member, Kinds.ServiceImport, o)),
    ...(holds.mcsImports ?? []).filter(isManaged).map((o) => deletion(member, Kinds.McsServiceImport, o)),
    ...(holds.mcsSlices ?? []).filter(isManagedSlice).map((o) => deletion(member, Kinds.EndpointSlice, o)),
    ...holds.services.filter(isManaged).map((o) => deletion(member, Kinds.Service, o)),
    ...holds.services.filter((o) => !isManaged(o) && o.metadata.labels?.[IMPORTED_LABEL] !== undefined).map((o) => labelWrite(member, o, null)),
  ];
}

/** Sets (or, null, removes) IMPORTED_LABEL on a user's Service: that label alone. */
const labelWrite = (member: string, cur: Service, value: string | null): PlannedWrite => ({
  key: `${member}|ServiceLabel|${objectKey(cur)}`,
  content: value ?? 'none',
  steps: [{ op: 'label', kind: Kinds.Service, name: cur.metadata.name, namespace: cur.metadata.namespace, labels: { [IMPORTED_LABEL]: value } }],
});

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
  const heldMcsImports = byKey(input.holds.mcsImports ?? []);
  const writes: PlannedWrite[] = [];
  const leftAlone: string[] = [];
  /** Services (`namespace/name`) whose MCS import exists unmanaged: no slice of ecnet's for them. */
  const foreignMcs = new Set<string>();

  // ServiceImports of both APIs: spec, then status.clusters.
  /** Derived Services created together with their imports (so the imports get their ips in one write). */
  const withImport = new Set<string>();
  /** Users' Services labelled in the write of their import (see below). */
  const labelledWithImport = new Set<string>();
  const keys = new Set([...desired.imports.keys(), ...(desired.mcsImports?.keys() ?? [])]);
  for (const key of keys) {
    const wants: ImportWant[] = [];
    const f = desired.imports.get(key);
    if (f) {
      const obj: ServiceImport = { apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceImport', metadata: { name: f.name, namespace: f.namespace, labels: { ...managedLabels } }, spec: f.spec };
      wants.push({ kind: Kinds.ServiceImport, cur: heldImports.get(key), object: obj, spec: f.spec, hasIps: Boolean(f.spec.ips), status: { clusters: f.clusters.map((cluster) => ({ cluster })) } });
    }
    const m = desired.mcsImports?.get(key);
    if (m) {
      const obj: McsServiceImport = { apiVersion: MCS_API_VERSION, kind: 'ServiceImport', metadata: { name: m.name, namespace: m.namespace, labels: { ...managedLabels } }, spec: m.spec };
      // A Headless import has no address to wait for.
      const hasIps = Boolean(m.spec.ips) || m.spec.type === 'Headless';
      wants.push({ kind: Kinds.McsServiceImport, cur: heldMcsImports.get(key), object: obj, spec: m.spec, hasIps, status: { clusters: m.clusters.map((cluster) => ({ cluster })) }, ipsLimit: 1 });
    }
    const specWrites: ImportWant[] = [];
    for (const w of wants) {
      const memo = `${member}|${memoKind(w.kind)}|${key}`;
      if (w.cur && !isManaged(w.cur)) {
        leftAlone.push(w.kind === Kinds.ServiceImport ? key : `${key} (${w.kind.group})`);
        if (w.kind === Kinds.McsServiceImport) foreignMcs.add(key);
      } else if (!w.cur || canonicalOf(w.cur.spec as object) !== canonical(w.spec)) {
        specWrites.push(w);
      } else if (canonicalOf(w.cur.status ?? {}) !== canonical(w.status)) {
        writes.push({ key: memo, content: `status:${canonical(w.status)}`, steps: [statusStep(w)] });
      }
    }
    if (!specWrites.length) continue;
    const derived = specWrites.some((w) => !w.hasIps) && !heldServices.has(key) ? desired.services.get(key) : undefined;
    if (derived) {
      // The derived Service first: its ClusterIP is the imports' address. One write for all of them.
      withImport.add(key);
      const steps: WriteStep[] = [apply('create', derivedObject(derived), { absent: true })];
      for (const w of specWrites) steps.push({ ...apply(w.cur ? 'replace' : 'create', w.object, w.cur ? undefined : { absent: true }, w.cur), ipsOfPrevious: true as const, ...(w.ipsLimit ? { ipsLimit: w.ipsLimit } : {}) }, statusStep(w));
      writes.push({ key: `${member}|${memoKind(specWrites[0]!.kind)}|${key}`, content: specWrites.map((w) => canonical(w.spec)).join('|'), steps });
    } else {
      // A user's Service of the name without the imported label: labelled first, in the same write, so that no
      // node agent (which watches only labelled Services) sees the import before its Service and reports it
      // NotRedirected. Best effort there: the label write of its own below is retried if this one fails.
      const own = heldServices.get(key);
      const unlabelled = own && !isManaged(own) && own.metadata.labels?.[IMPORTED_LABEL] !== own.metadata.name ? own : undefined;
      for (const w of specWrites) {
        const first = unlabelled && w.kind === Kinds.ServiceImport ? [{ ...labelWrite(member, unlabelled, unlabelled.metadata.name).steps[0]!, bestEffort: true as const }] : [];
        if (first.length) labelledWithImport.add(key);
        writes.push({ key: `${member}|${memoKind(w.kind)}|${key}`, content: canonical(w.spec), steps: [...first, apply(w.cur ? 'replace' : 'create', w.object, w.cur ? undefined : { absent: true }, w.cur), statusStep(w)] });
      }
    }
  }
  for (const [key, cur] of heldImports) {
    if (!desired.imports.has(key) && isManaged(cur)) writes.push(deletion(member, Kinds.ServiceImport, cur));
  }
  for (const [key, cur] of heldMcsImports) {
    if (!desired.mcsImports?.has(key) && isManaged(cur)) writes.push(deletion(member, Kinds.McsServiceImport, cur));
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
          [cur ? apply('replace', obj, { uid: cur.metadata.uid ?? '' }, cur) : apply('create', obj, { absent: true })];
    writes.push({ key: `${member}|Service|${key}`, content: canonical(want), steps });
  }
  for (const [key, cur] of heldServices) {
    if (!desired.services.has(key) && isManaged(cur)) writes.push(deletion(member, Kinds.Service, cur));
  }
  // A user's Service with an import of its name carries IMPORTED_LABEL (what node agents watch by); without
  // one it loses it. Only that label is written.
  for (const [key, cur] of heldServices) {
    if (isManaged(cur) || labelledWithImport.has(key)) continue;
    const want = desired.imports.has(key) ? cur.metadata.name : undefined;
    const have = cur.metadata.labels?.[IMPORTED_LABEL];
    if (have !== want) writes.push(labelWrite(member, cur, want ?? null));
  }

  // EndpointSlices of the MCS imports (KEP-1645): one per ClusterSetIP import with its address, in its namespace.
  // Only when the member's slices are known; only ecnet's are listed, replaced or deleted.
  if (input.holds.mcsSlices) {
    const heldSlices = byKey(input.holds.mcsSlices.filter(isManagedSlice));
    const wantSlices = new Map<string, EndpointSlice>();
    for (const [key, m] of desired.mcsImports ?? []) {
      const slice = foreignMcs.has(key) ? undefined : mcsSliceOf(m);
      if (slice) wantSlices.set(objectKey(slice), slice);
    }
    for (const [key, slice] of wantSlices) {
      const cur = heldSlices.get(key);
      const want = canonical(sliceComparable(slice));
      if (cur && canonical(sliceComparable(cur)) === want) continue;
      // Only the slice seen, or only if there is none (a slice of that name that is not ecnet's is not replaced).
      writes.push({ key: `${member}|${memoKind(Kinds.EndpointSlice)}|${key}`, content: want, steps: [apply(cur ? 'replace' : 'create', slice, cur ? { uid: cur.metadata.uid ?? '' } : { absent: true }, cur)] });
    }
    for (const [key, cur] of heldSlices) if (!wantSlices.has(key)) writes.push(deletion(member, Kinds.EndpointSlice, cur));
  }

  // ServiceExport conditions (and an Event when an export becomes invalid or starts conflicting).
  const conditionWrite = (kind: KindRef, exp: ServiceExport | McsServiceExport, want: ConditionInput[]) => {
    const key = objectKey(exp);
    const have = wellFormed((exp.status as { conditions?: unknown } | undefined)?.conditions);
    if (!conditionsDiffer(have, want, exp.metadata.generation)) return;
    const conditions = mergeConditions(have, want, input.now, exp.metadata.generation);
    const becameConflict = want.some((c) => c.type === 'Conflict' && c.status === 'True') && !have.some((c) => c.type === 'Conflict' && c.status === 'True');
    const bad = want.find((c) => c.status === 'True' && c.type === 'Conflict') ?? want.find((c) => c.type === 'Valid' && c.status === 'False');
    const steps: WriteStep[] = [{ op: 'status', kind, name: exp.metadata.name, namespace: exp.metadata.namespace, status: { conditions }, seen: exp }];
    if (bad && (becameConflict || bad.type === 'Valid')) steps.push({ op: 'event', object: exp, note: { type: 'Warning', reason: bad.reason, message: bad.message } });
    writes.push({ key: `${member}|${memoKind(kind)}|${key}`, content: `status:${canonical(want)}`, steps });
  };
  for (const [key, exp] of byKey(input.holds.exports)) {
    const want = desired.exportConditions.get(key);
    if (want) conditionWrite(Kinds.ServiceExport, exp, want);
  }
  // MCS exports: Valid and Conflict as the aggregation says, and Ready once every readable member holds the import.
  for (const [key, exp] of byKey(input.holds.mcsExports ?? [])) {
    const want = desired.mcsExportConditions?.get(key);
    if (!want) continue;
    const valid = want.find((c) => c.type === 'Valid')?.status === 'True';
    const ready: ConditionInput = !valid
      ? { type: 'Ready', status: 'False', reason: 'Invalid', message: 'not exported (see the Valid condition)' }
      : input.mcsReady?.(key)
        ? { type: 'Ready', status: 'True', reason: 'Ready', message: 'the ServiceImport is written in every readable member' }
        : { type: 'Ready', status: 'False', reason: 'Pending', message: 'the ServiceImports are being written' };
    conditionWrite(Kinds.McsServiceExport, exp, [...want, ready]);
  }
  return { writes, leftAlone };
}
