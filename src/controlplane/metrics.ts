// The controller's Prometheus families, and the hooks the controller calls as it works (pure counting: no I/O,
// nothing decided here). The unit of work is the pass (controller.ts): `full` (start, a Cluster or member
// health change, the resync, a retry) or `scoped` (only the services that events touched).
//
// Propagation is timed on the controller's own clock, from the first event of a ServiceExport change it sees
// (not the export's timestamps, written by another cluster's clock) to the end of the first pass that started
// after the change's last event and wrote what it implies, every ServiceImport and derived Service write
// acknowledged, in every member readable then (an unreachable member catches up when it is back; see
// `ecnet_controller_member_up`). Changes of one service that meet in one pass count once, from the first.
// A change is a ServiceExport (of either API: flomesh.io, or the MCS API's, which has no spec) created, deleted or
// with another spec; a member's first list (the controller learning what is there) and status updates (the
// controller's own conditions) are not.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { ServiceExport } from '../api/flomesh.js';
import type { McsServiceExport } from '../api/mcs.js';
import { type WatchEvent, objectKey } from '../sources/source.js';
import type { MemberDesired } from './aggregate.js';
import { canonical } from './conditions.js';

export type PassKind = 'full' | 'scoped';

/** Writes by kind of object: the memo keys' kinds (`member|Kind|…`; the MCS API's as McsServiceImport, McsServiceExport). */
const WRITE_KINDS = new Set(['ServiceImport', 'Service', 'ServiceExport', 'Cluster', 'McsServiceImport', 'McsServiceExport', 'EndpointSlice']);

/** An export's identity in a member: its API and `namespace/name` (a Service may be exported both ways). */
const exportId = (member: string, e: { apiVersion: string; metadata: { name: string; namespace?: string } }) => `${member}|${e.apiVersion}|${objectKey(e)}`;

/** One member as the metrics read it at a scrape. */
export interface MemberCounts {
  name: string;
  /** Every informer has listed and is connected. */
  up: boolean;
  /** ServiceExports of both APIs in its caches (0 once withdrawn after the member timeout). */
  exports: number;
  /** ServiceImports of both APIs managed by ecnet in its caches. */
  imports: number;
}

/** What the controller calls; `ControllerMetrics` counts it. */
export interface ControllerObserver {
  /** The controller gives a way to read its members (at each scrape). */
  attach(members: () => MemberCounts[]): void;
  /** A member's exports informer delivered its first list: its content is what is there, not a change. */
  exportsListed(member: string, exports: () => (ServiceExport | McsServiceExport)[]): void;
  /** A ServiceExport event from a member's informer, at `nowMs` on the controller's clock. */
  exportEvent(member: string, e: WatchEvent, nowMs: number): void;
  /** A member's Cluster was deleted. */
  memberRemoved(member: string): void;
  /** A pass takes its view of the members (after which events are the next pass's). */
  passBegins(kind: PassKind, startedMs: number): void;
  /** A planned write's outcome; `key` is its memo key, `member|Kind|namespace/name`. */
  written(key: string, ok: boolean): void;
  /**
   * The pass is over. `desired`: the aggregation it wrote (undefined when gated, i.e. imports were not planned);
   * `scope`: the services it looked at (undefined: all); `closed`: it stopped midway.
   */
  passEnds(o: { endedMs: number; failures: number; desired: Map<string, MemberDesired> | undefined; scope: Set<string> | undefined; closed: boolean }): void;
  /** The pass threw (logged by the controller; everything is looked at again). */
  passThrew(endedMs: number): void;
}

/** Seconds: 10 ms to 2 min, for propagation (a debounce, one pass's writes, a retry or two). */
export const PROPAGATION_BUCKETS_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120] as const;
/** Seconds: 1 ms to 30 s, for one pass (aggregation is cheap; the writes are most of it). */
export const PASS_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] as const;

const serviceOf = (key: string): string => key.slice(key.indexOf('|', key.indexOf('|') + 1) + 1);

