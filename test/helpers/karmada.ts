// A stand-in for Karmada's propagation, for tests: no Karmada runs here. What it does is what Karmada's resource
// detector and execution controller do with a PropagationPolicy (policy.karmada.io/v1alpha1), cut to the fields
// the tests use: each resource template on the Karmada API server (an in-memory one) matched by a policy's
// resourceSelectors (apiVersion, kind, optional name, optional namespace; the policy's own namespace only) is
// applied to each member named in placement.clusterAffinity.clusterNames, with Karmada's marks; a copy a policy
// no longer places somewhere is deleted there, and so are the copies of a deleted template. Namespaces go to
// every member, as Karmada's namespace sync controller does. A member object Karmada did not create is not
// overwritten (conflictResolution Abort, Karmada's default). The copies are written through ecnet's Kubernetes
// client, which keeps a Service's allocated clusterIP on update (as Karmada's Service retention does).
//
// Not simulated: ResourceBindings and Works (their outcome is what counts here), label selectors, policy
// priorities and preemption (one policy per template is assumed), overrides, status aggregation, watches (the
// test calls sync() after each change to the Karmada API server, where Karmada would react to the event).
import type { Source } from '../../src/sources/source.js';
import { type KindRef, Kinds, type KubeObject, apiVersionOf } from '../../src/sources/source.js';
import type { KubeApiServer } from './kube-api-server.js';

export const PropagationPolicyKind: KindRef = { group: 'policy.karmada.io', version: 'v1alpha1', kind: 'PropagationPolicy', plural: 'propagationpolicies', namespaced: true };

export const POLICY_NAME_LABEL = 'propagationpolicy.karmada.io/name';
export const POLICY_NAMESPACE_LABEL = 'propagationpolicy.karmada.io/namespace';
export const KARMADA_MANAGED_LABEL = 'karmada.io/managed';
export const TEMPLATE_UID_ANNOTATION = 'resourcetemplate.karmada.io/uid';

export interface ResourceSelector {
  apiVersion: string;
  kind: string;
  name?: string;
  namespace?: string;
}

export interface PropagationPolicy extends KubeObject {
  spec: { resourceSelectors: ResourceSelector[]; placement: { clusterAffinity?: { clusterNames?: string[] } } };
}

export function propagationPolicy(namespace: string, name: string, selectors: ResourceSelector[], clusterNames: string[]): PropagationPolicy {
  return {
    apiVersion: apiVersionOf(PropagationPolicyKind),
    kind: PropagationPolicyKind.kind,
    metadata: { name, namespace },
    spec: { resourceSelectors: selectors, placement: { clusterAffinity: { clusterNames } } },
  };
}

/** The kinds of templates the stand-in propagates (the tests' resources). */
const TEMPLATE_KINDS: KindRef[] = [Kinds.Service, Kinds.McsServiceExport, Kinds.McsServiceImport];

const selects = (s: ResourceSelector, p: PropagationPolicy, t: KubeObject) =>
  s.apiVersion === t.apiVersion &&
  s.kind === t.kind &&
  (s.name === undefined || s.name === t.metadata.name) &&
  (s.namespace ?? p.metadata.namespace) === t.metadata.namespace &&
  t.metadata.namespace === p.metadata.namespace;

/** A member's copy of a template: its spec and labels, Karmada's marks, none of the server-owned fields. */
export function copyOf(t: KubeObject, p: PropagationPolicy | undefined): KubeObject {
  // Keys sorted: the same template gives the same copy (an unchanged copy is not rewritten).
  const sorted = (o: Record<string, string>) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
  const labels = sorted({ ...(t.metadata.labels ?? {}), [KARMADA_MANAGED_LABEL]: 'true', ...(p ? { [POLICY_NAME_LABEL]: p.metadata.name, [POLICY_NAMESPACE_LABEL]: p.metadata.namespace ?? '' } : {}) });
  const annotations = sorted({ ...(t.metadata.annotations ?? {}), [TEMPLATE_UID_ANNOTATION]: t.metadata.uid ?? '' });
  const copy: KubeObject = { apiVersion: t.apiVersion, kind: t.kind, metadata: { name: t.metadata.name, ...(t.metadata.namespace ? { namespace: t.metadata.namespace } : {}), labels, annotations } };
  if (t.spec !== undefined) copy.spec = structuredClone(t.spec);
  if (t.kind === 'Service') {
    // The template's allocations are the Karmada API server's, not the member's.
    const spec = copy.spec as Record<string, unknown>;
    for (const f of ['clusterIP', 'clusterIPs', 'ipFamilies', 'ipFamilyPolicy']) delete spec[f];
  }
  return copy;
}

