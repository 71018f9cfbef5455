import { describe, expect, it } from 'vitest';
import { type Service, clusterIPsOf } from '../api/core.js';
import { IMPORTED_LABEL, type ServiceExport, type ServiceImport, type ServiceImportSpec } from '../api/flomesh.js';
import { Kinds, type KubeObject, objectKey } from '../sources/source.js';
import { type DerivedService, type MemberDesired, aggregate } from './aggregate.js';
import { canonical } from './conditions.js';
import { type MemberHolds, type PlannedWrite, mcsSliceName, mcsSliceOf, planCleanup, planMember } from './member-plan.js';
import type { EndpointSlice } from '../api/core.js';
import type { McsServiceImport, McsServiceImportSpec } from '../api/mcs.js';
import { localEndpoints, slicesByService } from '../endpoints/slices.js';

const MANAGED = { 'app.kubernetes.io/managed-by': 'ecnet-controller' };
const NOW = '2026-02-01T00:00:00Z';
const CLUSTER_1 = 'default/default/default/cluster-1';

const importSpec = (ips?: string[]): ServiceImportSpec => ({
  type: 'ClusterSetIP',
  sessionAffinity: 'None',
  ...(ips ? { ips } : {}),
  ports: [{ protocol: 'TCP', port: 8080, endpoints: [{ clusterKey: CLUSTER_1, target: { host: '10.0.2.4', ip: '10.0.2.4', port: 80, path: '/' } }] }],
});
const derived = (headless = false, port = 8080): DerivedService => ({
  namespace: 'httpbin',
  name: 'httpbin',
  spec: { type: 'ClusterIP', ...(headless ? { clusterIP: 'None' as const } : {}), ports: [{ protocol: 'TCP', port, targetPort: port }], sessionAffinity: 'None' },
});
const desired = (parts: Partial<MemberDesired> = {}): MemberDesired => ({ imports: new Map(), services: new Map(), exportConditions: new Map(), ...parts });
const wants = (spec: ServiceImportSpec, service?: DerivedService): MemberDesired =>
  desired({
    imports: new Map([['httpbin/httpbin', { namespace: 'httpbin', name: 'httpbin', spec, clusters: [CLUSTER_1] }]]),
    ...(service ? { services: new Map([['httpbin/httpbin', service]]) } : {}),
  });
/** `null` labels: the user's. */
const imp = (spec: ServiceImportSpec, labels: Record<string, string> | null = MANAGED, name = 'httpbin'): ServiceImport => ({
  apiVersion: 'flomesh.io/v1alpha1',
  kind: 'ServiceImport',
  metadata: { name, namespace: 'httpbin', uid: `uid-import-${name}`, ...(labels ? { labels } : {}) },
  spec,
  status: { clusters: [{ cluster: CLUSTER_1 }] },
});
const svc = (spec: Service['spec'], labels: Record<string, string> | null = MANAGED, name = 'httpbin', uid: string | null = `uid-svc-${name}`): Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'httpbin', ...(uid ? { uid } : {}), ...(labels ? { labels } : {}) },
  spec,
});
const holds = (parts: Partial<MemberHolds> = {}): MemberHolds => ({ imports: [], services: [], exports: [], ...parts });
const plan = (h: MemberHolds, d: MemberDesired) => planMember({ member: 'cluster-2', holds: h, desired: d, now: NOW });

