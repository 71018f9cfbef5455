// The node agent's reconciler: ServiceImports, GlobalTrafficPolicies, Services and EndpointSlices of its
// cluster → the redirect set in the datapath (written as a diff) and the proxy's route table. Nothing is
// written before every informer has listed once, so a restarted agent leaves the pinned datapath as it is
// until it knows better; a failed write is retried with backoff. One reconcile at a time.
import { type EndpointSlice, SERVICE_NAME_LABEL, type Service } from '../api/core.js';
import { type ClusterKey, type GlobalTrafficPolicy, IMPORTED_LABEL, type ServiceImport } from '../api/flomesh.js';
import type { ServiceEntry } from '../bpf/services.js';
import type { ServiceKey } from '../bpf/codecs.js';
import { SliceIndex, ownerOf } from '../endpoints/slices.js';
import { type Logger, componentLogger } from '../logger.js';
import type { Route, RouteTable } from '../proxy/proxy.js';
import { Backoff } from '../util/backoff.js';
import { type Clock, systemClock } from '../util/time.js';
import { Coalescer } from '../util/coalescer.js';
import { type Informer, Kinds, MANAGED_BY, MANAGED_BY_LABEL, type Source, type WatchEvent, keyParts, objectKey } from '../sources/source.js';
import { NodePlan, type RedirectEntry, routeKey } from './desired.js';

/**
 * The proxy's routes, replaced as a whole by each reconcile (after `add` of the new ones, before the datapath
 * is written). A route whose redirect was just removed is still
 * answered for `graceMs`: a connect() rewritten by the datapath an instant before the removal reaches the
 * proxy after it, and must not be reset for that.
 */
export class RouteMap implements RouteTable {
  #routes = new Map<string, Route>();
  #kept = new Map<string, Route>();
  #retiring = new Map<string, { route: Route; until: number }>();
  /** Added ahead of the next replace. */
  readonly #adding = new Map<string, Route>();
  #swept = 0;
  readonly #graceMs: number;
  readonly #now: () => number;

