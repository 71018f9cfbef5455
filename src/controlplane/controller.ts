// The hub: reads Cluster resources, watches exports and services in every member, and keeps in every member
// the ServiceImports (and derived Services) that a fresh aggregation of the current state asks for.
//
// One reconcile pass at a time, for all members: aggregation is cheap next to the writes, and a single pass
// cannot race itself. A pass writes only differences; a write whose result the informers have not reported
// yet is not repeated (the in-flight memo), so a burst of events costs one write per object.
// Nothing is removed on a partial view: until every member known at start has been read once (or has been
// unreachable for memberTimeoutMs), the controller does not write imports, and an unreachable member keeps its
// last known exports for memberTimeoutMs before they are dropped.
import type { Service } from '../api/core.js';
import type { Cluster, Condition, ServiceExport, ServiceImport } from '../api/flomesh.js';
import { type Logger, componentLogger } from '../logger.js';
import { Backoff, type Clock, systemClock } from '../sources/backoff.js';
import { Kinds, type Informer, type KindRef, type KubeObject, MANAGED_BY, MANAGED_BY_LABEL, type Source, SourceError, type WatchEvent, objectKey } from '../sources/source.js';
import { type ConditionInput, canonical, conditionsDiffer, mergeConditions } from './conditions.js';
import { type DerivedService, type DesiredImport, type MemberView, aggregate, isManaged } from './aggregate.js';
import { Member, type MemberConnector, clusterKeyOf, credentialsOf } from './members.js';

export interface ControllerOptions {
  /** The control-plane cluster, where the Cluster resources are. */
  hub: Source;
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

export const MANAGER = 'ecnet-controller';
const managedLabels = { [MANAGED_BY_LABEL]: MANAGED_BY };

export interface PassStats {
  writes: number;
  failures: number;
  gated: boolean;
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

export class Controller {
  readonly #hub: Source;
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
  #timer: unknown;
  #resync: unknown;
  #running: Promise<void> | undefined;
  #again = false;
  #closed = false;
  #idleWaiters: (() => void)[] = [];
  #lastPass: PassStats = { writes: 0, failures: 0, gated: true };
  passes = 0;

  constructor(options: ControllerOptions) {
    this.#hub = options.hub;
    this.#connect = options.connect;
    this.#timeout = options.memberTimeoutMs ?? 120_000;
    this.#resyncMs = options.resyncMs ?? 30_000;
    this.#debounceMs = options.debounceMs ?? 10;
    this.#concurrency = options.concurrency ?? 32;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.logger ?? componentLogger('controller');
  }

  /** Starts watching the hub's Cluster resources; resolves once they are listed. */
  async start(): Promise<void> {
    this.#startedAt = this.#clock.now();
    this.#clusters = this.#hub.informer<Cluster>(Kinds.Cluster, {
      onEvent: (e) => {
        this.#inflight.delete(`hub|Cluster|${e.object.metadata.name}`);
        this.trigger();
      },
      onHealth: (err) => {
        if (err) this.#log.warn({ err: err.message }, 'control-plane source unreachable');
        this.trigger();
      },
    });
    await this.#clusters.synced;
    this.trigger();
    this.#scheduleResync();
  }

  #scheduleResync(): void {
    if (this.#closed) return;
    this.#resync = this.#clock.setTimeout(() => {
      this.trigger();
      this.#scheduleResync();
    }, this.#resyncMs);
    (this.#resync as { unref?: () => void }).unref?.();
  }