/** What a member holds once the writes are done, as a toy API server would do them (ClusterIPs from 10.96.0.10). */
function execute(before: MemberHolds, writes: PlannedWrite[]): MemberHolds {
  const store = new Map<string, KubeObject>([...before.imports, ...before.services, ...before.exports].map((o) => [`${o.kind}|${objectKey(o)}`, o]));
  let n = 0;
  for (const w of writes) {
    let previous: KubeObject | undefined;
    for (const s of w.steps) {
      if (s.op === 'event') continue;
      const k = s.op === 'delete' || s.op === 'status' ? `${s.kind.kind}|${s.namespace}/${s.name}` : `${s.object.kind}|${objectKey(s.object)}`;
      const cur = store.get(k);
      const pre = s.op === 'status' ? undefined : s.precondition;
      if (pre && ('absent' in pre ? cur : cur?.metadata.uid !== pre.uid)) throw new Error(`precondition of ${k} failed`);
      if (s.op === 'delete') store.delete(k);
      else if (s.op === 'status') store.set(k, { ...cur!, status: s.status });
      else {
        let spec = s.object.spec as Record<string, unknown>;
        if (s.ipsOfPrevious && previous) spec = { ...spec, ips: clusterIPsOf(previous as Service) };
        if (s.object.kind === 'Service' && spec.clusterIP === undefined) spec = { ...spec, clusterIP: (cur?.spec as Service['spec'] | undefined)?.clusterIP ?? `10.96.0.${10 + n++}` };
        previous = { ...s.object, metadata: { ...s.object.metadata, uid: cur?.metadata.uid ?? `uid-${n++}` }, spec, ...(cur?.status ? { status: cur.status } : {}) };
        store.set(k, previous);
      }
    }
  }
  const of = <T,>(kind: string) => [...store.values()].filter((o) => o.kind === kind) as T[];
  return { imports: of('ServiceImport'), services: of('Service'), exports: of('ServiceExport') };
}

