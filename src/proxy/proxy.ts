// The node proxy: every connection the datapath redirected arrives here. For each: its original destination
// (from the datapath), the route of that ClusterIP:port, the policy's ordered candidates, and the first
// candidate that works — a local endpoint directly, or a remote cluster through its gateway's tunnel. Nothing
// is written to the client before an upstream is established, so a failing candidate is replaced by the next
// one unseen; the client sees an error (a reset) only when none is left, or at once when there is no route.
import { type AddressInfo, type Server, type Socket, connect as netConnect, createServer } from 'node:net';
import type { ClusterKey, GlobalTrafficPolicySpec } from '../api/flomesh.js';
import type { Endpoint } from '../api/core.js';
import { type Logger, componentLogger } from '../logger.js';
import { HealthBook, type ServiceKey } from '../policy/health.js';
import { type Candidate, type Exporter, plan } from '../policy/plan.js';
import { openTunnel } from '../tunnel/client.js';
import { STATUS, TunnelError, type TunnelTls } from '../tunnel/protocol.js';
import { type ConnectionLimits, ConnectionLimiter } from '../tunnel/limits.js';
import { Tunnels, connectWithin, listen, listenOn } from '../tunnel/splice.js';
import { descriptorOf } from '../native/sockets.js';
import { loadNative } from '../native/addon.js';
import { closeFd } from '../native/libc.js';
import { errnoNames } from '../native/errors.js';
import { type FailureReason, reasonOfErrno, reasonOfError, reasonOfStatus } from '../metrics/reasons.js';
import { EventLimiter } from '../util/rate-limit.js';
import type { ProxyMetrics, RejectReason } from './metrics.js';
import { type FrontRoutes, type FrontVerdict, ProxyFront, type ProxyFrontOptions } from './front.js';

/** What the agent knows of one redirected ClusterIP:port. */
export interface Route {
  service: string;
  namespace: string;
  port: number;
  exporters: Exporter[];
  policy: GlobalTrafficPolicySpec | undefined;
  /** Ready endpoints of the service in this cluster (address and target port). */
  localEndpoints: Endpoint[];
}

export interface RouteTable {
  lookup(ip: string, port: number): Route | undefined;
}