  /** Asks for a pass (coalesced with others within debounceMs). */
  trigger(): void {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    if (this.#timer !== undefined) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#running = this.#pass()
        .catch((err: unknown) => this.#log.error({ err }, 'reconcile pass failed'))
        .finally(() => {
          this.#running = undefined;
          if (this.#again) {
            this.#again = false;
            this.trigger();
          } else if (this.#lastPass.writes === 0 && this.#lastPass.failures === 0 && !this.#lastPass.gated) {
            for (const w of this.#idleWaiters.splice(0)) w();
          }
        });
    }, this.#debounceMs);
  }

  /** Resolves after the next pass that found nothing to write (everything converged). */
  idle(): Promise<void> {
    return new Promise((resolve) => {
      this.#idleWaiters.push(resolve);
      this.trigger();
    });
  }

  get lastPass(): PassStats {
    return this.#lastPass;
  }

  /** For `ecnet controller` status and tests: each member's state and why. */
  members(): { name: string; state: string; error?: string }[] {
    return [...this.#members.values()].map((m) => ({ name: m.name, state: m.state, ...(m.lastError ? { error: m.lastError.message } : {}) }));
  }

  #onMemberEvent(member: string, e?: WatchEvent): void {
    if (e) this.#inflight.delete(`${member}|${e.object.kind}|${objectKey(e.object)}`);
    this.trigger();
  }

  /** Members follow the Cluster resources: new ones connect, changed credentials reconnect, deleted ones go. */
  async #syncMembers(clusters: Cluster[]): Promise<void> {
    const now = this.#clock.now();
    const names = new Set(clusters.map((c) => c.metadata.name));
    for (const [name, m] of this.#members) {
      if (!names.has(name)) {
        this.#members.delete(name);
        await this.#forget(m);
      }
    }
    for (const c of clusters) {
      const m = this.#members.get(c.metadata.name);
      if (m && m.credentials === credentialsOf(c)) {
        m.cluster = c;
        continue;
      }
      const next = new Member(c, now);
      if (m) {
        // Reconnecting: what the old connection knew stands in until the new one has read the member.
        next.lastKnown = m.readable ? this.#snapshot(m) : m.lastKnown;
        next.unreachableSince = now;
        m.close();
      }
      this.#members.set(c.metadata.name, next);
      void next.connect(this.#connect, (e) => this.#onMemberEvent(next.name, e), this.#log);
    }
  }

  /** A member whose Cluster was deleted: its managed imports and Services go (best effort), then its source. */
  async #forget(m: Member): Promise<void> {
    this.#log.info({ member: m.name }, 'cluster removed; cleaning up what ecnet wrote there');
    if (m.readable && m.source) {
      const src = m.source;
      const doomed: [KindRef, KubeObject][] = [
        ...(m.imports?.list().filter(isManaged) ?? []).map((o): [KindRef, KubeObject] => [Kinds.ServiceImport, o]),
        ...(m.services?.list().filter(isManaged) ?? []).map((o): [KindRef, KubeObject] => [Kinds.Service, o]),
      ];
      await Promise.allSettled(doomed.map(([k, o]) => src.delete(k, o.metadata.name, o.metadata.namespace)));
    }
    m.close();
  }

  #snapshot(m: Member): { exports: ServiceExport[]; services: Service[] } {
    return { exports: m.exports?.list() ?? [], services: m.services?.list() ?? [] };
  }