export class ControllerMetrics implements ControllerObserver {
  readonly reconcile: Histogram<'kind'>;
  readonly reconcileErrors: Counter<'kind'>;
  readonly propagation: Histogram;
  readonly writes: Counter<'cluster' | 'kind' | 'result'>;
  readonly leader: Gauge;
  #members: () => MemberCounts[] = () => [];
  /** Members whose first list was taken as what is there. */
  readonly #listed = new Set<string>();
  /** `member|namespace/name` → canonical spec of the exports seen, to tell a change from a status update. */
  readonly #specs = new Map<string, string>();
  /** `namespace/name` → the first unpropagated change's time and the sequence number of its last event. */
  readonly #pending = new Map<string, { firstMs: number; lastSeq: number }>();
  #seq = 0;
  /** The pass running: its kind, start, the last event sequence it sees, the services whose writes failed. */
  #pass: { kind: PassKind; startedMs: number; seq: number; failed: Set<string> } | undefined;
  /** Services (`namespace/name`) whose exports are in conflict, as of the passes' aggregations. */
  readonly #conflicts = new Set<string>();

  constructor(registry: Registry) {
    const registers = [registry];
    const members = () => this.#members();
    this.reconcile = new Histogram({ name: 'ecnet_controller_reconcile_duration_seconds', help: 'Time of one reconcile pass (aggregation and writes), by kind: full, or scoped to the services events touched', labelNames: ['kind'], buckets: [...PASS_BUCKETS_S], registers });
    this.reconcileErrors = new Counter({ name: 'ecnet_controller_reconcile_errors_total', help: 'Passes that threw or had a write fail (retried with backoff as a full pass), by kind', labelNames: ['kind'], registers });
    for (const kind of ['full', 'scoped'] as const) this.reconcileErrors.inc({ kind }, 0);
    this.propagation = new Histogram({
      name: 'ecnet_controller_propagation_seconds',
      help: "From the controller's first sight of a ServiceExport change to its ServiceImports and derived Services written (acknowledged) in every readable member",
      buckets: [...PROPAGATION_BUCKETS_S],
      registers,
    });
    this.writes = new Counter({ name: 'ecnet_controller_writes_total', help: 'Writes to members (and Cluster status to the control-plane cluster), by cluster, kind of object and result (ok, error)', labelNames: ['cluster', 'kind', 'result'], registers });
    this.leader = new Gauge({ name: 'ecnet_controller_leader', help: '1 when this replica leads (or runs without leader election), 0 while it waits for the lease', registers });
    new Gauge({
      name: 'ecnet_controller_member_up',
      help: "1 when a member's API is read (every informer listed and connected), else 0",
      labelNames: ['cluster'],
      registers,
      collect() {
        this.reset();
        for (const m of members()) this.set({ cluster: m.name }, m.up ? 1 : 0);
      },
    });
    new Gauge({ name: 'ecnet_controller_exports', help: "ServiceExports of both APIs (flomesh.io, multicluster.x-k8s.io) in the members' caches (an unreachable member's until they are withdrawn)", registers, collect() { this.set(members().reduce((a, m) => a + m.exports, 0)); } });
    new Gauge({ name: 'ecnet_controller_imports', help: "ServiceImports of both APIs managed by ecnet in the members' caches", registers, collect() { this.set(members().reduce((a, m) => a + m.imports, 0)); } });
    const conflicts = this.#conflicts;
    new Gauge({ name: 'ecnet_controller_export_conflicts', help: 'Exported services whose exports conflict (each of their ServiceExports says Conflict=True)', registers, collect() { this.set(conflicts.size); } });
  }

  attach(members: () => MemberCounts[]): void {
    this.#members = members;
  }

  setLeader(leads: boolean): void {
    this.leader.set(leads ? 1 : 0);
  }