export interface ProxyOptions {
  /**
   * The workload (`namespace/serviceaccount`) of the pod with this address on this node, asserted to the
   * gateway; undefined for an address that is no pod's (a host-network caller).
   */
  workloadOf?: (ip: string) => string | undefined;
  host: string;
  /** A second, IPv6 address to listen on (same port), for IPv6 ClusterIPs. */
  host6?: string;
  port: number;
  localCluster: ClusterKey;
  routes: RouteTable;
  /** Where an accepted connection was going (the datapath's record); undefined if it was not redirected. */
  originalDestination: (socket: Socket) => { ip: string; port: number } | undefined;
  /** Opens an upstream TCP connection that the datapath will not redirect (the proxy mark). */
  connect?: (host: string, port: number) => Socket;
  health?: HealthBook;
  /** TLS (or mTLS) to the gateways. */
  tls?: TunnelTls;
  connectTimeoutMs?: number;
  tunnelTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** Move the bytes of plain-TCP tunnels in the kernel (splice(2) on the addon's thread) rather than through streams. */
  kernelSplice?: boolean;
  /** Connection limits (total, per client address); see tunnel/limits.ts for the defaults. */
  limits?: Partial<ConnectionLimits>;
  /**
   * Set up new connections on the kernel splicer's thread (front.ts), from the datapath's connection map; the
   * routes must then be a FrontRoutes too (the agent's RouteMap is). Needs `kernelSplice`.
   */
  front?: ProxyFrontOptions;
  /**
   * Listening sockets to accept on instead of binding host/port (host6): a predecessor's, handed over. The
   * proxy owns them from then on.
   */
  listenFds?: { fd: number; fd6?: number };
  /**
   * Resolves once the routes are known (the agent's first reconcile): connections accepted before wait for it
   * (at most `routesWaitMs`, default 10 s) rather than being reset for want of a route.
   */
  routesReady?: Promise<unknown>;
  routesWaitMs?: number;
  /** Draws for weighted choices; default: a low-discrepancy sequence per route (see #draws). */
  random?: () => number;
  now?: () => number;
  logger?: Logger;
  /** Prometheus families to count into (proxy/metrics.ts); undefined: only `stats`. */
  metrics?: ProxyMetrics;
}

/** Whether a failed tunnel counts against its gateway's health: 403/404 say the service is not there, not that the gateway is sick. */
const sickens = (status: number | undefined): boolean => status === undefined || status === STATUS.noEndpoint;
/** A gateway that reset or refused may be a replica on its way out: the same address is worth one more try. */
const tryAgain = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE']);
/** The service of a route as health keys it. */
const serviceKey = (r: Route): ServiceKey => `${r.namespace}/${r.service}`;
/**
 * How many clusters the route's policy may send a connection to (the group whose share ejected is capped): what
 * plan() gives with every gateway healthy, remote ones only.
 */
const targetCount = (r: Route, localCluster: ClusterKey): number =>
  plan({ localCluster, localEndpoints: false, exporters: r.exporters, policy: r.policy }, () => true, () => 0).filter((c) => c.kind === 'remote').length;

export interface ProxyStats {
  accepted: number;
  notRedirected: number;
  noRoute: number;
  refused: number;
  proxied: number;
  retries: number;
  active: number;
  /** Of `proxied`, how many moved their bytes in the kernel. */
  kernelSpliced: number;
  /** Of `kernelSpliced`, how many were TLS tunnels carrying sealed records. */
  sealed: number;
  /** Reset at once: a connection limit was reached (total, or the client's own). */
  limited: number;
  /** Of `proxied`, how many the native front set up without JavaScript. */
  fronted: number;
}

type Settings = Required<Omit<ProxyOptions, 'logger' | 'health' | 'tls' | 'random' | 'kernelSplice' | 'host6' | 'limits' | 'workloadOf' | 'listenFds' | 'routesReady' | 'routesWaitMs' | 'front' | 'metrics'>> & {
  health: HealthBook;
  tls?: TunnelTls;
  random?: () => number;
  workloadOf?: (ip: string) => string | undefined;
};

export class NodeProxy {
  readonly #server: Server;
  readonly #server6: Server | undefined;
  readonly #o: Settings;
  readonly #log: Logger;
  readonly #conns: Tunnels;
  readonly #next = new Map<string, number>();
  readonly #sequence = new Map<string, number>();
  readonly stats: ProxyStats = { accepted: 0, notRedirected: 0, noRoute: 0, refused: 0, proxied: 0, retries: 0, active: 0, kernelSpliced: 0, sealed: 0, limited: 0, fronted: 0 };
  readonly #limiter: ConnectionLimiter;
  /** Until the routes are known: what a connection accepted before waits for. */
  #routesReady: Promise<unknown> | undefined;
  readonly #routesWaitMs: number;
  /** Connections between accept and their hand-over to the tunnels (a hand-over waits for them). */
  #opening = 0;
  #closed = false;
  /** The native front, when it accepts in place of the servers; its listening sockets (dups this proxy owns). */
  #front: ProxyFront | undefined;
  #frontListeners: { fd: number; fd6?: number } | undefined;
  #address: { host: string; port: number } | undefined;
  readonly #metrics: ProxyMetrics | undefined;
  /** One log event per failed connection, at most 10/s (a flood of failures must not flood the logs). */
  readonly #failures = new EventLimiter(10, 20);

