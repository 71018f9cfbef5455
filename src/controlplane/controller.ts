// The control-plane cluster: reads Cluster resources, watches exports and services in every member, and keeps in every member
// the ServiceImports (and derived Services) that a fresh aggregation of the current state asks for.
//
// One reconcile pass at a time, for all members: aggregation is cheap next to the writes, and a single pass
// cannot race itself. A pass writes only differences; a write whose result the informers have not reported
// yet is not repeated (the in-flight memo), so a burst of events costs one write per object.
// Nothing is removed on a partial view: until every member known at start has been read once (or has been
// unreachable for memberTimeoutMs), the controller does not write imports, and an unreachable member keeps its
// last known exports for memberTimeoutMs before they are dropped.
import { CONTROLLER_NAME, defaults } from '../defaults.js';
import { type Service, clusterIPsOf } from '../api/core.js';
import type { Cluster, Condition, ServiceExport, ServiceImport } from '../api/flomesh.js';
import { type Logger, componentLogger } from '../logger.js';
import { Backoff } from '../util/backoff.js';
import { type Clock, rfc3339 as iso, systemClock } from '../util/time.js';
import { Coalescer } from '../util/coalescer.js';
import {
  Kinds,
  type Informer,
  type KindRef,
  type KubeObject,
  MANAGED_BY,
  MANAGED_BY_LABEL,
  type Precondition,
  type Source,
  SourceError,
  type WatchEvent,
  objectKey,
} from '../sources/source.js';
import { type ConditionInput, canonical, conditionsDiffer, mergeConditions } from './conditions.js';
import { type DerivedService, type DesiredImport, type MemberView, aggregate, isManaged } from './aggregate.js';
import { Member, type MemberConnector, clusterKeyOf, credentialsOf } from './members.js';

export interface ControllerOptions {
  /** The control-plane cluster, where the Cluster resources are. */
  controlPlane: Source;
  connect: MemberConnector;
  /** How long an unreachable member keeps its exports (and how long the start waits for a member). */
  memberTimeoutMs?: number;
  /** Full pass even without events (repairs what was changed behind the controller's back). */
  resyncMs?: number;
  /** Events closer than this are handled in one pass. */
  debounceMs?: number;
  /** Writes in flight at once. */
  concurrency?: number;
  clock?: Clock;
  logger?: Logger;
}

export const MANAGER = CONTROLLER_NAME;
const managedLabels = { [MANAGED_BY_LABEL]: MANAGED_BY };

/** The part of a view that concerns the services in scope (all when undefined). */
function filterView(v: { exports: ServiceExport[]; services: Service[] }, scope: Set<string> | undefined): { exports: ServiceExport[]; services: Service[] } {
  if (!scope) return v;
  const has = (o: { metadata: { name: string; namespace?: string } }) => scope.has(objectKey(o));
  return { exports: v.exports.filter(has), services: v.services.filter(has) };
}

const uidOf = (o: KubeObject): { uid?: string } => (o.metadata.uid ? { uid: o.metadata.uid } : {});

/** A Cluster as the API server would default it (its spec may be absent: the CRD does not require one). */
function withDefaults(c: Cluster): Cluster {
  const spec = (typeof c.spec === 'object' && c.spec !== null ? c.spec : {}) as Partial<Cluster['spec']>;
  return { ...c, spec: { ...spec, region: spec.region ?? 'default', zone: spec.zone ?? 'default', group: spec.group ?? 'default', gatewayPort: spec.gatewayPort ?? 80 } };
}


export class Controller {
  readonly #controlPlane: Source;
  readonly #connect: MemberConnector;
  readonly #timeout: number;
  readonly #resyncMs: number;
  readonly #debounceMs: number;
  readonly #concurrency: number;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #members = new Map<string, Member>();
  /** `member|kind|ns/name` → canonical form of what was last written and not yet seen back */
  readonly #inflight = new Map<string, string>();
  readonly #retry = new Backoff({ initialMs: 200, maxMs: 10_000, jitter: 0.3 });
  #clusters: Informer<Cluster> | undefined;
  #startedAt = 0;
  /** Members named when the controller started: it writes nothing until each was read once or timed out. */
  #initial: Set<string> | undefined;
  #resync: unknown;
  readonly #passes: Coalescer;
  #closed = false;
  /** Services (`namespace/name`) touched by events since the last pass; a full pass when #full. */
  #dirty = new Set<string>();
  #full = true;
  #forgetMemo = false;
  /** Cluster name → resourceVersion of the Secret holding its kubeconfig, as last read. */
  readonly #secretVersions = new Map<string, string>();
  /** canonical() of objects from the informers' caches (immutable until replaced by an event). */
  readonly #canon = new WeakMap<object, string>();
  passes = 0;