  exportsListed(member: string, exports: () => (ServiceExport | McsServiceExport)[]): void {
    if (this.#listed.has(member)) return;
    this.#listed.add(member);
    for (const e of exports()) this.#specs.set(exportId(member, e), canonical((e as { spec?: unknown }).spec ?? null));
  }

  exportEvent(member: string, e: WatchEvent, nowMs: number): void {
    if (!this.#listed.has(member)) return;
    const key = objectKey(e.object);
    const id = exportId(member, e.object);
    const was = this.#specs.get(id);
    if (e.type === 'deleted') {
      if (was === undefined) return;
      this.#specs.delete(id);
    } else {
      const spec = canonical((e.object as ServiceExport).spec ?? null);
      if (was === spec) return;
      this.#specs.set(id, spec);
    }
    const p = this.#pending.get(key);
    if (p) p.lastSeq = ++this.#seq;
    else this.#pending.set(key, { firstMs: nowMs, lastSeq: ++this.#seq });
  }

  memberRemoved(member: string): void {
    this.#listed.delete(member);
    for (const id of [...this.#specs.keys()]) if (id.startsWith(`${member}|`)) this.#specs.delete(id);
    for (const result of ['ok', 'error']) for (const kind of WRITE_KINDS) this.writes.remove({ cluster: member, kind, result });
  }

  passBegins(kind: PassKind, startedMs: number): void {
    this.#pass = { kind, startedMs, seq: this.#seq, failed: new Set() };
  }

  written(key: string, ok: boolean): void {
    const [cluster, kind] = key.split('|');
    if (!cluster || !kind || !WRITE_KINDS.has(kind)) return;
    this.writes.inc({ cluster, kind, result: ok ? 'ok' : 'error' });
    if (!ok && (kind === 'ServiceImport' || kind === 'McsServiceImport' || kind === 'Service')) this.#pass?.failed.add(serviceOf(key));
  }

  passEnds(o: { endedMs: number; failures: number; desired: Map<string, MemberDesired> | undefined; scope: Set<string> | undefined; closed: boolean }): void {
    const pass = this.#pass;
    this.#pass = undefined;
    if (!pass) return;
    this.reconcile.observe({ kind: pass.kind }, (o.endedMs - pass.startedMs) / 1000);
    if (o.failures) this.reconcileErrors.inc({ kind: pass.kind });
    if (!o.desired || o.closed) return;
    // Conflicts: the services this pass aggregated are replaced by what it found.
    if (o.scope) for (const key of o.scope) this.#conflicts.delete(key);
    else this.#conflicts.clear();
    for (const d of o.desired.values()) {
      for (const [key, conds] of [...d.exportConditions, ...(d.mcsExportConditions ?? [])]) if (conds.some((c) => c.type === 'Conflict' && c.status === 'True')) this.#conflicts.add(key);
    }
    for (const [key, p] of this.#pending) {
      if (p.lastSeq > pass.seq || pass.failed.has(key)) continue;
      this.propagation.observe(Math.max(0, o.endedMs - p.firstMs) / 1000);
      this.#pending.delete(key);
    }
  }

  passThrew(endedMs: number): void {
    const pass = this.#pass;
    this.#pass = undefined;
    if (pass) this.reconcile.observe({ kind: pass.kind }, (endedMs - pass.startedMs) / 1000);
    this.reconcileErrors.inc({ kind: pass?.kind ?? 'full' });
  }
}

/** Where the controller is: a standby waits for the lease; `starting` until the first list of Clusters. */
export type ControllerPhase = 'standby' | 'starting' | 'started' | 'stopping';

/**
 * `GET /healthz`: 200 while the process answers. `GET /readyz`: 200 once the controller has listed the
 * control-plane cluster's Clusters, and for a standby (it is healthy and ready to take over; it just does not
 * write), else 503. Other paths are left to the caller (false).
 */
export function controllerProbes(phase: () => ControllerPhase): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/healthz' && path !== '/readyz') return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end();
      return true;
    }
    const p = phase();
    const ok = path === '/healthz' || p === 'standby' || p === 'started';
    res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(req.method === 'HEAD' ? undefined : `${ok ? 'ok' : 'not ready'}: ${p}\n`);
    return true;
  };
}