describe('planning the writes of a member', () => {
  it('nothing to do when the member holds what it must: the writes of one plan leave nothing for the next', () => {
    const exported = svc({ clusterIP: '10.96.1.1', ports: [{ port: 8080 }] }, null);
    const exp: ServiceExport = { apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceExport', metadata: { name: 'httpbin', namespace: 'httpbin', creationTimestamp: NOW }, spec: {} as ServiceExport['spec'] };
    const stale = imp(importSpec(), MANAGED, 'gone');
    const member2 = holds({ imports: [stale], services: [svc({ clusterIP: '10.96.0.5', ports: [{ port: 80 }] }, MANAGED, 'gone')] });
    const desiredOf = (h: MemberHolds) =>
      aggregate([
        { name: 'cluster-1', key: CLUSTER_1, gateway: { host: '10.0.2.4', port: 80 }, exports: [exp], services: [exported] },
        { name: 'cluster-2', key: 'default/default/default/cluster-2', gateway: undefined, exports: [], services: h.services },
      ]).get('cluster-2')!;
    const first = plan(member2, desiredOf(member2));
    expect(first.writes.map((w) => w.key)).toEqual(['cluster-2|ServiceImport|httpbin/httpbin', 'cluster-2|ServiceImport|httpbin/gone', 'cluster-2|Service|httpbin/gone']);
    const after = execute(member2, first.writes);
    expect(after.imports.map((i) => [objectKey(i), i.spec.ips])).toEqual([['httpbin/httpbin', ['10.96.0.10']]]);
    expect(after.services.map((s) => [objectKey(s), s.spec.clusterIP])).toEqual([['httpbin/httpbin', '10.96.0.10']]);
    // The import took its derived Service's address, which the next aggregation reads back: nothing left to do.
    expect(plan(after, desiredOf(after))).toEqual({ writes: [], leftAlone: [] });
  });

  it('a missing import and Service: one write, the Service created (absent) first, then the import with its ClusterIP, then its status', () => {
    const p = plan(holds(), wants(importSpec(), derived()));
    expect(p.writes).toHaveLength(1);
    const [w] = p.writes as [PlannedWrite];
    expect(w.key).toBe('cluster-2|ServiceImport|httpbin/httpbin');
    expect(w.content).toBe(canonical(importSpec()));
    expect(w.steps.map((s) => s.op)).toEqual(['create', 'create', 'status']);
    expect(w.steps[0]).toMatchObject({
      object: { kind: 'Service', metadata: { name: 'httpbin', namespace: 'httpbin', labels: { ...MANAGED, 'flomesh.io/service-import': 'httpbin' } }, spec: derived().spec },
      precondition: { absent: true },
      ensureNamespace: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'httpbin', labels: MANAGED } },
    });
    // The import is created only if none exists (one another writer created since the plan is not overwritten).
    expect(w.steps[1]).toMatchObject({ object: { kind: 'ServiceImport', metadata: { labels: MANAGED }, spec: importSpec() }, ipsOfPrevious: true });
    expect(w.steps[1]).toMatchObject({ precondition: { absent: true }, seen: null });
    expect(w.steps[2]).toMatchObject({ op: 'status', name: 'httpbin', namespace: 'httpbin', status: { clusters: [{ cluster: CLUSTER_1 }] } });
    // Plain data: nothing in it but values.
    expect(JSON.parse(JSON.stringify(p))).toEqual(p);
  });

  it('a derived Service missing beside an import that is right is created with the `absent` precondition', () => {
    const p = plan(holds({ imports: [imp(importSpec(['10.96.0.10']))] }), wants(importSpec(['10.96.0.10']), derived()));
    expect(p.writes).toEqual([{ key: 'cluster-2|Service|httpbin/httpbin', content: expect.any(String), steps: [expect.objectContaining({ op: 'create', precondition: { absent: true } })] }]);
  });

  it('replace and delete carry the uid of the object seen; only managed objects are deleted', () => {
    const h = holds({
      imports: [imp(importSpec(['10.96.0.10'])), imp(importSpec(), MANAGED, 'stale'), imp(importSpec(), null, 'users')],
      services: [svc({ clusterIP: '10.96.0.10', ports: [{ port: 80 }] }), svc({ clusterIP: '10.96.0.11', ports: [{ port: 80 }] }, MANAGED, 'stale'), svc({ ports: [{ port: 80 }] }, null, 'users')],
    });
    const p = plan(h, wants(importSpec(['10.96.0.10']), derived()));
    expect(p.writes.map((w) => [w.key, w.steps.map((s) => [s.op, 'precondition' in s ? s.precondition : undefined])])).toEqual([
      ['cluster-2|ServiceImport|httpbin/stale', [['delete', { uid: 'uid-import-stale' }]]],
      ['cluster-2|Service|httpbin/httpbin', [['replace', { uid: 'uid-svc-httpbin' }]]],
      ['cluster-2|Service|httpbin/stale', [['delete', { uid: 'uid-svc-stale' }]]],
    ]);
    expect(p.writes.every((w) => w.steps.every((s) => s.op !== 'delete' || s.name === 'stale'))).toBe(true);
    // A Service seen without a uid is still replaced only under a precondition (one no object satisfies).
    const bare = plan(holds({ imports: [imp(importSpec(['10.96.0.10']))], services: [svc({ ports: [{ port: 80 }] }, MANAGED, 'httpbin', null)] }), wants(importSpec(['10.96.0.10']), derived()));
    expect(bare.writes[0]!.steps[0]).toMatchObject({ op: 'replace', precondition: { uid: '' } });
  });

  it("a user's Service or ServiceImport of the name is never replaced or deleted", () => {
    const own = svc({ clusterIP: '10.96.5.5', ports: [{ port: 80 }] }, null);
    const labelledWithSelector = svc({ clusterIP: '10.96.5.5', selector: { app: 'httpbin' }, ports: [{ port: 80 }] }, MANAGED);
    const labelOnly = (labels: Record<string, string | null>) => [{ key: 'cluster-2|ServiceLabel|httpbin/httpbin', content: labels[IMPORTED_LABEL] ?? 'none', steps: [{ op: 'label', kind: Kinds.Service, name: 'httpbin', namespace: 'httpbin', labels }] }];
    for (const user of [own, labelledWithSelector]) {
      // Wanted (even if the aggregation asked for one) or not: never replaced or deleted. With an import of its
      // name it gets the imported label (node agents watch by it), and that label alone.
      const imported = plan(holds({ imports: [imp(importSpec(['10.96.5.5']))], services: [user] }), wants(importSpec(['10.96.5.5']), derived()));
      expect(imported.writes).toEqual(labelOnly({ [IMPORTED_LABEL]: 'httpbin' }));
      const marked = { ...user, metadata: { ...user.metadata, labels: { ...user.metadata.labels, [IMPORTED_LABEL]: 'httpbin' } } };
      expect(plan(holds({ imports: [imp(importSpec(['10.96.5.5']))], services: [marked] }), wants(importSpec(['10.96.5.5']), derived())).writes).toEqual([]);
      // A new import of its name: the label goes first, in the import's write (an agent that saw the import
      // before the labelled Service would report it NotRedirected), and not again on its own.
      const created = plan(holds({ services: [user] }), wants(importSpec(['10.96.5.5']), derived()));
      expect(created.writes.map((w) => [w.key, w.steps.map((s) => s.op)])).toEqual([['cluster-2|ServiceImport|httpbin/httpbin', ['label', 'create', 'status']]]);
      expect(created.writes[0]!.steps[0]).toEqual({ op: 'label', kind: Kinds.Service, name: 'httpbin', namespace: 'httpbin', labels: { [IMPORTED_LABEL]: 'httpbin' }, bestEffort: true });
      // Without an import it loses the label, if it has it.
      expect(plan(holds({ services: [user] }), desired()).writes).toEqual([]);
      expect(plan(holds({ services: [marked] }), desired()).writes).toEqual(labelOnly({ [IMPORTED_LABEL]: null }));
    }
    const theirs = imp(importSpec(), null);
    const beside = plan(holds({ imports: [theirs] }), wants(importSpec(), derived()));
    expect(beside.leftAlone).toEqual(['httpbin/httpbin']);
    // Their import is not written; the derived Service the name still lacks is created, only if none exists.
    expect(beside.writes.map((w) => [w.key, w.steps.map((s) => [s.op, s.op === 'create' && s.precondition])])).toEqual([['cluster-2|Service|httpbin/httpbin', [['create', { absent: true }]]]]);
    expect(plan(holds({ imports: [theirs] }), desired()).writes).toEqual([]);
  });

  it('ClusterIP ↔ headless: the Service is replaced by a delete of the one seen (uid) and a create (absent), in one write', () => {
    const cases: [Service, DerivedService][] = [
      [svc({ clusterIP: '10.96.0.10', ports: [{ protocol: 'TCP', port: 8080, targetPort: 8080 }] }), derived(true)],
      [svc({ clusterIP: 'None', ports: [{ protocol: 'TCP', port: 8080, targetPort: 8080 }] }), derived(false)],
    ];
    for (const [have, want] of cases) {
      const p = plan(holds({ imports: [imp(importSpec())], services: [have] }), wants(importSpec(), want));
      expect(p.writes).toHaveLength(1);
      expect(p.writes[0]!.key).toBe('cluster-2|Service|httpbin/httpbin');
      expect(p.writes[0]!.steps).toMatchObject([
        { op: 'delete', kind: { kind: 'Service' }, name: 'httpbin', namespace: 'httpbin', precondition: { uid: 'uid-svc-httpbin' } },
        { op: 'create', object: { spec: want.spec }, precondition: { absent: true } },
      ]);
    }
  });

  it('what the API server defaults in a Service (protocol, targetPort, sessionAffinity) is no difference', () => {
    const defaulted = svc({ clusterIP: '10.96.0.10', ports: [{ port: 8080 }] });
    expect(plan(holds({ imports: [imp(importSpec(['10.96.0.10']))], services: [defaulted] }), wants(importSpec(['10.96.0.10']), derived())).writes).toEqual([]);
  });

  it('an import whose status alone differs gets a status write, under its own memo content', () => {
    const stale = { ...imp(importSpec()), status: { clusters: [] } };
    const p = plan(holds({ imports: [stale], services: [svc({ clusterIP: 'None', ports: [{ protocol: 'TCP', port: 8080, targetPort: 8080 }] })] }), wants(importSpec(), derived(true)));
    expect(p.writes).toEqual([
      { key: 'cluster-2|ServiceImport|httpbin/httpbin', content: `status:${canonical({ clusters: [{ cluster: CLUSTER_1 }] })}`, steps: [expect.objectContaining({ op: 'status', status: { clusters: [{ cluster: CLUSTER_1 }] } })] },
    ]);
  });

  it("export conditions: written with the time given when they change; a Warning Event when an export becomes invalid or starts conflicting", () => {
    const exp = (conditions?: ServiceExport['status']): ServiceExport => ({
      apiVersion: 'flomesh.io/v1alpha1',
      kind: 'ServiceExport',
      metadata: { name: 'httpbin', namespace: 'httpbin', generation: 2 },
      spec: {} as ServiceExport['spec'],
      ...(conditions ? { status: conditions } : {}),
    });
    const conflict = [
      { type: 'Valid' as const, status: 'True' as const, reason: 'Valid', message: 'ok' },
      { type: 'Conflict' as const, status: 'True' as const, reason: 'PortConflict', message: 'clash' },
    ];
    const d = desired({ exportConditions: new Map([['httpbin/httpbin', conflict]]) });
    const first = plan(holds({ exports: [exp()] }), d);
    expect(first.writes).toHaveLength(1);
    expect(first.writes[0]!.key).toBe('cluster-2|ServiceExport|httpbin/httpbin');
    expect(first.writes[0]!.content).toBe(`status:${canonical(conflict)}`);
    expect(first.writes[0]!.steps).toEqual([
      expect.objectContaining({ op: 'status', status: { conditions: conflict.map((c) => ({ ...c, lastTransitionTime: NOW, observedGeneration: 2 })) } }),
      expect.objectContaining({ op: 'event', note: { type: 'Warning', reason: 'PortConflict', message: 'clash' } }),
    ]);
    // Written: nothing more. A message that changes while the conflict stays: the status, no second Event.
    const written = exp({ conditions: conflict.map((c) => ({ ...c, lastTransitionTime: NOW, observedGeneration: 2 })) });
    expect(plan(holds({ exports: [written] }), d).writes).toEqual([]);
    const changed = desired({ exportConditions: new Map([['httpbin/httpbin', [conflict[0]!, { ...conflict[1]!, message: 'another clash' }]]]) });
    expect(plan(holds({ exports: [written] }), changed).writes[0]!.steps.map((s) => s.op)).toEqual(['status']);
  });

  it('writes come in order: imports, import deletions, Services, Service deletions, export conditions', () => {
    const d = wants(importSpec(['10.96.0.10']), derived(false, 9090));
    d.exportConditions.set('httpbin/mine', [{ type: 'Valid', status: 'False', reason: 'NoService', message: 'no Service' }]);
    const mine: ServiceExport = { apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceExport', metadata: { name: 'mine', namespace: 'httpbin' }, spec: {} as ServiceExport['spec'] };
    const h = holds({ imports: [imp(importSpec()), imp(importSpec(), MANAGED, 'old')], services: [svc({ clusterIP: '10.96.0.10', ports: [{ port: 8080 }] }), svc({ ports: [] }, MANAGED, 'old')], exports: [mine] });
    expect(plan(h, d).writes.map((w) => w.key)).toEqual([
      'cluster-2|ServiceImport|httpbin/httpbin',
      'cluster-2|ServiceImport|httpbin/old',
      'cluster-2|Service|httpbin/httpbin',
      'cluster-2|Service|httpbin/old',
      'cluster-2|ServiceExport|httpbin/mine',
    ]);
  });

  it("a removed member's cleanup deletes what ecnet wrote there, by uid, and nothing of the user's", () => {
    const doomed = planCleanup('cluster-2', {
      imports: [imp(importSpec()), imp(importSpec(), null, 'users')],
      services: [svc({ ports: [{ port: 80 }] }), svc({ ports: [{ port: 80 }] }, null, 'users'), svc({ selector: { app: 'x' }, ports: [{ port: 80 }] }, MANAGED, 'selected')],
    });
    expect(doomed).toEqual([
      { key: 'cluster-2|ServiceImport|httpbin/httpbin', content: 'deleted', steps: [expect.objectContaining({ op: 'delete', name: 'httpbin', precondition: { uid: 'uid-import-httpbin' } })] },
      { key: 'cluster-2|Service|httpbin/httpbin', content: 'deleted', steps: [expect.objectContaining({ op: 'delete', name: 'httpbin', precondition: { uid: 'uid-svc-httpbin' } })] },
    ]);
  });
});

