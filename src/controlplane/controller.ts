// The control-plane cluster: reads Cluster resources, watches exports and services in every member, and keeps in every member
// the ServiceImports (and derived Services) that a fresh aggregation of the current state asks for. Exports and
// imports of both APIs: flomesh.io and the MCS API (multicluster.x-k8s.io, KEP-1645).
//
// One reconcile pass at a time, for all members: aggregation is cheap next to the writes, and a single pass
// cannot race itself. A pass writes only differences; a write whose result the informers have not reported
// yet is not repeated (the in-flight memo), so a burst of events costs one write per object.
// Nothing is removed on a partial view: until every member known at start has been read once (or has been
// unreachable for memberTimeoutMs), the controller does not write imports, and an unreachable member keeps its
// last known exports for memberTimeoutMs before they are dropped.
import { CONTROLLER_NAME, defaults } from '../defaults.js';
import { type Namespace, type Secret, type Service, clusterIPsOf } from '../api/core.js';
import type { Cluster, Condition } from '../api/flomesh.js';
import { type Logger, componentLogger } from '../logger.js';
import { Backoff } from '../util/backoff.js';
import { type Clock, rfc3339 as iso, systemClock } from '../util/time.js';
import { Coalescer } from '../util/coalescer.js';
import { Kinds, type Informer, type KubeObject, type Precondition, type Source, SourceError, type WatchEvent, objectKey } from '../sources/source.js';
import { canonical, conditionsDiffer, mergeConditions } from './conditions.js';
import { type MemberDesired, type MemberView, aggregate, isManaged, mcsExportView } from './aggregate.js';
import { MCS_SERVICE_NAME_LABEL, type PlannedWrite, memoKind, planCleanup, planMember } from './member-plan.js';
import { IDENTITY_SECRET, IdentityIssuer } from './identities.js';
import { Member, type MemberConnector, cachedIn, clusterKeyOf, credentialsOf, withDefaults } from './members.js';
import type { ControllerObserver, MemberCounts } from './metrics.js';

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
  /**
   * Cluster identities: the CA in `namespace` of the control-plane cluster, and each member's certificate in
   * the same namespace of the member (see identities.ts). Undefined: the controller issues none.
   */
  identities?: { namespace: string; clusterSet: string; ttlMs?: number };
  /** Told of passes, writes and export changes (metrics.ts); reads the members at each scrape. */
  metrics?: ControllerObserver;
}

export const MANAGER = CONTROLLER_NAME;