  async #pass(): Promise<void> {
    if (this.#closed || !this.#clusters) return;
    this.passes++;
    const now = this.#clock.now();
    const clusters = this.#clusters.list();
    this.#initial ??= new Set(clusters.map((c) => c.metadata.name));
    await this.#syncMembers(clusters);
    const members = [...this.#members.values()];

    // Each member's view: live when readable, else the last known state within the timeout.
    const views: MemberView[] = [];
    let gated = false;
    for (const m of members) {
      const gw = m.cluster.spec.gatewayHost ? { host: m.cluster.spec.gatewayHost, port: m.cluster.spec.gatewayPort } : undefined;
      const base = { name: m.name, key: clusterKeyOf(m.cluster), gateway: gw };
      if (m.readable) {
        m.unreachableSince = undefined;
        m.lastKnown = this.#snapshot(m);
        views.push({ ...base, ...m.lastKnown });
        continue;
      }
      m.unreachableSince ??= now;
      const expired = now - m.unreachableSince >= this.#timeout;
      if (!m.lastKnown && this.#initial?.has(m.name) && now - this.#startedAt < this.#timeout) gated = true;
      if (m.lastKnown && !expired) views.push({ ...base, ...m.lastKnown });
      else views.push({ ...base, exports: [], services: m.lastKnown?.services ?? [] });
    }

    const writes: (() => Promise<void>)[] = [];
    if (!gated) {
      const desired = aggregate(views);
      for (const m of members) {
        if (!m.readable) continue;
        const d = desired.get(m.name)!;
        this.#planMember(m, d.imports, d.services, d.exportConditions, writes);
      }
    }
    this.#planClusterStatus(members, now, writes);
    const failures = await this.#run(writes);
    this.#lastPass = { writes: writes.length, failures, gated };
    this.#log.debug({ pass: this.passes, members: members.length, writes: writes.length, failures, gated, ms: this.#clock.now() - now }, 'reconcile pass');
    if (failures) {
      const delay = this.#retry.next();
      this.#log.warn({ failures, retryMs: delay }, 'some writes failed; retrying');
      const t = this.#clock.setTimeout(() => this.trigger(), delay);
      (t as { unref?: () => void }).unref?.();
    } else if (writes.length === 0) {
      this.#retry.reset();
    }
    if (gated) {
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
          this.#log.warn({ err: (err as Error).message, code: (err as SourceError).code }, 'write failed');
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

  #planMember(m: Member, imports: Map<string, DesiredImport>, services: Map<string, DerivedService>, conditions: Map<string, ConditionInput[]>, writes: (() => Promise<void>)[]): void {
    const src = m.source!;
    const now = iso(this.#clock.now());

    // ServiceImports: spec, then status.clusters.
    const observedImports = new Map(m.imports!.list().map((o) => [objectKey(o), o]));
    for (const [key, d] of imports) {
      const cur = observedImports.get(key);
      const spec = d.spec;
      const status = { clusters: d.clusters.map((cluster) => ({ cluster })) };
      if (cur && !isManaged(cur)) {
        this.#log.warn({ member: m.name, import: key }, 'a ServiceImport of this name exists and is not managed by ecnet; left alone');
        continue;
      }
      if (!cur || canonical(cur.spec) !== canonical(spec)) {
        const obj: ServiceImport = { apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceImport', metadata: { name: d.name, namespace: d.namespace, labels: { ...managedLabels } }, spec };
        this.#once(`${m.name}|ServiceImport|${key}`, canonical(spec), writes, async () => {
          await this.#applyInNamespace(src, obj);
          await src.writeStatus(Kinds.ServiceImport, d.name, d.namespace, status);
        });
      } else if (canonical(cur.status ?? {}) !== canonical(status)) {
        this.#once(`${m.name}|ServiceImport|${key}`, `status:${canonical(status)}`, writes, () => src.writeStatus(Kinds.ServiceImport, d.name, d.namespace, status));
      }
    }
    for (const [key, cur] of observedImports) {
      if (imports.has(key) || !isManaged(cur)) continue;
      this.#once(`${m.name}|ServiceImport|${key}`, 'deleted', writes, () => src.delete(Kinds.ServiceImport, cur.metadata.name, cur.metadata.namespace));
    }

    // Derived Services.
    const observedServices = new Map(m.services!.list().map((o) => [objectKey(o), o]));
    for (const [key, d] of services) {
      const cur = observedServices.get(key);
      if (cur && !isManaged(cur)) continue;
      const want = { ports: d.spec.ports, sessionAffinity: d.spec.sessionAffinity, headless: d.spec.clusterIP === 'None' };
      const have = cur && {
        ports: (cur.spec.ports ?? []).map((p) => ({ ...(p.name ? { name: p.name } : {}), protocol: p.protocol ?? 'TCP', ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}), port: p.port, targetPort: p.targetPort ?? p.port })),
        sessionAffinity: cur.spec.sessionAffinity ?? 'None',
        headless: cur.spec.clusterIP === 'None',
      };
      if (have && canonical(have) === canonical(want)) continue;
      const obj: Service = {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: d.name, namespace: d.namespace, labels: { ...managedLabels, 'flomesh.io/service-import': d.name } },
        spec: d.spec,
      };
      this.#once(`${m.name}|Service|${key}`, canonical(want), writes, () => this.#applyInNamespace(src, obj));
    }
    for (const [key, cur] of observedServices) {
      if (services.has(key) || !isManaged(cur)) continue;
      this.#once(`${m.name}|Service|${key}`, 'deleted', writes, () => src.delete(Kinds.Service, cur.metadata.name, cur.metadata.namespace));
    }

    // ServiceExport conditions.
    for (const exp of m.exports!.list()) {
      const key = objectKey(exp);
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
  async #applyInNamespace(src: Source, obj: KubeObject): Promise<void> {
    try {
      await src.apply(obj, { manager: MANAGER });
    } catch (err) {
      if (!(err instanceof SourceError) || err.code !== 'ECNET_SOURCE_NOT_FOUND' || !obj.metadata.namespace) throw err;
      await src.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: obj.metadata.namespace, labels: { ...managedLabels } } }, { manager: MANAGER });
      await src.apply(obj, { manager: MANAGER });
    }
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
            ? { type: 'Managed', status: 'False', reason: 'InvalidCredentials', message: m.connectError?.message ?? 'cannot connect' }
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
      this.#once(`hub|Cluster|${m.name}`, `status:${canonical(cond)}`, writes, async () => {
        await this.#hub.writeStatus(Kinds.Cluster, m.name, undefined, { conditions: next });
        // The hub's own informer reports the write; until then the memo holds it.
      });
    }
  }

  /** Stops watching; writes in flight finish. Leaves what was written in place (a restart takes over). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#clock.clearTimeout(this.#timer);
    this.#clock.clearTimeout(this.#resync);
    await this.#running;
    this.#clusters?.close();
    for (const m of this.#members.values()) m.close();
    this.#members.clear();
    for (const w of this.#idleWaiters.splice(0)) w();
  }

  destroy(err?: Error): void {
    if (this.#closed) return;
    if (err) this.#log.error({ err: err.message }, 'controller aborted');
    this.#closed = true;
    this.#clock.clearTimeout(this.#timer);
    this.#clock.clearTimeout(this.#resync);
    this.#clusters?.close();
    for (const m of this.#members.values()) m.close();
    this.#members.clear();
    for (const w of this.#idleWaiters.splice(0)) w();
  }
}
