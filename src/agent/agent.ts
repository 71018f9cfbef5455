// The node agent's reconciler: ServiceImports, GlobalTrafficPolicies, Services and EndpointSlices of its
// cluster → the redirect set in the datapath (written as a diff) and the proxy's route table. Nothing is
// written before every informer has listed once, so a restarted agent leaves the pinned datapath as it is
// until it knows better; a failed write is retried with backoff. One reconcile at a time.
import type { Service } from '../api/core.js';
import type { ClusterKey, GlobalTrafficPolicy, ServiceImport } from '../api/flomesh.js';
import type { ServiceEntry } from '../bpf/services.js';
import { type Logger, componentLogger } from '../logger.js';
import type { Route, RouteTable } from '../proxy/proxy.js';
import { Backoff, type Clock, systemClock } from '../sources/backoff.js';
import { Coalescer } from '../sources/coalescer.js';
import { type Informer, Kinds, type Source } from '../sources/source.js';
import { type DesiredMemo, type EndpointSlice, desiredNode, routeKey } from './desired.js';

/**
 * The proxy's routes, replaced as a whole by each reconcile. A route whose redirect was just removed is still
 * answered for `graceMs`: a connect() rewritten by the datapath an instant before the removal reaches the
 * proxy after it, and must not be reset for that.
 */
export class RouteMap implements RouteTable {
  #routes = new Map<string, Route>();
  #kept = new Map<string, Route>();
  #retiring = new Map<string, { route: Route; until: number }>();
  readonly #graceMs: number;
  readonly #now: () => number;

  constructor(options: { graceMs?: number; now?: () => number } = {}) {
    this.#graceMs = options.graceMs ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  lookup(ip: string, port: number): Route | undefined {
    const key = routeKey(ip, port);
    const r = this.#routes.get(key);
    if (r) return r;
    const old = this.#retiring.get(key);
    if (old && old.until > this.#now()) return old.route;
    return undefined;
  }

  /** `kept`: imported addresses left to kube-proxy, shown by `ecnet routes` and never answered. */
  replace(routes: Map<string, Route>, kept?: Map<string, Route>): void {
    if (kept) this.#kept = kept;
    const now = this.#now();
    for (const [k, v] of this.#retiring) if (v.until <= now || routes.has(k)) this.#retiring.delete(k);
    for (const [k, route] of this.#routes) if (!routes.has(k)) this.#retiring.set(k, { route, until: now + this.#graceMs });
    this.#routes = routes;
  }

  entries(): [string, Route][] {
    return [...this.#routes.entries()];
  }

  keptEntries(): [string, Route][] {
    return [...this.#kept.entries()];
  }
}

/** What the agent needs of the datapath (Datapath.services). */
export interface RedirectSet {
  replaceAll(entries: Iterable<ServiceEntry>): unknown;
  /** How many entries it holds at most; what does not fit is left out by desiredNode's rule. */
  readonly capacity?: number;
}

export interface AgentOptions {
  source: Source;
  localCluster: ClusterKey;
  redirects: RedirectSet;
  routes: RouteMap;
  debounceMs?: number;
  clock?: Clock;
  logger?: Logger;
}

export interface AgentStatus {
  synced: boolean;
  redirects: number;
  reconciles: number;
  lastError: string | undefined;
  /** Imports left out, with the reason: the node is degraded, not down (the probes still pass). */
  degraded: { import: string; error: string }[];
}

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
  readonly #memo: DesiredMemo = new Map();
  #reported = new Set<string>();
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
    const trigger = () => this.trigger();
    const opts = { onEvent: trigger, onHealth: trigger };
    const src = this.#o.source;
    this.#informers = {
      imports: src.informer<ServiceImport>(Kinds.ServiceImport, opts),
      policies: src.informer<GlobalTrafficPolicy>(Kinds.GlobalTrafficPolicy, opts),
      services: src.informer<Service>(Kinds.Service, opts),
      slices: src.informer<EndpointSlice & { apiVersion: string }>(Kinds.EndpointSlice, opts),
    };
    await Promise.all(Object.values(this.#informers).map((i) => i.synced));
    this.status.synced = true;
    this.#reconcile();
  }

  trigger(): void {
    if (this.status.synced) this.#reconciles.trigger();
  }

  #reconcile(): void {
    if (this.#closed || !this.#informers) return;
    try {
      const i = this.#informers;
      const d = desiredNode({
        localCluster: this.#o.localCluster,
        imports: i.imports.list(),
        policies: i.policies.list(),
        services: i.services.list(),
        endpointSlices: i.slices.list(),
        ...(this.#o.redirects.capacity !== undefined ? { capacity: this.#o.redirects.capacity } : {}),
        memo: this.#memo,
      });
      if (d.problems.length && JSON.stringify(d.problems) !== this.#lastProblems) this.#log.warn({ problems: d.problems }, 'imports left out of the datapath');
      this.#lastProblems = JSON.stringify(d.problems);
      this.status.degraded = d.problems;
      this.#report(d.problems, i.imports.list());
      // Routes first, old and new together: a redirect must never reach a proxy that does not know it, neither
      // a new one nor an old one the map still holds if the write below fails. The new set alone once written.
      this.#o.routes.replace(new Map([...this.#o.routes.entries(), ...d.routes]), d.kept);
      this.#o.redirects.replaceAll(d.redirects.map((r) => ({ ip: r.ip, port: r.port, protocol: 'tcp' as const, id: r.id, disabled: false })));
      this.#o.routes.replace(d.routes, d.kept);
      this.status.redirects = d.redirects.length;
      this.status.reconciles++;
      this.status.lastError = undefined;
      this.#retry.reset();
    } catch (err) {
      this.status.lastError = (err as Error).message;
      const delay = this.#retry.next();
      this.#log.warn({ err, retryMs: delay }, 'reconcile failed; the datapath keeps its previous state');
      const t = this.#clock.setTimeout(() => this.trigger(), delay);
      (t as { unref?: () => void }).unref?.();
    }
  }

  /**
   * A Warning Event on each import when a problem of it first appears: not on every reconcile, at most once an
   * hour per import (an import whose addresses keep changing must not flood the API server from every node),
   * and at most 20 per reconcile.
   */
  #report(problems: { import: string; error: string }[], imports: ServiceImport[]): void {
    const now = new Set(problems.map((p) => `${p.import}\n${p.error}`));
    const byKey = new Map(imports.map((i) => [`${i.metadata.namespace ?? 'default'}/${i.metadata.name}`, i]));
    const t = this.#clock.now();
    let sent = 0;
    for (const p of problems) {
      const imp = byKey.get(p.import);
      const last = this.#lastEvent.get(p.import);
      if (!imp || this.#reported.has(`${p.import}\n${p.error}`) || (last !== undefined && t - last < 3_600_000) || sent >= 20) continue;
      sent++;
      this.#lastEvent.set(p.import, t);
      void this.#o.source.event(imp, { type: 'Warning', reason: 'NotRedirected', message: p.error });
    }
    for (const [k, at] of this.#lastEvent) if (t - at >= 3_600_000) this.#lastEvent.delete(k);
    this.#reported = now;
  }

  /** Stops watching; the datapath keeps what was written (a restarted agent takes over). */
  async close(): Promise<void> {
    this.destroy();
  }

  destroy(err?: Error): void {
    if (this.#closed) return;
    if (err) this.#log.error({ err: err.message }, 'agent aborted');
    this.#closed = true;
    void this.#reconciles.close();
    for (const i of Object.values(this.#informers ?? {})) i.close();
  }
}
