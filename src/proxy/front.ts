// The node proxy's native front (native/src/front.h): new connections are accepted, routed, connected and
// spliced on the splicer's thread, from a table this module keeps in step with the routes and the gateways'
// health. The policy stays here: each route's entry is the distribution of plan()'s first candidate
// (firstChoices), which the front draws from by weight. What the front cannot finish — no entry (a refused,
// retiring or TLS route), a first candidate that failed — comes back as a socket with what the front learnt,
// and the proxy's JavaScript path carries on from there, retries and errors included.
import { type Socket, isIP } from 'node:net';
import type { ClusterKey } from '../api/flomesh.js';
import type { Logger } from '../logger.js';
import type { NativeFrontChoice, NativeFrontEntry, NativeFrontHanded, NativeMap } from '../native/addon.js';
import type { KernelSplicer } from '../native/kernel-splice.js';
import { writeAddress } from '../net/address.js';
import { firstChoices, type PlanInput } from '../policy/plan.js';
import type { HealthBook, ServiceKey } from '../policy/health.js';
import { Front } from '../tunnel/front.js';
import { SOURCE_CLUSTER_HEADER, formatAuthority } from '../tunnel/protocol.js';
import type { Route } from './proxy.js';

export interface ProxyFrontOptions {
  /** The datapath's connection map: the front takes each accepted connection's entry, as the proxy would. */
  connections: NativeMap;
  /** The original destination in one of its values (ecnet_origdst). */
  destinationOf: (value: Buffer) => { ip: string; port: number } | undefined;
  /** SO_MARK of the front's upstream connections (the datapath leaves them alone). */
  mark: number;
  /** An entry recorded longer ago than this is not used (when the map's values carry the time). */
  staleMs?: number;
  /** This process's CLOCK_MONOTONIC minus the datapath's clock, in ns (a time namespace shifts the former). */
  clockOffsetNs?: number;
}

/** Routes by their key (`ip:port`), and their changes: undefined means all of them. */
export interface FrontRoutes {
  /** Every live route (not the retiring ones). */
  liveEntries(): Iterable<[string, Route]>;
  /** The live route of a key (not a retiring one: those are the JavaScript path's). */
  current(key: string): Route | undefined;
  subscribe(onChange: (key: string | undefined) => void): () => void;
}

/** What the front learnt of a connection it hands back: where it was going, and what failed. */
export interface FrontVerdict {
  dst: { ip: string; port: number } | undefined;
  /** `cluster` undefined: the local endpoints failed. `service`: the report's (namespace/name), when it has one. */
  failed?: { cluster: ClusterKey | undefined; service?: ServiceKey; errno: number; status: number };
}

/** What a report index of the front stands for: a service at a cluster (the local cluster: its own endpoints). */
export interface FrontTarget {
  cluster: ClusterKey;
  service: ServiceKey;
}

export interface FrontSettings {
  localCluster: ClusterKey;
  log: Logger;
  health: HealthBook;
  /** Remote choices need TLS (the front speaks plain TCP only): such routes stay on the JavaScript path. */
  tls: boolean;
  idleMs: number;
  setupMs: number;
  connectMs: number;
  maxTotal: number;
  maxPerSource: number;
  now: () => number;
  /** The report index of a service at a cluster: the metrics' tag (the front counts its pairs by it); default: its own numbering. */
  tagOf?: (cluster: ClusterKey, service: ServiceKey) => number;
}