  constructor(options: ControllerOptions) {
    this.#controlPlane = options.controlPlane;
    this.#connect = options.connect;
    this.#timeout = options.memberTimeoutMs ?? defaults.memberTimeoutMs;
    this.#resyncMs = options.resyncMs ?? defaults.resyncMs;
    this.#debounceMs = options.debounceMs ?? 10;
    this.#concurrency = options.concurrency ?? 32;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.logger ?? componentLogger('controller');
    this.#passes = new Coalescer(() => this.#safePass(), this.#debounceMs, this.#clock);
  }

  /** Starts watching the control-plane cluster's Cluster resources; resolves once they are listed. */
  async start(): Promise<void> {
    this.#startedAt = this.#clock.now();
    this.#clusters = this.#controlPlane.informer<Cluster>(Kinds.Cluster, {
      onEvent: (e) => {
        this.#inflight.delete(`control-plane|Cluster|${e.object.metadata.name}`);
        this.#full = true;
        this.trigger();
      },
      onHealth: (err) => {
        if (err) this.#log.warn({ err }, 'control-plane source unreachable');
        this.#full = true;
        this.trigger();
      },
    });
    await this.#clusters.synced;
    this.#initial = new Set(this.#clusters.list().map((c) => c.metadata.name));
    this.trigger();
    this.#scheduleResync();
  }

  #scheduleResync(): void {
    if (this.#closed) return;
    this.#resync = this.#clock.setTimeout(() => {
      this.#full = true;
      this.#forgetMemo = true;
      this.trigger();
      this.#scheduleResync();
    }, this.#resyncMs);
    (this.#resync as { unref?: () => void }).unref?.();
  }

  /** Asks for a pass (coalesced with others within debounceMs). */
  trigger(): void {
    this.#passes.trigger();
  }

  /** A pass that throws (a bug, or an object nothing checked): logged, and everything looked at again later. */
  async #safePass(): Promise<void> {
    try {
      await this.#pass();
    } catch (err) {
      this.#log.error({ err }, 'reconcile pass failed');
      this.#full = true;
      const t = this.#clock.setTimeout(() => this.trigger(), this.#retry.next());
      (t as { unref?: () => void }).unref?.();
    }
  }

  /** An object event makes its service dirty; a health or sync change of a member calls for a full pass. */
  #onMemberEvent(member: string, e?: WatchEvent): void {
    if (e) {
      const key = objectKey(e.object);
      this.#inflight.delete(`${member}|${e.object.kind}|${key}`);
      this.#dirty.add(key);
    } else {
      this.#full = true;
    }
    this.trigger();
  }

  /** Members follow the Cluster resources: new ones connect, changed credentials reconnect, deleted ones go. */
  async #syncMembers(clusters: Cluster[], full: boolean): Promise<void> {
    const now = this.#clock.now();
    const names = new Set(clusters.map((c) => c.metadata.name));
    for (const [name, m] of this.#members) {
      if (!names.has(name)) {
        this.#members.delete(name);
        this.#secretVersions.delete(name);
        await this.#forget(m);
      }
    }
    for (const c of clusters) {
      const m = this.#members.get(c.metadata.name);
      const credentials = await this.#credentials(c, full || !m);
      if (m && m.credentials === credentials) {
        m.cluster = c;
        continue;
      }
      const next = new Member(c, now, credentials);
      this.#forgetMemoOf(c.metadata.name);
      if (m) {
        // Reconnecting: what the old connection knew stands in until the new one has read the member.
        next.lastKnown = m.exports?.isSynced && m.services?.isSynced ? this.#snapshot(m) : m.lastKnown;
        next.unreachableSince = m.unreachableSince ?? now;
        m.close();
      }
      this.#members.set(c.metadata.name, next);
      void next.connect(this.#connect, (e) => this.#onMemberEvent(next.name, e), this.#log, this.#clock);
    }
  }

  /**
   * What decides a member's connection. For a kubeconfig in a Secret that includes the Secret's version, read
   * again on full passes, so a rotated (or newly created) Secret reconnects the member.
   */
  async #credentials(c: Cluster, look: boolean): Promise<string> {
    const ref = c.spec.kubeconfigSecretRef;
    if (!ref) return credentialsOf(c);
    let version = this.#secretVersions.get(c.metadata.name);
    if (look || version === undefined) {
      try {
        const secret = await this.#controlPlane.get(Kinds.Secret, ref.name, ref.namespace);
        version = secret?.metadata.resourceVersion ?? 'absent';
      } catch {
        version ??= 'unknown';
      }
      this.#secretVersions.set(c.metadata.name, version);
    }
    return `${credentialsOf(c)}|${version}`;
  }

  #forgetMemoOf(member: string): void {
    for (const k of [...this.#inflight.keys()]) if (k.startsWith(`${member}|`)) this.#inflight.delete(k);
  }

  /** A member whose Cluster was deleted: its managed imports and Services go (best effort), then its source. */
  async #forget(m: Member): Promise<void> {
    this.#forgetMemoOf(m.name);
    this.#log.info({ member: m.name }, 'cluster removed; cleaning up what ecnet wrote there');
    if (m.readable && m.source) {
      const src = m.source;
      const doomed: [KindRef, KubeObject][] = [
        ...(m.imports?.list().filter(isManaged) ?? []).map((o): [KindRef, KubeObject] => [Kinds.ServiceImport, o]),
        ...(m.services?.list().filter(isManaged) ?? []).map((o): [KindRef, KubeObject] => [Kinds.Service, o]),
      ];
      await Promise.allSettled(doomed.map(([k, o]) => src.delete(k, o.metadata.name, o.metadata.namespace, uidOf(o))));
    }
    m.close();
  }

  /** A member's exports and Services from its informers: all of them, or those of the services in scope. */
  #cachedView(m: Member, scope: Set<string> | undefined): { exports: ServiceExport[]; services: Service[] } {
    if (!scope) return this.#snapshot(m);
    const exports: ServiceExport[] = [];
    const services: Service[] = [];
    for (const key of scope) {
      const [ns, name] = key.split('/') as [string, string];
      if (name === undefined) continue;
      const e = m.exports!.get(name, ns);
      const s = m.services!.get(name, ns);
      if (e) exports.push(e);
      if (s) services.push(s);
    }
    return { exports, services };
  }

  #canonicalOf(o: object): string {
    let c = this.#canon.get(o);
    if (c === undefined) this.#canon.set(o, (c = canonical(o)));
    return c;
  }

  #snapshot(m: Member): { exports: ServiceExport[]; services: Service[] } {
    return { exports: m.exports?.list() ?? [], services: m.services?.list() ?? [] };
  }

  async #pass(): Promise<void> {
    // Nothing is decided before the Cluster resources have been listed once (start() waits for that).
    if (this.#closed || !this.#clusters || !this.#initial) {
      this.#full = true;
      return;
    }
    this.passes++;
    const now = this.#clock.now();
    const clusters = this.#clusters.list().map(withDefaults);
    if (this.#forgetMemo) {
      // The resync repeats whatever a lost watch event may have left marked as in flight.
      this.#inflight.clear();
      this.#forgetMemo = false;
    }
    await this.#syncMembers(clusters, this.#full);
    const members = [...this.#members.values()];
    // Only the services events touched, unless something calls for everything (start, a Cluster or health
    // change, the resync, a failed write).
    const scope = this.#full ? undefined : this.#dirty;
    this.#full = false;
    this.#dirty = new Set();

    // Each member's view: its informers' caches (which keep the last known state while it is unreachable),
    // or what an earlier connection knew; exports are withdrawn once it has been unreachable too long.
    const views: MemberView[] = [];
    let gated = false;
    for (const m of members) {
      const gw = m.cluster.spec.gatewayHost ? { host: m.cluster.spec.gatewayHost, port: m.cluster.spec.gatewayPort } : undefined;
      const base = { name: m.name, key: clusterKeyOf(m.cluster), gateway: gw };
      if (m.readable) m.unreachableSince = undefined;
      else m.unreachableSince ??= now;
      const expired = m.unreachableSince !== undefined && now - m.unreachableSince >= this.#timeout;
      const cached = m.exports?.isSynced && m.services?.isSynced;
      if (!cached && !m.lastKnown && this.#initial?.has(m.name) && now - this.#startedAt < this.#timeout) gated = true;
      const view = cached ? this.#cachedView(m, scope) : m.lastKnown ? filterView(m.lastKnown, scope) : { exports: [], services: [] };
      views.push({ ...base, exports: expired ? [] : view.exports, services: view.services });
    }

    // Withdraw an unreachable member's exports when its time is up, not at the next resync.
    const expiries = members.map((m) => (m.unreachableSince === undefined ? Infinity : m.unreachableSince + this.#timeout - now)).filter((d) => d > 0 && d < Infinity);
    if (expiries.length) {
      const t = this.#clock.setTimeout(() => {
        this.#full = true;
        this.trigger();
      }, Math.min(...expiries) + 1);
      (t as { unref?: () => void }).unref?.();
    }

    const writes: (() => Promise<void>)[] = [];
    if (!gated) {
      const desired = aggregate(views);
      for (const m of members) {
        if (!m.readable) continue;
        const d = desired.get(m.name)!;
        this.#planMember(m, d.imports, d.services, d.exportConditions, writes, scope);
      }
    }
    this.#planClusterStatus(members, now, writes);
    const failures = await this.#run(writes);
    this.#log.debug({ pass: this.passes, scope: scope ? scope.size : 'all', writes: writes.length, failures, gated, ms: this.#clock.now() - now }, 'reconcile pass');
    if (failures) {
      this.#full = true;
      const delay = this.#retry.next();
      this.#log.warn({ failures, retryMs: delay }, 'some writes failed; retrying');
      const t = this.#clock.setTimeout(() => this.trigger(), delay);
      (t as { unref?: () => void }).unref?.();
    } else if (writes.length === 0) {
      this.#retry.reset();
    }
    if (gated) {
      this.#full = true;
      // Look again when the wait for unread members runs out.
      const t = this.#clock.setTimeout(() => this.trigger(), Math.max(10, this.#startedAt + this.#timeout - now));
      (t as { unref?: () => void }).unref?.();
    }
  }

  /** Runs writes `concurrency` at a time; returns how many failed (each is logged). */
  async #run(writes: (() => Promise<void>)[]): Promise<number> {
    let failures = 0;
    let next = 0;
    const worker = async () => {
      while (next < writes.length && !this.#closed) {
        const w = writes[next++]!;
        try {
          await w();
        } catch (err) {
          failures++;
          this.#log.warn({ err }, 'write failed');
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#concurrency, writes.length) }, worker));
    return failures;
  }

  /** Queues `write` unless the same content is already on its way for `key`. */
  #once(key: string, content: string, writes: (() => Promise<void>)[], write: () => Promise<unknown>): void {
    if (this.#inflight.get(key) === content) return;
    this.#inflight.set(key, content);
    writes.push(async () => {
      try {
        await write();
      } catch (err) {
        this.#inflight.delete(key);
        throw err;
      }
    });
  }

  #planMember(
    m: Member,
    imports: Map<string, DesiredImport>,
    services: Map<string, DerivedService>,
    conditions: Map<string, ConditionInput[]>,
    writes: (() => Promise<void>)[],
    scope: Set<string> | undefined,
  ): void {
    const src = m.source!;
    const now = iso(this.#clock.now());

    // ServiceImports: spec, then status.clusters.
    const inScope = <T extends KubeObject>(inf: Informer<T>): Map<string, T> => {
      if (!scope) return new Map(inf.list().map((o) => [objectKey(o), o]));
      const out = new Map<string, T>();
      for (const key of scope) {
        const [ns, name] = key.split('/') as [string, string];
        const o = name === undefined ? undefined : inf.get(name, ns);
        if (o) out.set(key, o);
      }
      return out;
    };
    const observedImports = inScope(m.imports!);
    const observedServices = inScope(m.services!);
    /** Derived Services created together with their import (so the import gets its ips in one write). */
    const withImport = new Set<string>();
    for (const [key, d] of imports) {
      const cur = observedImports.get(key);
      const spec = d.spec;
      const status = { clusters: d.clusters.map((cluster) => ({ cluster })) };
      if (cur && !isManaged(cur)) {
        this.#log.warn({ member: m.name, import: key }, 'a ServiceImport of this name exists and is not managed by ecnet; left alone');
        continue;
      }
      if (!cur || this.#canonicalOf(cur.spec as object) !== canonical(spec)) {
        const obj: ServiceImport = { apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceImport', metadata: { name: d.name, namespace: d.namespace, labels: { ...managedLabels } }, spec };
        const derived = !spec.ips && !observedServices.has(key) ? services.get(key) : undefined;
        if (derived) withImport.add(key);
        this.#once(`${m.name}|ServiceImport|${key}`, canonical(spec), writes, async () => {
          if (derived) {
            // The derived Service first: its ClusterIP is the import's address.
            const svc = (await this.#applyInNamespace(src, this.#derivedObject(derived), { absent: true })) as Service;
            const ips = clusterIPsOf(svc);
            if (ips.length) obj.spec = { ...spec, ips };
          }
          await this.#applyInNamespace(src, obj);
          await src.writeStatus(Kinds.ServiceImport, d.name, d.namespace, status);
        });
      } else if (this.#canonicalOf(cur.status ?? {}) !== canonical(status)) {
        this.#once(`${m.name}|ServiceImport|${key}`, `status:${canonical(status)}`, writes, () => src.writeStatus(Kinds.ServiceImport, d.name, d.namespace, status));
      }
    }
    for (const [key, cur] of observedImports) {
      if (imports.has(key) || !isManaged(cur)) continue;
      this.#once(`${m.name}|ServiceImport|${key}`, 'deleted', writes, () => src.delete(Kinds.ServiceImport, cur.metadata.name, cur.metadata.namespace, uidOf(cur)));
    }

    // Derived Services.
    for (const [key, d] of services) {
      if (withImport.has(key)) continue;
      const cur = observedServices.get(key);
      if (cur && !isManaged(cur)) continue;
      const want = { ports: d.spec.ports, sessionAffinity: d.spec.sessionAffinity, headless: d.spec.clusterIP === 'None' };
      const have = cur && {
        ports: (cur.spec.ports ?? []).map((p) => ({ ...(p.name ? { name: p.name } : {}), protocol: p.protocol ?? 'TCP', ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}), port: p.port, targetPort: p.targetPort ?? p.port })),
        sessionAffinity: cur.spec.sessionAffinity ?? 'None',
        headless: cur.spec.clusterIP === 'None',
      };
      if (have && canonical(have) === canonical(want)) continue;
      const obj = this.#derivedObject(d);
      this.#once(`${m.name}|Service|${key}`, canonical(want), writes, async () => {
        if (cur && have && have.headless !== want.headless) {
          // ClusterIP ↔ headless cannot be changed in place (the API server refuses): replace the Service.
          await src.delete(Kinds.Service, cur.metadata.name, cur.metadata.namespace, uidOf(cur));
          await this.#applyInNamespace(src, obj, { absent: true });
          return;
        }
        // Only the object seen (a user may have created theirs since), or only if none exists.
        await this.#applyInNamespace(src, obj, cur ? { uid: cur.metadata.uid ?? '' } : { absent: true });
      });
    }
    for (const [key, cur] of observedServices) {
      if (services.has(key) || !isManaged(cur)) continue;
      this.#once(`${m.name}|Service|${key}`, 'deleted', writes, () => src.delete(Kinds.Service, cur.metadata.name, cur.metadata.namespace, uidOf(cur)));
    }

    // ServiceExport conditions.
    for (const [key, exp] of inScope(m.exports!)) {
      const want = conditions.get(key);
      if (!want) continue;
      const have = exp.status?.conditions;
      if (!conditionsDiffer(have, want, exp.metadata.generation)) continue;
      const next = mergeConditions(have, want, now, exp.metadata.generation);
      const becameConflict = want.some((c) => c.type === 'Conflict' && c.status === 'True') && !have?.some((c) => c.type === 'Conflict' && c.status === 'True');
      this.#once(`${m.name}|ServiceExport|${key}`, `status:${canonical(want)}`, writes, async () => {
        await src.writeStatus(Kinds.ServiceExport, exp.metadata.name, exp.metadata.namespace, { conditions: next });
        const bad = want.find((c) => c.status === 'True' && c.type === 'Conflict') ?? want.find((c) => c.type === 'Valid' && c.status === 'False');
        if (bad && (becameConflict || bad.type === 'Valid')) void src.event(exp, { type: 'Warning', reason: bad.reason, message: bad.message });
      });
    }
  }

  /** Creates the namespace when the member has none of that name (Kubernetes refuses objects in a missing one). */
  async #applyInNamespace(src: Source, obj: KubeObject, precondition?: Precondition): Promise<KubeObject> {
    const options = { manager: MANAGER, ...(precondition ? { precondition } : {}) };
    try {
      return await src.apply(obj, options);
    } catch (err) {
      if (!(err instanceof SourceError) || err.code !== 'ECNET_SOURCE_NOT_FOUND' || !obj.metadata.namespace) throw err;
      await src.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: obj.metadata.namespace, labels: { ...managedLabels } } }, { manager: MANAGER });
      return await src.apply(obj, options);
    }
  }

  #derivedObject(d: DerivedService): Service {
    return {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: d.name, namespace: d.namespace, labels: { ...managedLabels, 'flomesh.io/service-import': d.name } },
      spec: d.spec,
    };
  }

  #planClusterStatus(members: Member[], nowMs: number, writes: (() => Promise<void>)[]): void {
    const now = iso(nowMs);
    for (const m of members) {
      const state = m.state;
      const since = m.unreachableSince;
      const cond: ConditionInput =
        state === 'ready'
          ? { type: 'Managed', status: 'True', reason: 'Connected', message: `reading ${m.source?.description ?? 'member'}` }
          : state === 'failed'
            ? {
                type: 'Managed',
                status: 'False',
                reason: m.connectError instanceof SourceError && m.connectError.code === 'ECNET_SOURCE_UNREACHABLE' ? 'Unreachable' : 'InvalidCredentials',
                message: `${m.connectError?.message ?? 'cannot connect'} (retrying)`,
              }
            : state === 'connecting'
              ? { type: 'Managed', status: 'False', reason: 'Connecting', message: `not read yet${m.lastError ? `: ${m.lastError.message}` : ''}` }
              : {
                  type: 'Managed',
                  status: 'False',
                  reason: since !== undefined && nowMs - since >= this.#timeout ? 'ExportsWithdrawn' : 'Unreachable',
                  message:
                    since !== undefined && nowMs - since >= this.#timeout
                      ? `unreachable since ${iso(since)}; its exports were withdrawn after ${this.#timeout / 1000}s: ${m.lastError?.message ?? ''}`
                      : `unreachable since ${iso(since ?? nowMs)}; its exports are kept until ${iso((since ?? nowMs) + this.#timeout)}: ${m.lastError?.message ?? ''}`,
                };
      const have = (m.cluster.status?.conditions ?? []) as Condition[];
      if (!conditionsDiffer(have, [cond])) continue;
      const next = mergeConditions(have, [cond], now);
      this.#once(`control-plane|Cluster|${m.name}`, `status:${canonical(cond)}`, writes, async () => {
        await this.#controlPlane.writeStatus(Kinds.Cluster, m.name, undefined, { conditions: next });
        // The control-plane cluster's own informer reports the write; until then the memo holds it.
      });
    }
  }

  /** Stops watching; writes in flight finish. Leaves what was written in place (a restart takes over). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#clock.clearTimeout(this.#resync);
    await this.#passes.close();
    this.#clusters?.close();
    for (const m of this.#members.values()) m.close();
    this.#members.clear();
  }

  destroy(err?: Error): void {
    if (this.#closed) return;
    if (err) this.#log.error({ err }, 'controller aborted');
    this.#closed = true;
    void this.#passes.close();
    this.#clock.clearTimeout(this.#resync);
    this.#clusters?.close();
    for (const m of this.#members.values()) m.close();
    this.#members.clear();
  }
}