describe("the EndpointSlices of a member's MCS imports", () => {
  const SLICE_LABELS = { 'multicluster.kubernetes.io/service-name': 'httpbin', 'endpointslice.kubernetes.io/managed-by': 'ecnet-controller', ...MANAGED };
  const mcsSpec = (ips?: string[], type: McsServiceImportSpec['type'] = 'ClusterSetIP'): McsServiceImportSpec => ({
    type,
    sessionAffinity: 'None',
    ...(ips ? { ips } : {}),
    ports: [{ name: 'http', protocol: 'TCP', port: 8080, appProtocol: 'http' }],
  });
  const mcsImp = (spec: McsServiceImportSpec): McsServiceImport => ({
    apiVersion: 'multicluster.x-k8s.io/v1alpha1',
    kind: 'ServiceImport',
    metadata: { name: 'httpbin', namespace: 'httpbin', uid: 'uid-mcs-httpbin', labels: MANAGED },
    spec,
    status: { clusters: [{ cluster: 'cluster-1' }] },
  });
  const wantMcs = (spec: McsServiceImportSpec): MemberDesired =>
    desired({ mcsImports: new Map([['httpbin/httpbin', { namespace: 'httpbin', name: 'httpbin', spec, clusters: ['cluster-1'] }]]), services: new Map([['httpbin/httpbin', derived()]]) });
  const held = (s: EndpointSlice, uid = 'uid-slice'): EndpointSlice => ({ ...s, metadata: { ...s.metadata, uid } });
  const sliceWrites = (writes: PlannedWrite[]) => writes.filter((w) => w.key.includes('|EndpointSlice|'));
  const heldService = svc({ clusterIP: '10.96.0.7', ports: [{ port: 8080, targetPort: 8080 }] });

  it('a ClusterSetIP import with its address gets one slice, created (absent), labelled for the MCS API and never kubernetes.io/service-name; once held, nothing', () => {
    const spec = mcsSpec(['10.96.0.7']);
    const h = holds({ services: [heldService], mcsImports: [mcsImp(spec)], mcsSlices: [] });
    const writes = sliceWrites(plan(h, wantMcs(spec)).writes);
    expect(writes).toHaveLength(1);
    expect(writes[0]!.key).toBe('cluster-2|EndpointSlice|httpbin/httpbin-ecnet');
    const step = writes[0]!.steps[0]!;
    expect(step).toMatchObject({ op: 'create', precondition: { absent: true } });
    const slice = (step as { object: EndpointSlice }).object;
    expect(slice).toEqual({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'httpbin-ecnet', namespace: 'httpbin', labels: SLICE_LABELS },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.96.0.7'], conditions: { ready: true, serving: true, terminating: false } }],
      ports: [{ name: 'http', protocol: 'TCP', port: 8080, appProtocol: 'http' }],
    });
    expect(sliceWrites(plan({ ...h, mcsSlices: [held(slice)] }, wantMcs(spec)).writes)).toEqual([]);
    // What the API server defaults (a port's empty name, TCP) is no difference.
    const unnamed = { ...spec, ports: [{ port: 8080 }] };
    const bare = mcsSliceOf({ name: 'httpbin', namespace: 'httpbin', spec: unnamed })!;
    const defaulted = held({ ...bare, ports: [{ name: '', protocol: 'TCP', port: 8080 }] });
    expect(sliceWrites(plan({ ...h, mcsImports: [mcsImp(unnamed)], mcsSlices: [defaulted] }, wantMcs(unnamed)).writes)).toEqual([]);
    // A change of ports replaces the slice seen (its uid).
    const more = { ...spec, ports: [...spec.ports, { name: 'grpc', protocol: 'TCP' as const, port: 9090 }] };
    const replaced = sliceWrites(plan({ ...h, mcsImports: [mcsImp(more)], mcsSlices: [held(slice)] }, wantMcs(more)).writes);
    expect(replaced).toHaveLength(1);
    expect(replaced[0]!.steps[0]).toMatchObject({ op: 'replace', precondition: { uid: 'uid-slice' } });
  });

  it('no slice for a Headless import or one without its address yet, nor where the slices are not known; a stale one of ecnet goes, by uid', () => {
    const slice = held(mcsSliceOf({ name: 'httpbin', namespace: 'httpbin', spec: mcsSpec(['10.96.0.7']) })!);
    expect(sliceWrites(plan(holds({ services: [heldService], mcsSlices: [] }), wantMcs(mcsSpec())).writes)).toEqual([]);
    expect(sliceWrites(plan(holds({ mcsSlices: [] }), wantMcs(mcsSpec(undefined, 'Headless'))).writes)).toEqual([]);
    expect(sliceWrites(plan(holds({ services: [heldService] }), wantMcs(mcsSpec(['10.96.0.7']))).writes)).toEqual([]);
    const gone = sliceWrites(plan(holds({ mcsSlices: [slice] }), wantMcs(mcsSpec(undefined, 'Headless'))).writes);
    expect(gone).toEqual([{ key: 'cluster-2|EndpointSlice|httpbin/httpbin-ecnet', content: 'deleted', steps: [expect.objectContaining({ op: 'delete', name: 'httpbin-ecnet', precondition: { uid: 'uid-slice' } })] }]);
    // Withdrawn: no import, no slice.
    expect(sliceWrites(plan(holds({ mcsSlices: [slice] }), desired()).writes)).toHaveLength(1);
  });

  it("a slice that is not ecnet's is left alone, and none is written for an MCS import that is not ecnet's", () => {
    const spec = mcsSpec(['10.96.0.7']);
    const theirs = held({ ...mcsSliceOf({ name: 'httpbin', namespace: 'httpbin', spec })!, metadata: { name: 'httpbin-theirs', namespace: 'httpbin', labels: { 'multicluster.kubernetes.io/service-name': 'httpbin' } } });
    expect(sliceWrites(plan(holds({ mcsSlices: [theirs] }), desired()).writes)).toEqual([]);
    const foreignImport = { ...mcsImp(spec), metadata: { name: 'httpbin', namespace: 'httpbin' } };
    const p = plan(holds({ services: [heldService], mcsImports: [foreignImport], mcsSlices: [] }), wantMcs(spec));
    expect(p.leftAlone).toEqual(['httpbin/httpbin (multicluster.x-k8s.io)']);
    expect(sliceWrites(p.writes)).toEqual([]);
    expect(planCleanup('cluster-2', { imports: [], services: [], mcsSlices: [theirs, held(mcsSliceOf({ name: 'httpbin', namespace: 'httpbin', spec })!)] })).toEqual([
      { key: 'cluster-2|EndpointSlice|httpbin/httpbin-ecnet', content: 'deleted', steps: [expect.objectContaining({ op: 'delete', name: 'httpbin-ecnet', precondition: { uid: 'uid-slice' } })] },
    ]);
  });

  it('names within 63 characters, IPv6 by the address, and no service of the agents or gateways gets its endpoints', () => {
    const long = 'a'.repeat(60);
    expect(mcsSliceName('httpbin')).toBe('httpbin-ecnet');
    expect(mcsSliceName(long)).toHaveLength(63);
    expect(mcsSliceName(long)).not.toBe(mcsSliceName(`${'a'.repeat(59)}b`));
    const v6 = mcsSliceOf({ name: 'httpbin', namespace: 'httpbin', spec: mcsSpec(['fd00::7']) })!;
    expect(v6.addressType).toBe('IPv6');
    // The agents and gateways key slices by kubernetes.io/service-name: ecnet's MCS slices are no one's endpoints.
    expect(slicesByService([v6]).size).toBe(0);
    const httpbin = svc({ clusterIP: '10.96.0.7', ports: [{ name: 'http', port: 8080 }] });
    expect(localEndpoints(httpbin, [mcsSliceOf({ name: 'httpbin', namespace: 'httpbin', spec: mcsSpec(['10.96.0.7']) })!]).get(8080)).toEqual([]);
  });
});