/** The longest a label write on a user's Service that keeps being undone waits (see #labelDamped). */
const LABEL_DAMP_MAX_MS = 30_000;

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
  /** `namespace/name` of each kubeconfig Secret a Cluster refers to → its informer. */
  readonly #secretWatches = new Map<string, Informer<Secret>>();
  /** Label writes on users' Services (memo key) → how many in a row, the last one's time (see #labelDamped). */
  readonly #labelWrites = new Map<string, { count: number; at: number; timer: boolean }>();
  /** canonical() of objects from the informers' caches (immutable until replaced by an event). */
  readonly #canon = new WeakMap<object, string>();
  passes = 0;
  readonly #issuer: IdentityIssuer | undefined;
  /** The Secret each member's identity informer watches (when identities are issued). */
  readonly #identitySecret: { namespace: string; name: string } | undefined;
  readonly #metrics: ControllerObserver | undefined;

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
    const ids = options.identities;
    this.#identitySecret = ids ? { namespace: ids.namespace, name: IDENTITY_SECRET } : undefined;
    this.#issuer = ids ? new IdentityIssuer({ controlPlane: this.#controlPlane, ...ids, manager: MANAGER, log: this.#log, now: () => this.#clock.now() }) : undefined;
    this.#metrics = options.metrics;
    this.#metrics?.attach(() => this.#memberCounts());
  }

  /** Each member's state and what its caches hold, for the metrics. */
  #memberCounts(): MemberCounts[] {
    const now = this.#clock.now();
    return [...this.#members.values()].map((m) => {
      const withdrawn = m.unreachableSince !== undefined && now - m.unreachableSince >= this.#timeout;
      const exports = (m.exports?.list().length ?? 0) + m.mcsExportsIn(undefined).length;
      const imports = (m.imports?.list().filter(isManaged).length ?? 0) + m.mcsImportsIn(undefined).filter(isManaged).length;
      return { name: m.name, up: m.readable, exports: withdrawn ? 0 : exports, imports };
    });
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
    this.#resync = this.#later(() => {
      this.#full = true;
      this.#forgetMemo = true;
      this.trigger();
      this.#scheduleResync();
    }, this.#resyncMs);
  }

  /** A timer that does not hold the process open. */
  #later(fn: () => void, ms: number): unknown {
    const t = this.#clock.setTimeout(fn, ms);
    t.unref?.();
    return t;
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
      this.#metrics?.passThrew(this.#clock.now());
      this.#full = true;
      this.#later(() => this.trigger(), this.#retry.next());
    }
  }

  /** An object event makes its service dirty; a health or sync change of a member calls for a full pass. */
  #onMemberEvent(member: string, e?: WatchEvent): void {
    if (e) {
      const key = objectKey(e.object);
      const group = e.object.apiVersion.includes('/') ? e.object.apiVersion.split('/')[0]! : '';
      this.#inflight.delete(`${member}|${memoKind({ group, kind: e.object.kind })}|${key}`);
      if (e.object.kind === 'Service') this.#inflight.delete(`${member}|ServiceLabel|${key}`);
      // An MCS import's EndpointSlice is about the service its label names.
      const sliceOf = e.object.kind === 'EndpointSlice' ? e.object.metadata.labels?.[MCS_SERVICE_NAME_LABEL] : undefined;
      this.#dirty.add(sliceOf !== undefined ? `${e.object.metadata.namespace ?? 'default'}/${sliceOf}` : key);
      if (e.object.kind === 'ServiceExport') this.#metrics?.exportEvent(member, e, this.#clock.now());
    } else {
      this.#full = true;
      const m = this.#members.get(member);
      // Both APIs' exports listed (or the MCS API not served there): what is there now is not a change.
      if (m?.exports?.isSynced && m.view(undefined)) this.#metrics?.exportsListed(member, () => [...m.exports!.list(), ...m.mcsExportsIn(undefined)]);
    }
    this.trigger();
  }

  /** Members follow the Cluster resources: new ones connect, changed credentials reconnect, deleted ones go. */
  async #syncMembers(clusters: Cluster[], full: boolean): Promise<void> {
    const now = this.#clock.now();
    const names = new Set(clusters.map((c) => c.metadata.name));
    this.#dropSecretWatches(clusters);
    for (const [name, m] of this.#members) {
      if (!names.has(name)) {
        this.#members.delete(name);
        this.#secretVersions.delete(name);
        this.#metrics?.memberRemoved(name);
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
        next.lastKnown = m.view(undefined);
        next.unreachableSince = m.unreachableSince ?? now;
        m.close();
      }
      this.#members.set(c.metadata.name, next);
      void next.connect(this.#connect, (e) => this.#onMemberEvent(next.name, e), this.#log, this.#clock, this.#identitySecret);
    }
  }

  /**
   * What decides a member's connection. For a kubeconfig in a Secret that includes the Secret's version, read
   * again on full passes, so a rotated (or newly created) Secret reconnects the member.
   */
  async #credentials(c: Cluster, look: boolean): Promise<string> {
    const ref = c.spec.kubeconfigSecretRef;
    if (!ref) return credentialsOf(c);
    // Watched: its version is the watch's, with no request (an event of it calls for a full pass).
    const watched = this.#kubeconfigSecret(ref.namespace, ref.name);
    if (watched?.isSynced && watched.healthy) {
      const version = watched.get(ref.name, ref.namespace)?.metadata.resourceVersion ?? 'absent';
      this.#secretVersions.set(c.metadata.name, version);
      return `${credentialsOf(c)}|${version}`;
    }
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

  /**
   * The informer of one kubeconfig Secret (by field selector), made when a Cluster first refers to it. Until it
   * has listed (or if it cannot: RBAC without list/watch) the Secret is read with a GET on full passes.
   */
  #kubeconfigSecret(namespace: string, name: string): Informer<Secret> | undefined {
    if (this.#closed) return undefined;
    const key = `${namespace}/${name}`;
    let i = this.#secretWatches.get(key);
    if (!i) {
      const changed = () => {
        this.#full = true;
        this.trigger();
      };
      i = this.#controlPlane.informer<Secret>(Kinds.Secret, { namespace, fieldSelector: `metadata.name=${name}`, onEvent: changed, onHealth: () => undefined });
      i.synced.then(changed, () => undefined);
      this.#secretWatches.set(key, i);
    }
    return i;
  }

  /** Stops watching kubeconfig Secrets no Cluster refers to any more. */
  #dropSecretWatches(clusters: Cluster[]): void {
    const used = new Set(clusters.flatMap((c) => (c.spec.kubeconfigSecretRef ? [`${c.spec.kubeconfigSecretRef.namespace}/${c.spec.kubeconfigSecretRef.name}`] : [])));
    for (const [key, i] of this.#secretWatches) {
      if (used.has(key)) continue;
      i.close();
      this.#secretWatches.delete(key);
    }
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
      const slices = m.mcsSlicesIn(undefined);
      const doomed = planCleanup(m.name, { imports: m.imports!.list(), mcsImports: m.mcsImportsIn(undefined), services: m.services!.list(), ...(slices ? { mcsSlices: slices } : {}) });
      await Promise.allSettled(doomed.map((w) => this.#perform(src, w)));
    }
    m.close();
  }

  #canonicalOf(o: object): string {
    let c = this.#canon.get(o);
    if (c === undefined) this.#canon.set(o, (c = canonical(o)));
    return c;
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
    this.#metrics?.passBegins(scope ? 'scoped' : 'full', now);

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
      const known = m.view(scope);
      if (!known && this.#initial?.has(m.name) && now - this.#startedAt < this.#timeout) gated = true;
      const view = known ?? { exports: [], services: [], mcsExports: [] };
      views.push({ ...base, exports: expired ? [] : [...view.exports, ...view.mcsExports.map(mcsExportView)], services: view.services });
    }

    // Withdraw an unreachable member's exports when its time is up, not at the next resync.
    const expiries = members.map((m) => (m.unreachableSince === undefined ? Infinity : m.unreachableSince + this.#timeout - now)).filter((d) => d > 0 && d < Infinity);
    if (expiries.length) {
      this.#later(() => {
        this.#full = true;
        this.trigger();
      }, Math.min(...expiries) + 1);
    }

    const writes: (() => Promise<void>)[] = [];
    let desired: Map<string, MemberDesired> | undefined;
    if (!gated) {
      desired = aggregate(views);
      const mcsReady = this.#mcsReady(members, desired, scope);
      for (const m of members) {
        if (!m.readable) continue;
        const d = desired.get(m.name)!;
        this.#planMember(m, d, writes, scope, mcsReady);
      }
    }
    this.#planClusterStatus(members, now, writes);
    // Identities on full passes only: a certificate lives a day, so a check every resync is plenty.
    if (!scope && this.#issuer) writes.push(...this.#issuer.checks(members.map((m) => ({ source: m.readable ? m.source : undefined, cluster: clusterKeyOf(m.cluster), held: (name, namespace) => m.heldIdentity(name, namespace) }))));
    const failures = await this.#run(writes);
    this.#metrics?.passEnds({ endedMs: this.#clock.now(), failures, desired, scope, closed: this.#closed });
    this.#log.debug({ pass: this.passes, scope: scope ? scope.size : 'all', writes: writes.length, failures, gated, ms: this.#clock.now() - now }, 'reconcile pass');
    if (failures) {
      this.#full = true;
      const delay = this.#retry.next();
      this.#log.warn({ failures, retryMs: delay }, 'some writes failed; retrying');
      this.#later(() => this.trigger(), delay);
    } else if (writes.length === 0) {
      this.#retry.reset();
    }
    if (gated) {
      this.#full = true;
      // Look again when the wait for unread members runs out.
      this.#later(() => this.trigger(), Math.max(10, this.#startedAt + this.#timeout - now));
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
        this.#metrics?.written(key, true);
      } catch (err) {
        this.#inflight.delete(key);
        this.#metrics?.written(key, false);
        throw err;
      }
    });
  }

  /**
   * The services (`namespace/name`) whose MCS imports every readable member holds as desired, spec and status:
   * their MCS exports are Ready. A member whose API server does not serve the MCS kinds is not waited for.
   */
  #mcsReady(members: Member[], desired: Map<string, MemberDesired>, scope: Set<string> | undefined): (key: string) => boolean {
    const pending = new Set<string>();
    for (const m of members) {
      if (!m.readable || !m.servesMcsImports) continue;
      const held = new Map(m.mcsImportsIn(scope).map((o) => [objectKey(o), o]));
      for (const [key, d] of desired.get(m.name)?.mcsImports ?? []) {
        const h = held.get(key);
        const status = { clusters: d.clusters.map((cluster) => ({ cluster })) };
        if (!h || !isManaged(h) || this.#canonicalOf(h.spec) !== canonical(d.spec) || canonical(h.status ?? {}) !== canonical(status)) pending.add(key);
      }
    }
    return (key) => !pending.has(key);
  }

  /** Queues the writes that make member `m` hold what it must (its planned writes, through the memo). */
  #planMember(m: Member, desired: MemberDesired, writes: (() => Promise<void>)[], scope: Set<string> | undefined, mcsReady?: (key: string) => boolean): void {
    const src = m.source!;
    const slices = m.mcsSlicesIn(scope);
    const holds = {
      imports: cachedIn(m.imports!, scope),
      services: cachedIn(m.services!, scope),
      exports: cachedIn(m.exports!, scope),
      mcsImports: m.mcsImportsIn(scope),
      mcsExports: m.mcsExportsIn(scope),
      ...(slices ? { mcsSlices: slices } : {}),
    };
    // No MCS imports where the kind is not served (its CRD not installed): writes there would only fail.
    const wanted = m.servesMcsImports ? desired : { ...desired, mcsImports: new Map() };
    const plan = planMember({ member: m.name, holds, desired: wanted, now: iso(this.#clock.now()), canonicalOf: (o) => this.#canonicalOf(o), ...(mcsReady ? { mcsReady } : {}) });
    for (const key of plan.leftAlone) this.#log.warn({ member: m.name, import: key }, 'a ServiceImport of this name exists and is not managed by ecnet; left alone');
    for (const w of plan.writes) {
      if (w.key.includes('|ServiceLabel|') && this.#labelDamped(w)) continue;
      this.#once(w.key, w.content, writes, () => this.#perform(src, w));
    }
  }

  /**
   * Whether a label write on a user's Service waits: written again and again (another controller that owns
   * the Service's labels takes it off each time), it is written at most after a doubling delay (250 ms to
   * LABEL_DAMP_MAX_MS), not at the speed of the watch. A label left alone for LABEL_DAMP_MAX_MS starts afresh.
   */
  #labelDamped(w: PlannedWrite): boolean {
    const now = this.#clock.now();
    const h = this.#labelWrites.get(w.key);
    const fresh = !h || now - h.at >= LABEL_DAMP_MAX_MS * 2;
    const count = fresh ? 0 : h.count;
    const wait = count < 2 ? 0 : Math.min(LABEL_DAMP_MAX_MS, 250 * 2 ** (count - 2));
    if (!fresh && now - h.at < wait) {
      if (!h.timer) {
        const step = w.steps[0] as { namespace?: string; name: string };
        const key = `${step.namespace ?? 'default'}/${step.name}`;
        h.timer = true;
        this.#later(() => {
          h.timer = false;
          this.#dirty.add(key);
          this.trigger();
        }, h.at + wait - now);
      }
      return true;
    }
    this.#labelWrites.set(w.key, { count: count + 1, at: now, timer: false });
    if (this.#labelWrites.size > 1000) for (const [k, v] of this.#labelWrites) if (now - v.at >= LABEL_DAMP_MAX_MS * 2 && !v.timer) this.#labelWrites.delete(k);
    return false;
  }

  /** Runs a planned write's steps in order. */
  async #perform(src: Source, w: PlannedWrite): Promise<void> {
    /** The Service an earlier step created: its ClusterIPs are the address of the imports after it. */
    let service: Service | undefined;
    /** What this write's earlier steps wrote: a status step after them writes against that version. */
    const wrote = new Map<string, KubeObject>();
    for (const s of w.steps) {
      if (s.op === 'delete') await src.delete(s.kind, s.name, s.namespace, s.precondition ?? {});
      else if (s.op === 'status') await src.writeStatus(s.kind, s.name, s.namespace, s.status, wrote.get(`${s.kind.group}/${s.kind.kind}/${s.namespace ?? ''}/${s.name}`) ?? s.seen);
      else if (s.op === 'event') void src.event(s.object, s.note);
      else if (s.op === 'label') {
        try {
          await src.label(s.kind, s.name, s.namespace, s.labels);
        } catch (err) {
          if (!s.bestEffort) throw err;
          this.#log.warn({ err, service: `${s.namespace}/${s.name}` }, 'could not label the Service before its import; tried again on its own');
        }
      }
      else {
        const ips = s.ipsOfPrevious && service ? clusterIPsOf(service).slice(0, s.ipsLimit ?? Infinity) : [];
        const obj = ips.length ? { ...s.object, spec: { ...(s.object.spec as object), ips } } : s.object;
        let written: KubeObject;
        try {
          written = await this.#applyInNamespace(src, obj, s.precondition, s.ensureNamespace, s.seen);
        } catch (err) {
          // An EndpointSlice of that name that is not ecnet's (the informer sees ecnet's only): left alone, as a
          // foreign ServiceImport is, and not a failure (which would retry the whole pass with backoff). Tried
          // again at the next resync.
          if (obj.kind === 'EndpointSlice' && s.precondition && 'absent' in s.precondition && err instanceof SourceError && err.code === 'ECNET_SOURCE_CONFLICT') {
            this.#log.info({ slice: `${obj.metadata.namespace}/${obj.metadata.name}` }, 'an EndpointSlice of this name exists and is not managed by ecnet; left alone');
            return;
          }
          throw err;
        }
        if (written.kind === 'Service') service = written as Service;
        const [group] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') : [''];
        wrote.set(`${group}/${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`, written);
      }
    }
  }

  /** Creates the namespace when the member has none of that name (Kubernetes refuses objects in a missing one). */
  async #applyInNamespace(src: Source, obj: KubeObject, precondition: Precondition | undefined, namespace: Namespace | undefined, seen: KubeObject | null | undefined): Promise<KubeObject> {
    const options = { manager: MANAGER, ...(precondition ? { precondition } : {}) };
    try {
      return await src.apply(obj, { ...options, ...(seen !== undefined ? { seen } : {}) });
    } catch (err) {
      if (!(err instanceof SourceError) || err.code !== 'ECNET_SOURCE_NOT_FOUND' || !namespace) throw err;
      await src.apply(namespace, { manager: MANAGER });
      return await src.apply(obj, options);
    }
  }

  #planClusterStatus(members: Member[], nowMs: number, writes: (() => Promise<void>)[]): void {
    const now = iso(nowMs);
    for (const m of members) {
      const cond = m.managedCondition(nowMs, this.#timeout);
      const have = (m.cluster.status?.conditions ?? []) as Condition[];
      if (!conditionsDiffer(have, [cond])) continue;
      const next = mergeConditions(have, [cond], now);
      this.#once(`control-plane|Cluster|${m.name}`, `status:${canonical(cond)}`, writes, async () => {
        await this.#controlPlane.writeStatus(Kinds.Cluster, m.name, undefined, { conditions: next }, this.#clusters?.get(m.name));
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
    for (const i of this.#secretWatches.values()) i.close();
    this.#secretWatches.clear();
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
    for (const i of this.#secretWatches.values()) i.close();
    this.#secretWatches.clear();
    for (const m of this.#members.values()) m.close();
    this.#members.clear();
  }
}