/** Whether `have` holds every field `want` sets (labels, annotations and spec), whatever the server added. */
function covers(have: unknown, want: unknown): boolean {
  if (typeof want !== 'object' || want === null) return have === want;
  if (typeof have !== 'object' || have === null || Array.isArray(want) !== Array.isArray(have)) return false;
  if (Array.isArray(want)) return want.length === (have as unknown[]).length && want.every((w, i) => covers((have as unknown[])[i], w));
  return Object.entries(want).every(([k, v]) => covers((have as Record<string, unknown>)[k], v));
}

const refOf = (o: KubeObject): KindRef => [...TEMPLATE_KINDS, Kinds.Namespace].find((k) => k.kind === o.kind && apiVersionOf(k) === o.apiVersion)!;
const workKey = (member: string, o: KubeObject) => `${member}|${o.apiVersion}|${o.kind}|${o.metadata.namespace ?? ''}/${o.metadata.name}`;

export class KarmadaPropagator {
  /** What has been applied where (Karmada's Works): key → the copy. */
  readonly works = new Map<string, { member: string; object: KubeObject }>();
  /** Copies not written because the member holds an object of that name Karmada did not create. */
  readonly conflicts: string[] = [];

  constructor(
    readonly karmada: KubeApiServer,
    readonly members: Map<string, Source>,
  ) {}

  /** Brings every member in line with the templates and policies on the Karmada API server now. */
  async sync(): Promise<void> {
    const want = new Map<string, { member: string; object: KubeObject }>();
    for (const ns of this.karmada.objects(Kinds.Namespace)) {
      for (const member of this.members.keys()) want.set(workKey(member, ns), { member, object: copyOf(ns, undefined) });
    }
    const policies = this.karmada.objects<PropagationPolicy>(PropagationPolicyKind).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    for (const kind of TEMPLATE_KINDS) {
      for (const t of this.karmada.objects(kind)) {
        const p = policies.find((p) => p.spec.resourceSelectors.some((s) => selects(s, p, t)));
        if (!p) continue;
        // The resource detector claims the template for its policy.
        if (t.metadata.labels?.[POLICY_NAME_LABEL] !== p.metadata.name) {
          this.karmada.put({ ...t, metadata: { ...t.metadata, labels: { ...(t.metadata.labels ?? {}), [POLICY_NAME_LABEL]: p.metadata.name, [POLICY_NAMESPACE_LABEL]: p.metadata.namespace ?? '' } } });
        }
        for (const member of p.spec.placement.clusterAffinity?.clusterNames ?? []) {
          if (this.members.has(member)) want.set(workKey(member, t), { member, object: copyOf(t, p) });
        }
      }
    }
    // Namespaces first, then the rest; removals after.
    const ordered = [...want.entries()].sort(([, a], [, b]) => Number(b.object.kind === 'Namespace') - Number(a.object.kind === 'Namespace'));
    for (const [key, w] of ordered) {
      const source = this.members.get(w.member)!;
      const ref = refOf(w.object);
      const current = await source.get(ref, w.object.metadata.name, w.object.metadata.namespace);
      if (current && current.metadata.labels?.[KARMADA_MANAGED_LABEL] !== 'true') {
        if (!this.conflicts.includes(key)) this.conflicts.push(key);
        continue;
      }
      // Unchanged: not rewritten (Karmada compares with what it last applied).
      if (!current || !covers(current, w.object)) await source.apply(w.object, { manager: 'karmada-execution-controller' });
      this.works.set(key, w);
    }
    for (const [key, w] of [...this.works]) {
      if (want.has(key)) continue;
      const source = this.members.get(w.member)!;
      const ref = refOf(w.object);
      const current = await source.get(ref, w.object.metadata.name, w.object.metadata.namespace);
      // Only the copy Karmada wrote (of this template).
      if (current?.metadata.annotations?.[TEMPLATE_UID_ANNOTATION] === w.object.metadata.annotations?.[TEMPLATE_UID_ANNOTATION]) {
        await source.delete(ref, w.object.metadata.name, w.object.metadata.namespace);
      }
      this.works.delete(key);
    }
  }
}