  private constructor(options: ProxyOptions, server: Server, server6: Server | undefined) {
    this.#routesReady = options.routesReady?.then(
      () => (this.#routesReady = undefined),
      () => (this.#routesReady = undefined),
    );
    this.#routesWaitMs = options.routesWaitMs ?? 10_000;
    this.#server = server;
    this.#server6 = server6;
    this.#o = {
      connect: (host: string, port: number) => netConnect({ host, port, allowHalfOpen: true, noDelay: true }),
      health: new HealthBook(),
      connectTimeoutMs: 2_000,
      tunnelTimeoutMs: 5_000,
      idleTimeoutMs: 15 * 60_000,
      now: Date.now,
      ...options,
    } as Settings;
    this.#log = options.logger ?? componentLogger('proxy');
    this.#conns = new Tunnels({ kernelSplice: Boolean(options.kernelSplice), idleMs: this.#o.idleTimeoutMs, log: this.#log, counts: this.stats });
    this.#limiter = new ConnectionLimiter(options.limits);
    this.#metrics = options.metrics;
    // A freed tag may stand for another (service, cluster) next: the front's report index of it goes too.
    this.#metrics?.onTagFreed((tag) => this.#front?.forgetReport(tag));
    const onConnection = (s: Socket) => {
      if (this.#limiter.admitOrReset(s)) void this.#accept(s);
      else {
        this.stats.limited++;
        this.#metrics?.accepted.inc();
        this.#metrics?.rejectedOne('limited');
      }
    };
    server.on('connection', onConnection);
    server6?.on('connection', onConnection);
  }

  static async start(options: ProxyOptions): Promise<NodeProxy> {
    const make = () => createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    const server = make();
    const server6 = options.host6 ? make() : undefined;
    const proxy = new NodeProxy(options, server, server6);
    try {
      if (options.listenFds) {
        await listenOn(server, options.listenFds.fd);
        // An IPv6 listener the predecessor did not have is bound afresh.
        if (server6 && options.listenFds.fd6 !== undefined) await listenOn(server6, options.listenFds.fd6);
        else if (server6) await listen(server6, options.host6!, (server.address() as AddressInfo).port);
      } else {
        await listen(server, options.host, options.port);
        if (server6) await listen(server6, options.host6!, (server.address() as AddressInfo).port);
      }
      if (options.front) proxy.#startFront(options.front, options);
    } catch (err) {
      proxy.destroy();
      throw err;
    }
    return proxy;
  }

  /**
   * The native front takes over accepting: it gets dups of the listening sockets, and the servers close theirs
   * (a connection they accepted meanwhile is served as always). Without a kernel splicer, or routes that cannot
   * tell their changes, the servers stay.
   */
  #startFront(f: ProxyFrontOptions, options: ProxyOptions): void {
    const splicer = this.#conns.splicer;
    const routes = options.routes as ProxyOptions['routes'] & Partial<FrontRoutes>;
    if (!splicer || !routes.liveEntries || !routes.current || !routes.subscribe) return;
    const fd = descriptorOf(this.#server);
    const fd6 = this.#server6 ? descriptorOf(this.#server6) : undefined;
    if (fd === undefined || (this.#server6 && fd6 === undefined)) return;
    this.#address = this.address;
    const { dup } = loadNative().handover;
    this.#frontListeners = { fd: dup(fd), ...(fd6 !== undefined ? { fd6: dup(fd6) } : {}) };
    const limits = this.#limiter.limits;
    this.#front = new ProxyFront(
      splicer,
      [this.#frontListeners.fd, ...(this.#frontListeners.fd6 !== undefined ? [this.#frontListeners.fd6] : [])],
      f,
      routes as FrontRoutes,
      {
        localCluster: this.#o.localCluster,
        log: this.#log,
        health: this.#o.health,
        ...(this.#metrics ? { tagOf: (cluster: ClusterKey, service: string) => this.#metrics!.tag(service.slice(0, service.indexOf('/')), service.slice(service.indexOf('/') + 1), cluster) } : {}),
        tls: Boolean(this.#o.tls),
        idleMs: this.#o.idleTimeoutMs,
        setupMs: this.#o.tunnelTimeoutMs,
        connectMs: this.#o.connectTimeoutMs,
        maxTotal: limits.total,
        maxPerSource: limits.perSource,
        now: this.#o.now,
      },
      {
        handed: (socket, verdict, free) => {
          // Its slot is the front's: freed when it closes, or when its pair ends (release below).
          this.#limiter.hold(socket, free);
          void this.#accept(socket, verdict);
        },
        succeeded: (target, n) => {
          // A local choice (the local cluster's report, if the front gives it one) is no gateway's health.
          if (target && target.cluster !== this.#o.localCluster) this.#o.health.success(target.cluster, target.service, this.#o.now());
          this.#metrics?.accepted.inc(n);
          this.stats.accepted += n;
          this.stats.proxied += n;
          this.stats.kernelSpliced += n;
          this.stats.fronted += n;
        },
        counted: (d) => {
          if (this.#metrics && d.notRedirected + d.limited > 0) {
            this.#metrics.accepted.inc(d.notRedirected + d.limited);
            if (d.notRedirected) this.#metrics.rejected.inc({ namespace: '', service: '', reason: 'not_redirected' }, d.notRedirected);
            if (d.limited) this.#metrics.rejected.inc({ namespace: '', service: '', reason: 'limited' }, d.limited);
          }
          this.stats.accepted += d.notRedirected + d.limited;
          this.stats.notRedirected += d.notRedirected;
          this.stats.limited += d.limited;
        },
      },
    );
    const front = this.#front;
    if (this.#routesReady) void this.#routesReady.then(() => front.ready());
    else front.ready();
    this.#server.close();
    this.#server6?.close();
  }

  get address(): { host: string; port: number } {
    if (this.#address) return this.#address;
    const a = this.#server.address() as AddressInfo;
    return { host: a.address, port: a.port };
  }

  get health(): HealthBook {
    return this.#o.health;
  }

  /** The candidates the policy would give a connection to ip:port now (for `ecnet routes`). */
  decide(ip: string, port: number): { route: Route | undefined; candidates: Candidate[] } {
    const route = this.#o.routes.lookup(ip, port);
    if (!route) return { route, candidates: [] };
    const now = this.#o.now();
    const service = serviceKey(route);
    const candidates = plan(
      { localCluster: this.#o.localCluster, localEndpoints: route.localEndpoints.length > 0, exporters: route.exporters, policy: route.policy },
      (k) => this.#o.health.isHealthy(k, service, now),
      this.#o.random ?? this.#draws(`${ip}:${port}`),
    );
    return { route, candidates };
  }

  /** `front`: a connection the native front hands over, with what it learnt (its slot is the front's). */
  async #accept(client: Socket, front?: FrontVerdict): Promise<void> {
    this.#opening++;
    try {
      await this.#serve(client, front);
    } finally {
      this.#opening--;
    }
  }

  async #serve(client: Socket, front?: FrontVerdict): Promise<void> {
    const started = performance.now();
    this.stats.accepted++;
    this.#metrics?.accepted.inc();
    client.on('error', () => client.destroy());
    if (this.#routesReady) {
      // Routes not known yet (a new agent): the connection waits for them rather than being reset for want of one.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.#routesReady, new Promise((r) => (timer = setTimeout(r, this.#routesWaitMs)))]);
      clearTimeout(timer);
    }
    const dst = front ? front.dst : this.#o.originalDestination(client);
    if (!dst) {
      // Not sent here by the datapath (or reset before we looked): nothing to forward to.
      this.stats.notRedirected++;
      this.#metrics?.rejectedOne('not_redirected');
      return void client.destroy();
    }
    const { route, candidates } = this.decide(dst.ip, dst.port);
    if (!route || !candidates.length) {
      if (!route) this.stats.noRoute++;
      else this.stats.refused++;
      this.#failed(client, dst, route, route ? 'no_target' : 'no_route', []);
      return void client.resetAndDestroy();
    }
    // The pod behind the connection: its own address, as it connected from its network namespace.
    const workload = client.remoteAddress ? this.#o.workloadOf?.(client.remoteAddress.replace(/^::ffff:/, '')) : undefined;
    const attempts: { cluster: ClusterKey; reason: FailureReason }[] = [];
    const failed = front?.failed && this.#frontFailed(front.failed, route, attempts);
    for (const [i, c] of candidates.entries()) {
      if (client.destroyed || this.#closed) return void client.destroy();
      // The front's failed first candidate: not again, unless it was a reset or a refusal (one more try, as below).
      const again = failed && (c.kind === 'local' ? failed.cluster === undefined : c.clusterKey === failed.cluster);
      if (again && !failed.retry) continue;
      if (i > 0 || failed) {
        this.stats.retries++;
        this.#metrics?.retried(route);
      }
      const upstream = await this.#open(route, c, workload, again ? 1 : 0, attempts);
      if (!upstream) continue;
      if (client.destroyed || this.#closed) {
        upstream.destroy();
        return void client.destroy();
      }
      this.stats.proxied++;
      const cluster = c.kind === 'local' ? this.#o.localCluster : c.clusterKey;
      const counted = this.#metrics?.openedOne(route, cluster, (performance.now() - started) / 1000);
      let mode: 'kernel' | 'stream' | undefined;
      mode = this.#conns.add(client, upstream, () => {
        this.#limiter.release(client);
        // Streams only: the kernel splicer counts its bytes live, by the tag.
        counted?.ended(mode !== 'kernel' ? { up: client.bytesRead, down: client.bytesWritten } : undefined);
      }, undefined, counted && { tag: counted.tag });
      return;
    }
    this.stats.refused++;
    this.#failed(client, dst, route, 'all_failed', attempts);
    client.resetAndDestroy();
  }

  /** A client reset before any upstream: counted, and one log event (rate-limited) with why. */
  #failed(client: Socket, dst: { ip: string; port: number }, route: Route | undefined, reason: RejectReason, attempts: { cluster: ClusterKey; reason: FailureReason }[]): void {
    this.#metrics?.rejectedOne(reason, route);
    const said = this.#failures.take();
    if (!said) return;
    this.#log.warn(
      {
        event: 'connection_failed',
        reason,
        client: client.remoteAddress,
        dst: `${dst.ip}:${dst.port}`,
        ...(route ? { service: `${route.namespace}/${route.service}` } : {}),
        ...(attempts.length ? { attempts } : {}),
        ...(said.suppressed ? { suppressed: said.suppressed } : {}),
      },
      'connection failed',
    );
  }

  /** A first candidate that failed in the front, counted as #tunnel counts its own; whether to try it once more. */
  #frontFailed(f: NonNullable<FrontVerdict['failed']>, route: Route, attempts: { cluster: ClusterKey; reason: FailureReason }[]): { cluster: ClusterKey | undefined; retry: boolean } {
    const reason = f.status ? reasonOfStatus(f.status) : reasonOfErrno(errnoNames.get(f.errno));
    attempts.push({ cluster: f.cluster ?? this.#o.localCluster, reason });
    this.#metrics?.failedAttempt(route, f.cluster ?? this.#o.localCluster, reason);
    if (f.cluster !== undefined) {
      if (sickens(f.status || undefined)) this.#o.health.failure(f.cluster, f.service ?? serviceKey(route), this.#o.now(), targetCount(route, this.#o.localCluster));
      this.#front?.checkHealth();
    }
    this.#log.info({ cluster: f.cluster ?? this.#o.localCluster, errno: f.errno, status: f.status }, 'first candidate failed; trying the next');
    return { cluster: f.cluster, retry: f.cluster !== undefined && !f.status && tryAgain.has(errnoNames.get(f.errno) ?? '') };
  }

  /** An upstream for one candidate, or undefined (the failure is counted against its gateway's health). */
  async #open(route: Route, c: Candidate, workload: string | undefined, firstAttempt: number, attempts: { cluster: ClusterKey; reason: FailureReason }[]): Promise<Socket | undefined> {
    if (c.kind === 'local') {
      const eps = route.localEndpoints;
      const start = this.#rotate(`${route.namespace}/${route.service}:${route.port}`, eps.length);
      for (let i = 0; i < eps.length; i++) {
        const ep = eps[(start + i) % eps.length]!;
        try {
          return await connectWithin(() => this.#o.connect(ep.ip, ep.port), this.#o.connectTimeoutMs);
        } catch (err) {
          const reason = reasonOfError(err);
          attempts.push({ cluster: this.#o.localCluster, reason });
          this.#metrics?.failedAttempt(route, this.#o.localCluster, reason);
          this.#log.debug({ endpoint: ep, err }, 'local endpoint failed');
        }
      }
      return undefined;
    }
    // A gateway behind a load balancer that reset or refused the connection may be a replica on its way out: the
    // same address once more reaches another replica before the next cluster is tried.
    for (let attempt = firstAttempt; ; attempt++) {
      const s = await this.#tunnel(route, c, workload, attempts);
      if (s !== 'unreachable' || attempt > 0) return s === 'unreachable' ? undefined : s;
      this.stats.retries++;
      this.#metrics?.retried(route);
    }
  }

  async #tunnel(route: Route, c: Candidate & { kind: 'remote' }, workload: string | undefined, attempts: { cluster: ClusterKey; reason: FailureReason }[]): Promise<Socket | undefined | 'unreachable'> {
    try {
      const s = await openTunnel({
        gateway: c.gateway,
        target: { service: route.service, namespace: route.namespace, port: route.port },
        sourceCluster: this.#o.localCluster,
        timeoutMs: this.#o.tunnelTimeoutMs,
        connect: this.#o.connect,
        ...(this.#o.tls ? { tls: this.#o.tls } : {}),
        cluster: c.clusterKey,
        ...(workload ? { workload } : {}),
        records: this.#conns.canSeal,
      });
      this.#o.health.success(c.clusterKey, serviceKey(route), this.#o.now());
      return s;
    } catch (err) {
      const e = err as TunnelError;
      const reason = reasonOfError(e);
      attempts.push({ cluster: c.clusterKey, reason });
      this.#metrics?.failedAttempt(route, c.clusterKey, reason);
      if (!(e instanceof TunnelError) || sickens(e.status)) this.#o.health.failure(c.clusterKey, serviceKey(route), this.#o.now(), targetCount(route, this.#o.localCluster));
      this.#log.info({ cluster: c.clusterKey, err: e }, 'tunnel failed; trying the next candidate');
      const cause = (e as { cause?: { code?: string } }).cause?.code;
      return e instanceof TunnelError && e.code === 'ECNET_TUNNEL_UNREACHABLE' && tryAgain.has(cause ?? '') ? 'unreachable' : undefined;
    }
  }

  /**
   * Weighted choices follow the weights closely even over few connections: each route draws from its own
   * golden-ratio sequence (evenly spread over [0, 1), from a random start) rather than from Math.random,
   * whose clumps would put 1,000 connections off their weights by more than 10% now and then.
   */
  #draws(route: string): () => number {
    return () => {
      const next = ((this.#sequence.get(route) ?? Math.random()) + 0.6180339887498949) % 1;
      this.#sequence.set(route, next);
      return next;
    };
  }

  #rotate(key: string, n: number): number {
    const i = this.#next.get(key) ?? 0;
    this.#next.set(key, (i + 1) % Math.max(1, n));
    return i % Math.max(1, n);
  }

  /** The listening sockets' descriptors (a hand-over gives them to the successor). */
  listenerFds(): { fd: number; fd6?: number } {
    if (this.#frontListeners) return this.#frontListeners;
    const fdOf = (srv: Server) => descriptorOf(srv) ?? -1;
    return { fd: fdOf(this.#server), ...(this.#server6 ? { fd6: fdOf(this.#server6) } : {}) };
  }

  /** Stops accepting (the listening sockets stay open where a successor holds them). */
  stopAccepting(): void {
    this.#front?.pause(true);
    this.#server.close();
    this.#server6?.close();
  }

  /** Accepts again on listening sockets given as descriptors (a hand-over that failed after they moved). */
  async resumeAccepting(fds: { fd: number; fd6?: number }): Promise<void> {
    if (this.#front) {
      // The front never closed its own copies: the ones given back are not needed.
      for (const fd of [fds.fd, fds.fd6]) if (fd !== undefined) closeFd(fd);
      return this.#front.pause(false);
    }
    await listenOn(this.#server, fds.fd);
    if (this.#server6 && fds.fd6 !== undefined) await listenOn(this.#server6, fds.fd6);
  }

  /** Resolves once no accepted connection is still being set up (at most `ms`). */
  async settled(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while ((this.#opening > 0 || (this.#front?.inFlight ?? 0) > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  /** The established connections, for a hand-over (see Tunnels). */
  get tunnels(): Tunnels {
    return this.#conns;
  }

  /** Stops accepting; proxied connections run until they end (or `graceMs`). */
  async close(graceMs = 10_000): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#shutFront();
    const closed = Promise.all([this.#server, ...(this.#server6 ? [this.#server6] : [])].map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))));
    await this.#conns.drained(graceMs);
    this.destroy();
    await closed;
  }

  destroy(err?: Error): void {
    if (err) this.#log.error({ err }, 'proxy aborted');
    this.#closed = true;
    this.#front?.close();
    this.#shutFront();
    this.#conns.destroy();
    this.#server.close();
    this.#server6?.close();
  }

  /** As the servers' close(): the listening sockets close, so new connections are refused rather than queued. */
  #shutFront(): void {
    this.#front?.shut();
    if (this.#frontListeners) for (const fd of [this.#frontListeners.fd, this.#frontListeners.fd6]) if (fd !== undefined) closeFd(fd);
    this.#frontListeners = undefined;
  }
}