/** The 18-byte table key of `ip:port`: the address as the datapath keeps it, then the port, big-endian. */
export function frontKey(routeKey: string): Buffer | undefined {
  const at = routeKey.lastIndexOf(':');
  const ip = routeKey.slice(0, at);
  const port = Number(routeKey.slice(at + 1));
  if (at <= 0 || !isIP(ip) || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  const key = Buffer.alloc(18);
  writeAddress(ip, key, 0);
  key.writeUInt16BE(port, 16);
  return key;
}

export class ProxyFront extends Front {
  readonly #routes: FrontRoutes;
  readonly #o: FrontSettings;
  readonly #destinationOf: ProxyFrontOptions['destinationOf'];
  /** (cluster, service) targets by report index (the front counts successes and failures by index). */
  readonly #reports = new Map<number, FrontTarget>();
  /** Report indexes by service, then cluster. */
  readonly #reportIndex = new Map<ServiceKey, Map<ClusterKey, number>>();
  #dirty: Set<string> | 'all' | undefined;
  #flushQueued = false;
  #ready = false;
  #healthSeen = '';
  readonly #unsubscribe: () => void;
  readonly #timer: NodeJS.Timeout;
  readonly #stats = { notRedirected: 0, limited: 0 };

  constructor(
    splicer: KernelSplicer,
    listeners: number[],
    options: ProxyFrontOptions,
    routes: FrontRoutes,
    settings: FrontSettings,
    on: { handed(socket: Socket, verdict: FrontVerdict, free: () => void): void; succeeded(target: FrontTarget | undefined, n: number): void; counted(d: { notRedirected: number; limited: number }): void },
  ) {
    super(
      splicer,
      {
        listeners,
        connMap: options.connections.fd(),
        connValueSize: options.connections.info().valueSize,
        ...(options.staleMs ? { staleMs: options.staleMs, clockOffsetNs: options.clockOffsetNs ?? 0 } : {}),
        mark: options.mark,
        idleMs: settings.idleMs,
        setupMs: settings.setupMs,
        connectMs: settings.connectMs,
        maxTotal: settings.maxTotal,
        maxPerSource: settings.maxPerSource,
      },
      (handed, successes) => {
        for (const [report, n] of successes) on.succeeded(this.#reports.get(report), n);
        for (const { socket, h, free } of handed) on.handed(socket, this.#verdictOf(h), free);
      },
    );
    this.#routes = routes;
    this.#o = settings;
    this.#destinationOf = options.destinationOf;
    this.#unsubscribe = routes.subscribe((key) => this.#changed(key));
    // Health moves without a route changing (an ejection, its end, an active check): the table follows it.
    this.#timer = setInterval(() => {
      this.#checkHealth();
      const s = splicer.frontStats();
      on.counted({ notRedirected: s.notRedirected - this.#stats.notRedirected, limited: s.limited - this.#stats.limited });
      this.#stats.notRedirected = s.notRedirected;
      this.#stats.limited = s.limited;
    }, 250);
    this.#timer.unref();
  }

  /** The routes are known: the whole table goes to the front, which serves from then on. */
  ready(): void {
    this.#ready = true;
    this.#changed(undefined);
  }

  /** A failure the JavaScript path recorded may have changed the health: the table follows at once. */
  checkHealth(): void {
    this.#checkHealth();
  }

  close(): void {
    clearInterval(this.#timer);
    this.#unsubscribe();
  }

  #verdictOf(h: NativeFrontHanded): FrontVerdict {
    const dst = h.destination ? this.#destinationOf(h.destination) : undefined;
    if (h.failedReport === undefined) return { dst };
    const t = this.#reports.get(h.failedReport);
    // The local endpoints (no report, or one naming this cluster) are no gateway's health.
    const cluster = t && t.cluster !== this.#o.localCluster ? t.cluster : undefined;
    return { dst, failed: { cluster, ...(t ? { service: t.service } : {}), errno: h.errno ?? 0, status: h.status ?? 0 } };
  }

  #changed(key: string | undefined): void {
    if (!this.#ready) return;
    if (key === undefined) this.#dirty = 'all';
    else if (this.#dirty === undefined) this.#dirty = new Set([key]);
    else if (this.#dirty !== 'all') this.#dirty.add(key);
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    // Changes of one reconcile go in one batch.
    setImmediate(() => this.#flush());
  }

  #flush(): void {
    this.#flushQueued = false;
    const dirty = this.#dirty;
    this.#dirty = undefined;
    if (!dirty) return;
    const entries: NativeFrontEntry[] = [];
    if (dirty === 'all') {
      for (const [k, r] of this.#routes.liveEntries()) {
        const e = this.#entry(k, r);
        if (e?.choices) entries.push(e);
      }
    } else {
      for (const k of dirty) {
        const e = this.#entry(k, this.#routes.current(k));
        if (e) entries.push(e);
      }
    }
    // After the entries: they may have named clusters not seen before.
    this.#healthSeen = this.#healthSignature();
    try {
      this.splicer.frontRoutes(entries, dirty === 'all');
    } catch (err) {
      // Entries are checked here first; should the front refuse one anyway, it serves nothing natively rather
      // than a stale table, and JavaScript takes every connection.
      this.#o.log.error({ err }, 'the native front refused its table: every connection goes through JavaScript');
      try {
        this.splicer.frontRoutes([], true);
      } catch {
        // the splicer is closed
      }
    }
  }

  /** A route's entry: its first choices, or null (the JavaScript path serves it); undefined: no key at all. */
  #entry(key: string, route: Route | undefined): NativeFrontEntry | undefined {
    const k = frontKey(key);
    if (!k) return undefined;
    if (!route) return { key: k, choices: null };
    const input: PlanInput = { localCluster: this.#o.localCluster, localEndpoints: route.localEndpoints.length > 0, exporters: route.exporters, policy: route.policy };
    const now = this.#o.now();
    const service = `${route.namespace}/${route.service}`;
    // Every exporter's health is watched, also one not in the table now (down at first, it may come back first).
    for (const e of route.exporters) if (e.clusterKey !== this.#o.localCluster) this.#reportOf(e.clusterKey, service);
    const choices: NativeFrontChoice[] = [];
    const first = firstChoices(input, (cluster) => this.#o.health.isHealthy(cluster, service, now));
    // The front draws with integer weights up to 2^31-1; any weights the schema allows are scaled into 1..1e6.
    const top = Math.max(...first.map((c) => c.weight));
    const scale = top > 1e6 ? 1e6 / top : 1;
    for (const { candidate: c, weight: w } of first) {
      const weight = Math.max(1, Math.round(w * scale));
      if (!Number.isFinite(weight)) return { key: k, choices: null };
      if (c.kind === 'local') {
        if (!route.localEndpoints.every((e) => isIP(e.ip))) return { key: k, choices: null };
        choices.push({ report: this.#reportOf(this.#o.localCluster, service), weight, addrs: route.localEndpoints.map((e) => ({ ip: e.ip, port: e.port })) });
        continue;
      }
      // A gateway by name, or one reached over TLS: the JavaScript path.
      if (this.#o.tls || !isIP(c.gateway.host)) return { key: k, choices: null };
      const authority = formatAuthority({ service: route.service, namespace: route.namespace, port: route.port });
      const head = `CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\n${SOURCE_CLUSTER_HEADER}: ${this.#o.localCluster}\r\n\r\n`;
      choices.push({ report: this.#reportOf(c.clusterKey, service), weight, addrs: [{ ip: c.gateway.host, port: c.gateway.port }], head: Buffer.from(head, 'latin1') });
    }
    return { key: k, choices: choices.length ? choices : null };
  }

  /** A report index the metrics freed (its service went away): it may stand for another one next. */
  forgetReport(report: number): void {
    const t = this.#reports.get(report);
    if (!t) return;
    this.#reports.delete(report);
    const byCluster = this.#reportIndex.get(t.service);
    byCluster?.delete(t.cluster);
    if (byCluster && !byCluster.size) this.#reportIndex.delete(t.service);
  }

  /** The report index of a service at a cluster (the front reports successes and failures by it). */
  #reportOf(cluster: ClusterKey, service: ServiceKey): number {
    let byCluster = this.#reportIndex.get(service);
    if (!byCluster) this.#reportIndex.set(service, (byCluster = new Map()));
    let i = byCluster.get(cluster);
    if (i === undefined) {
      i = this.#o.tagOf ? this.#o.tagOf(cluster, service) : this.#reports.size;
      this.#reports.set(i, { cluster, service });
      byCluster.set(cluster, i);
    }
    return i;
  }

  /** Which of the (cluster, service) targets in the table are healthy now. */
  #healthSignature(): string {
    const now = this.#o.now();
    let signature = '';
    for (const t of this.#reports.values()) signature += t.cluster === this.#o.localCluster || this.#o.health.isHealthy(t.cluster, t.service, now) ? '1' : '0';
    return signature;
  }

  #checkHealth(): void {
    if (this.#ready && this.#healthSignature() !== this.#healthSeen) this.#changed(undefined);
  }
}