  constructor(options: { graceMs?: number; now?: () => number } = {}) {
    this.#graceMs = options.graceMs ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  readonly #listeners = new Set<(key: string | undefined) => void>();

  /** Calls `onChange` with the key of each route changed (undefined: any of them may have); returns the unsubscribe. */
  subscribe(onChange: (key: string | undefined) => void): () => void {
    this.#listeners.add(onChange);
    return () => this.#listeners.delete(onChange);
  }

  #changed(key: string | undefined): void {
    for (const l of this.#listeners) l(key);
  }

  /** The live route of a key (added or set; not one retiring). */
  current(key: string): Route | undefined {
    return this.#adding.get(key) ?? this.#routes.get(key);
  }

  lookup(ip: string, port: number): Route | undefined {
    const key = routeKey(ip, port);
    const r = this.#adding.get(key) ?? this.#routes.get(key);
    if (r) return r;
    const old = this.#retiring.get(key);
    if (old && old.until > this.#now()) return old.route;
    return undefined;
  }

  /** `kept`: imported addresses left to kube-proxy, shown by `ecnet routes` and never answered. */
  replace(routes: Map<string, Route>, kept?: Map<string, Route>): void {
    if (kept) this.#kept = new Map(kept);
    const now = this.#now();
    for (const [k, v] of this.#retiring) if (v.until <= now || routes.has(k)) this.#retiring.delete(k);
    for (const [k, route] of this.#routes) if (!routes.has(k)) this.#retiring.set(k, { route, until: now + this.#graceMs });
    this.#routes = new Map(routes);
    this.#adding.clear();
    this.#changed(undefined);
  }

  /** Routes answered from now on, ahead of a replace that keeps them. */
  add(routes: Iterable<[string, Route]>): void {
    for (const [k, r] of routes) this.#adding.set(k, r);
    this.#changed(undefined);
  }

  /** One route, added or changed. */
  set(key: string, route: Route): void {
    this.#routes.set(key, route);
    this.#adding.delete(key);
    this.#retiring.delete(key);
    this.#changed(key);
  }

  /** One route removed: answered for the grace period still. */
  retire(key: string): void {
    const route = this.#routes.get(key);
    if (!route) return;
    this.#routes.delete(key);
    const now = this.#now();
    this.#retiring.set(key, { route, until: now + this.#graceMs });
    this.#changed(key);
    // Expired ones go at most once per grace period: what is kept is what retired within two of them.
    if (now - this.#swept >= this.#graceMs) {
      this.#swept = now;
      for (const [k, v] of this.#retiring) if (v.until <= now) this.#retiring.delete(k);
    }
  }

  /** One kept route (left to kube-proxy), or its removal. */
  keep(key: string, route: Route | undefined): void {
    if (route) this.#kept.set(key, route);
    else this.#kept.delete(key);
  }

  entries(): [string, Route][] {
    return [...this.#routes.entries()];
  }

  /** Every route answered now and not retiring: the set ones and those added ahead of the next replace. */
  liveEntries(): [string, Route][] {
    return [...new Map([...this.#routes, ...this.#adding])];
  }

  keptEntries(): [string, Route][] {
    return [...this.#kept.entries()];
  }
}

/** What the agent needs of the datapath (Datapath.services). */
export interface RedirectSet {
  /**
   * The map holds exactly `entries` afterwards. With `verify`, the difference is taken against what the map
   * really holds, not what this process last wrote to it: that repairs changes made behind its back.
   */
  replaceAll(entries: Iterable<ServiceEntry>, options?: { verify?: boolean }): unknown;
  /** A change only: what one reconcile of a few services writes (all or nothing, as replaceAll). */
  apply?(upserts: readonly ServiceEntry[], removes: readonly ServiceKey[]): unknown;
  /** How many entries it holds at most; what does not fit is left out by desiredNode's rule. */
  readonly capacity?: number;
}

export interface AgentOptions {
  /**
   * How often the whole redirect set is written again (with ±20% jitter), repairing what changed in the map
   * behind the agent's back (an operator's `ecnet bpf service`, a previous version's leftovers). Default 5 min.
   */
  resyncMs?: number;
  source: Source;
  localCluster: ClusterKey;
  redirects: RedirectSet;
  routes: RouteMap;
  debounceMs?: number;
  clock?: Clock;
  logger?: Logger;
  /** Which Services and EndpointSlices to watch: those labelled as imported (default), or all of them. */
  watchServices?: 'imported' | 'all';
  /** After each reconcile: how long it took, and its error if it failed (for the metrics). */
  onReconcile?: (seconds: number, err?: unknown) => void;
}

export interface AgentStatus {
  synced: boolean;
  redirects: number;
  reconciles: number;
  lastError: string | undefined;
  /** Imports left out, with the reason: the node is degraded, not down (the probes still pass). */
  degraded: { import: string; error: string }[];
}

/** How long a problem of an import must last before the agent reports it in an Event. */
const REPORT_AFTER_MS = 2_000;

export class Agent {
  readonly #o: AgentOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #retry = new Backoff({ initialMs: 200, maxMs: 10_000, jitter: 0.3 });
  #informers: {
    imports: Informer<ServiceImport>;
    policies: Informer<GlobalTrafficPolicy>;
    services: Informer<Service>;
    slices: Informer<EndpointSlice & { apiVersion: string }>;
  } | undefined;
  readonly #reconciles: Coalescer;
  #closed = false;
  #lastProblems = '[]';
  #problemsSeen = -1;
  #resync: unknown;
  #plan: NodePlan | undefined;
  readonly #slices = new SliceIndex();
  /** Selectorless imported Services of users (`namespace/name`) → the watch of their slices by name. */
  readonly #ownSlices = new Map<string, Informer<EndpointSlice & { apiVersion: string }>>();
  /** namespace/name of what changed since the last reconcile (an import and its inputs share the key). */
  readonly #dirty = new Set<string>();
  /** `ip:port` → what the datapath holds for it as last written; undefined: unknown (at start, after a failed write). */
  #written: Map<string, RedirectEntry> | undefined;
  /** Problems (`import\nerror`) reported (or past the wait and left out by the limits), and when each was first seen. */
  readonly #reported = new Set<string>();
  readonly #firstSeen = new Map<string, number>();
  #reportTimer: unknown;
  readonly #lastEvent = new Map<string, number>();
  readonly status: AgentStatus = { synced: false, redirects: 0, reconciles: 0, lastError: undefined, degraded: [] };

  constructor(options: AgentOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.logger ?? componentLogger('agent');
    this.#reconciles = new Coalescer(() => this.#reconcile(), options.debounceMs ?? 20, this.#clock);
  }

  /** Starts the informers; resolves after the first reconcile. */
  async start(): Promise<void> {
    const changed = (e: WatchEvent) => {
      this.#dirty.add(objectKey(e.object));
      this.trigger();
    };
    const sliceChanged = (e: WatchEvent<EndpointSlice & { apiVersion: string }>) => {
      // A service whose slices are watched by name (below) takes them from that watch alone.
      if (this.#ownSlices.has(ownerOf(e.object) ?? '')) return;
      this.#sliceEvent(e);
    };
    const health = () => this.trigger();
    const src = this.#o.source;
    const scope = this.#o.watchServices === 'all' ? {} : { labelSelector: IMPORTED_LABEL };
    this.#informers = {
      imports: src.informer<ServiceImport>(Kinds.ServiceImport, { onEvent: changed, onHealth: health }),
      policies: src.informer<GlobalTrafficPolicy>(Kinds.GlobalTrafficPolicy, { onEvent: changed, onHealth: health }),
      // Only the Services (and so the EndpointSlices) of imported services, labelled by the controller: an agent
      // must not receive every endpoint change of its cluster.
      services: src.informer<Service>(Kinds.Service, { onEvent: changed, onHealth: health, ...scope }),
      slices: src.informer<EndpointSlice & { apiVersion: string }>(Kinds.EndpointSlice, { onEvent: sliceChanged, onHealth: health, ...scope }),
    };
    await Promise.all(Object.values(this.#informers).map((i) => i.synced));
    this.status.synced = true;
    this.#reconcile();
    this.#scheduleResync();
  }

  #sliceEvent(e: WatchEvent<EndpointSlice & { apiVersion: string }>): void {
    for (const k of e.type === 'deleted' ? this.#slices.delete(e.object) : this.#slices.set(e.object)) this.#dirty.add(k);
    this.trigger();
  }

  /**
   * A user's selectorless Service with an import of its name has EndpointSlices its owner writes (or that are
   * mirrored from Endpoints): nothing copies the Service's imported label to them, so the labelled watch never
   * sees them. Their slices are watched by name instead (`kubernetes.io/service-name`, in their namespace),
   * one small watch per such service, for as long as it is one.
   */
  #watchOwnSlices(key: string, service: Service | undefined, imported: boolean): void {
    if (this.#o.watchServices === 'all' || this.#closed) return;
    const wanted =
      imported &&
      service !== undefined &&
      service.metadata.labels?.[MANAGED_BY_LABEL] !== MANAGED_BY &&
      Object.keys(service.spec?.selector ?? {}).length === 0;
    const held = this.#ownSlices.get(key);
    if (wanted && !held) {
      const { namespace, name } = keyParts(key);
      const i = this.#o.source.informer<EndpointSlice & { apiVersion: string }>(Kinds.EndpointSlice, {
        namespace,
        labelSelector: `${SERVICE_NAME_LABEL}=${name}`,
        onEvent: (e) => {
          if (this.#ownSlices.get(key) === i) this.#sliceEvent(e);
        },
        onHealth: () => this.trigger(),
      });
      this.#ownSlices.set(key, i);
      // What the labelled watch filed for it (slices labelled by hand) now comes from this watch.
      for (const sl of this.#slices.of(key)) this.#slices.delete(sl);
    } else if (!wanted && held) {
      this.#ownSlices.delete(key);
      held.close();
      for (const sl of this.#slices.of(key)) this.#slices.delete(sl);
      // Back to the labelled watch: what it holds of the service (slices labelled by hand) is filed again.
      for (const sl of this.#informers?.slices.list() ?? []) if (ownerOf(sl) === key) this.#slices.set(sl);
      this.#dirty.add(key);
    }
  }

  /** The next full write of the redirect set: what the map holds is taken as unknown, checked against the map itself, and written whole. */
  #scheduleResync(): void {
    if (this.#closed) return;
    const every = this.#o.resyncMs ?? 300_000;
    this.#resync = this.#clock.setTimeout(() => {
      this.#written = undefined;
      this.trigger();
      this.#scheduleResync();
    }, every * (0.8 + 0.4 * Math.random()));
    (this.#resync as { unref?: () => void }).unref?.();
  }

  trigger(): void {
    if (this.status.synced) this.#reconciles.trigger();
  }

  /** Recomputes what changed, merges, and writes the difference to the proxy's routes and the datapath. */
  #reconcile(): void {
    if (this.#closed || !this.#informers) return;
    const started = performance.now();
    try {
      const i = this.#informers;
      if (!this.#plan) {
        this.#plan = new NodePlan(this.#o.localCluster, this.#o.redirects.capacity);
        for (const imp of i.imports.list()) this.#dirty.add(objectKey(imp));
      }
      for (const k of [...this.#dirty]) {
        const { namespace, name } = keyParts(k);
        this.#watchOwnSlices(k, i.services.get(name, namespace), i.imports.get(name, namespace) !== undefined);
      }
      for (const k of this.#dirty) {
        const { namespace, name } = keyParts(k);
        this.#plan.update(k, { import: i.imports.get(name, namespace), service: i.services.get(name, namespace), policy: i.policies.get(name, namespace), slices: this.#slices.of(k) });
      }
      this.#dirty.clear();
      const plan = this.#plan;
      if (plan.problemsVersion !== this.#problemsSeen) {
        const problems = plan.problems();
        const text = JSON.stringify(problems);
        if (problems.length && text !== this.#lastProblems) this.#log.warn({ problems }, 'imports left out of the datapath');
        this.#lastProblems = text;
        this.#problemsSeen = plan.problemsVersion;
        this.status.degraded = problems;
        this.#report(problems);
      }
      this.#write(plan);
      this.status.redirects = plan.size;
      this.status.reconciles++;
      this.status.lastError = undefined;
      this.#retry.reset();
      this.#o.onReconcile?.((performance.now() - started) / 1000);
    } catch (err) {
      this.#o.onReconcile?.((performance.now() - started) / 1000, err);
      this.status.lastError = (err as Error).message;
      const delay = this.#retry.next();
      this.#log.warn({ err, retryMs: delay }, 'reconcile failed; the datapath keeps its previous state');
      const t = this.#clock.setTimeout(() => this.trigger(), delay);
      (t as { unref?: () => void }).unref?.();
    }
  }

  /**
   * Routes first: a redirect must never reach a proxy that does not know it, neither a new one nor an old one
   * the map still holds if the write fails. Then the datapath: the whole set when what it holds is not known
   * (at start, after a failed write) or when the capacity rule is in play, else only what changed. Removed
   * routes last, and answered for the grace period still.
   */
  #write(plan: NodePlan): void {
    const entry = (r: RedirectEntry): ServiceEntry => ({ ip: r.ip, port: r.port, protocol: 'tcp', id: r.id, disabled: false });
    const changes = plan.takeChanges();
    const set = this.#o.redirects;
    const written = this.#written;
    this.#written = undefined; // until the write below succeeds
    if (!written || changes.all || !set.apply) {
      const routes = plan.routes();
      const redirects = plan.redirects();
      this.#o.routes.add(routes);
      // Not known here (at start, after a failed write, at the resync): the set checks against the map itself.
      // Known, and written whole only because of the capacity rule: its own record of the map is enough.
      set.replaceAll(redirects.map(entry), { verify: !written });
      this.#o.routes.replace(routes, plan.kept());
      this.#written = new Map(redirects.map((r) => [routeKey(r.ip, r.port), r]));
      return;
    }
    const upserts: RedirectEntry[] = [];
    const removes: RedirectEntry[] = [];
    for (const rk of changes.redirects) {
      const now = plan.get(rk);
      const held = written.get(rk);
      if (now) {
        this.#o.routes.set(rk, now.route);
        if (held?.id !== now.entry.id) upserts.push(now.entry);
      } else if (held) removes.push(held);
    }
    if (upserts.length || removes.length) set.apply(upserts.map(entry), removes.map(entry));
    for (const r of upserts) written.set(routeKey(r.ip, r.port), r);
    for (const r of removes) written.delete(routeKey(r.ip, r.port));
    for (const rk of changes.redirects) if (!plan.get(rk)) this.#o.routes.retire(rk);
    for (const rk of changes.kept) this.#o.routes.keep(rk, plan.keptRoute(rk));
    this.#written = written;
  }

  /**
   * A Warning Event on each import when a problem of it appears and lasts REPORT_AFTER_MS: not on every
   * reconcile, not for what only lasts while the agent's watches catch up with each other (an import seen a
   * moment before its Service), at most once an hour per import (an import whose addresses keep changing must
   * not flood the API server from every node), and at most 20 per reconcile.
   */
  #report(problems: { import: string; error: string }[]): void {
    const key = (p: { import: string; error: string }) => `${p.import}\n${p.error}`;
    const now = new Set(problems.map(key));
    const t = this.#clock.now();
    for (const k of this.#firstSeen.keys()) if (!now.has(k)) this.#firstSeen.delete(k);
    for (const k of this.#reported) if (!now.has(k)) this.#reported.delete(k);
    let sent = 0;
    let wait = Infinity;
    for (const p of problems) {
      const k = key(p);
      if (this.#reported.has(k)) continue;
      const first = this.#firstSeen.get(k) ?? t;
      this.#firstSeen.set(k, first);
      if (t - first < REPORT_AFTER_MS) {
        wait = Math.min(wait, first + REPORT_AFTER_MS - t);
        continue;
      }
      this.#reported.add(k);
      const { namespace, name } = keyParts(p.import);
      const imp = this.#informers?.imports.get(name, namespace);
      const last = this.#lastEvent.get(p.import);
      if (!imp || (last !== undefined && t - last < 3_600_000) || sent >= 20) continue;
      sent++;
      this.#lastEvent.set(p.import, t);
      void this.#o.source.event(imp, { type: 'Warning', reason: 'NotRedirected', message: p.error });
    }
    for (const [k, at] of this.#lastEvent) if (t - at >= 3_600_000) this.#lastEvent.delete(k);
    if (wait < Infinity && this.#reportTimer === undefined && !this.#closed) {
      this.#reportTimer = this.#clock.setTimeout(() => {
        this.#reportTimer = undefined;
        if (!this.#closed) this.#report(this.status.degraded);
      }, wait);
      (this.#reportTimer as { unref?: () => void }).unref?.();
    }
  }

  /** Stops watching; the datapath keeps what was written (a restarted agent takes over). */
  async close(): Promise<void> {
    this.destroy();
  }

  destroy(err?: Error): void {
    if (this.#closed) return;
    if (err) this.#log.error({ err }, 'agent aborted');
    this.#closed = true;
    if (this.#resync !== undefined) this.#clock.clearTimeout(this.#resync);
    if (this.#reportTimer !== undefined) this.#clock.clearTimeout(this.#reportTimer);
    void this.#reconciles.close();
    for (const i of Object.values(this.#informers ?? {})) i.close();
    for (const i of this.#ownSlices.values()) i.close();
    this.#ownSlices.clear();
  }
}

