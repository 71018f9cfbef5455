// The cluster's entry (`ecnet gateway`): tunnels for exported services only, handed to a ready local endpoint,
// plus the ServiceExport HTTP ingress rules for plain HTTP requests and /healthz for the proxies' checks.
// It answers 200 to a CONNECT only once it has connected to an endpoint, trying the next endpoint when one
// refuses, so the proxy can still try another cluster when none answers. Request heads are bounded in size
// and time by the HTTP parser; a tunnel carries bytes both ways with backpressure, half-close and an idle limit.
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse, createServer, request } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { type AddressInfo, type Socket, connect } from 'node:net';
import { constants as cryptoConstants } from 'node:crypto';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import type { ClusterKey } from '../api/flomesh.js';
import { clusterOfSpiffeId, uriSan } from '../identity/spiffe.js';
import { type ConnectionLimits, ConnectionLimiter } from '../tunnel/limits.js';
import { type Logger, componentLogger } from '../logger.js';
import { HEADER_TIMEOUT_MS, MAX_HEADER_BYTES, SOURCE_CLUSTER_HEADER, SOURCE_WORKLOAD_HEADER, STATUS, type TunnelTls, parseAuthority, parseWorkload } from '../tunnel/protocol.js';
import type { Endpoint } from '../api/core.js';
import { type Catalog, decide, ingressOpen, servicesHealth } from './catalog.js';
import { type OutlierOptions, OutlierDetector } from '../policy/outliers.js';
import { createHash } from 'node:crypto';
import { Tunnels, connectWithin, listen, resetSocket, stopReading } from '../tunnel/splice.js';
import { RECORDS_HEADER, RECORDS_VERSION, recordSeal } from '../tunnel/records.js';
import { descriptorOf, tcpSocketOf } from '../native/sockets.js';
import { loadNative } from '../native/addon.js';
import { closeFd } from '../native/libc.js';
import { type ChangingCatalog, GatewayFront, type GatewayVerdict } from './front.js';
import { matchIngress } from './ingress.js';
import { type GatewayMetrics, serviceTags } from './metrics.js';
import type { TagBook } from '../metrics/tags.js';
import { reasonOfErrno, reasonOfError, reasonOfStatus } from '../metrics/reasons.js';
import { errnoNames } from '../native/errors.js';
import { EventLimiter } from '../util/rate-limit.js';

export interface GatewayOptions {
  host: string;
  port: number;
  catalog: Catalog;
  /** Per endpoint, before the next one is tried. */
  connectTimeoutMs?: number;
  /** A tunnel with no byte either way for this long is closed. */
  idleTimeoutMs?: number;
  /** A request head not complete by then is refused (default HEADER_TIMEOUT_MS). */
  headerTimeoutMs?: number;
  /** Serve TLS with this certificate; with `ca`, require client certificates it signed (mTLS). */
  tls?: TunnelTls;
  /** Move the bytes of plain-TCP tunnels in the kernel (splice(2) on the addon's thread) rather than through streams. */
  kernelSplice?: boolean;
  /** An ingress request (its body, or its upstream's answer) with no byte for this long is cut; default 60 s. */
  ingressIdleMs?: number;
  /** Connection limits (total, per source address: a node's proxy); see tunnel/limits.ts for the defaults. */
  limits?: Partial<ConnectionLimits>;
  /**
   * Set up plain tunnels on the kernel splicer's thread (front.ts); needs `kernelSplice`, no `tls`, and a catalog
   * that tells its changes (LiveCatalog). Otherwise Node accepts every connection.
   */
  front?: boolean;
  /** Passive ejection of endpoints that fail to connect (per service port; see policy/outliers.ts). */
  outliers?: Partial<OutlierOptions>;
  /** At most this many services in a /healthz/services answer (default 20,000); past it the answer says `truncated`. */
  maxHealthServices?: number;
  now?: () => number;
  logger?: Logger;
  /** Prometheus families to count into (gateway/metrics.ts); undefined: only `stats`. */
  metrics?: GatewayMetrics;
}

export interface GatewayStats {
  tunnels: number;
  active: number;
  /** Of `tunnels`, how many moved their bytes in the kernel. */
  kernelSpliced: number;
  /** Of `kernelSpliced`, how many were TLS tunnels carrying sealed records. */
  sealed: number;
  refused: Record<number, number>;
  ingress: number;
  /** Reset at once: a connection limit was reached (total, or the source's own). */
  limited: number;
  /** Of `tunnels`, how many the native front set up without JavaScript. */
  fronted: number;
}

function reply(socket: Socket, status: number, reason: string): void {
  const body = `${reason}\n`;
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

/**
 * Connects to the first endpoint that answers, starting at `start` and going round; `report` hears of each
 * outcome (with the error of a failure). Endpoints `isOut` (ejected) go last, in the same round order: tried
 * only when the others failed.
 */
async function connectFirst(
  endpoints: Endpoint[],
  start: number,
  timeoutMs: number,
  isOut: (e: Endpoint) => boolean = () => false,
  report: (e: Endpoint, ok: boolean, err?: unknown) => void = () => undefined,
): Promise<{ socket: Socket; endpoint: Endpoint } | { errors: string[] }> {
  const errors: string[] = [];
  const round = endpoints.map((_, i) => endpoints[(start + i) % endpoints.length]!);
  const ordered = [...round.filter((e) => !isOut(e)), ...round.filter(isOut)];
  for (const endpoint of ordered) {
    try {
      const socket = await connectWithin(() => connect({ host: endpoint.ip, port: endpoint.port, allowHalfOpen: true, noDelay: true }), timeoutMs);
      report(endpoint, true);
      return { socket, endpoint };
    } catch (err) {
      report(endpoint, false, err);
      errors.push(`${endpoint.ip}:${endpoint.port}: ${(err as Error).message}`);
    }
  }
  return { errors };
}

/** The /healthz/services answer for one caller, kept while nothing it depends on changed. */
interface HealthAnswer {
  catalogVersion: number;
  outliersVersion: number;
  /** An ejection in it runs out then: the answer changes without a version moving. */
  validUntil: number;
  synced: boolean;
  body: string;
  etag: string;
}

export class Gateway {
  readonly #server: Server;
  readonly #tls: TunnelTls | undefined;
  readonly #sockets = new Set<Socket>();
  readonly #catalog: Catalog;
  readonly #connectTimeoutMs: number;
  readonly #ingressIdleMs: number;
  readonly #idleWatched = new WeakSet<Socket>();
  readonly #log: Logger;
  readonly #tunnels: Tunnels;
  readonly #next = new Map<string, number>();
  readonly stats: GatewayStats = { tunnels: 0, active: 0, kernelSpliced: 0, sealed: 0, refused: {}, ingress: 0, limited: 0, fronted: 0 };
  readonly #limiter: ConnectionLimiter;
  #closed = false;
  /** The native front, when it accepts in place of the server; its listening socket (a dup this gateway owns). */
  #front: GatewayFront | undefined;
  #frontListener: number | undefined;
  /** Connections the front handed over: their slot is the front's. */
  readonly #fronted = new WeakSet<Socket>();
  /** Of those, the ones whose head the HTTP server has parsed (a CONNECT or a request): their head time is over. */
  readonly #headSeen = new WeakSet<Socket>();
  #address: { host: string; port: number } | undefined;
  readonly #headerTimeoutMs: number;
  readonly #metrics: GatewayMetrics | undefined;
  /** Refusals are logged at most 10/s: any caller can cause them. */
  readonly #refusals = new EventLimiter(10, 20);
  /** Endpoints that failed to connect, by service port (`namespace/name:port`) and `ip:port`. */
  readonly #outliers: OutlierDetector;
  readonly #now: () => number;
  #lastPrune = 0;
  /** Re-pushes the front's table (and forgets cached answers) when the next ejection runs out. */
  #expiryTimer: NodeJS.Timeout | undefined;
  #catalogVersion = 0;
  readonly #unsubscribeCatalog: (() => void) | undefined;
  /** /healthz/services answers by caller cluster ('' without cluster identities). */
  readonly #healthAnswers = new Map<string, HealthAnswer>();
  readonly #maxHealthServices: number;
  /** Report indices of the front's entries, by service (`namespace/name`), and back. */
  readonly #tags: TagBook<{ namespace: string; service: string }>;

  private constructor(options: GatewayOptions, server: Server) {
    this.#server = server;
    this.#tls = options.tls;
    this.#catalog = options.catalog;
    this.#outliers = new OutlierDetector(options.outliers);
    this.#now = options.now ?? Date.now;
    this.#maxHealthServices = options.maxHealthServices ?? 20_000;
    // A catalog that tells its changes: cached /healthz/services answers are kept until one; others are rebuilt each time.
    this.#unsubscribeCatalog = (options.catalog as Catalog & Partial<ChangingCatalog>).subscribe?.(() => this.#catalogVersion++);
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 2_000;
    this.#ingressIdleMs = options.ingressIdleMs ?? 60_000;
    this.#log = options.logger ?? componentLogger('gateway');
    // A TLS gateway's tunnels need the splicer for sealed records; others pass through Node's TLS streams.
    this.#tunnels = new Tunnels({ kernelSplice: Boolean(options.kernelSplice), idleMs: options.idleTimeoutMs ?? 15 * 60_000, log: this.#log, counts: this.stats });
    this.#limiter = new ConnectionLimiter(options.limits);
    this.#metrics = options.metrics;
    // The metrics' tags when counting, so that the front's counts are theirs; else a numbering of its own.
    this.#tags = options.metrics?.tags ?? serviceTags();
    const splicer = this.#tunnels.splicer;
    if (splicer) this.#metrics?.addNative({ read: () => splicer.tagStats(), reset: (tags) => splicer.tagReset(tags) });
    // Before the HTTP parser sees a byte: over a limit, the connection is reset.
    // (A TLS server emits 'connection' with the TCP socket, before the handshake.)
    this.#headerTimeoutMs = options.headerTimeoutMs ?? HEADER_TIMEOUT_MS;
    server.prependListener('connection', (s: Socket) => {
      if (!this.#fronted.has(s) && !this.#limiter.admitOrReset(s)) {
        this.#metrics?.limited.inc();
        return void this.stats.limited++;
      }
      // Every connection, also one still in its TLS handshake (which no HTTP bookkeeping knows): an abort ends them all.
      this.#sockets.add(s);
      s.setNoDelay(true);
      s.once('close', () => this.#sockets.delete(s));
    });
    // Nothing a client or a backend sends may end the process: whatever escapes a handler closes that connection.
    server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      this.#headSeen.add(socket);
      void this.#tunnel(req, socket, head).catch((err: unknown) => {
        this.#log.error({ err }, 'tunnel failed unexpectedly; connection closed');
        socket.destroy();
      });
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.#headSeen.add(req.socket);
      try {
        this.#request(req, res);
      } catch (err) {
        this.#log.error({ err }, 'request failed unexpectedly');
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error\n');
        else res.destroy();
      }
    });
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      // Malformed, oversized or too slow request heads: answered if the socket still can be, then closed.
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      this.#count(status);
      this.#metrics?.refusedOne(status === 408 ? 'timeout' : 'bad_request', undefined, false);
      if (socket.writable) reply(socket, status, `bad request: ${err.code ?? err.message}`);
      socket.destroy();
    });
  }

  /** Listens; resolves once it accepts connections. */
  static async start(options: GatewayOptions): Promise<Gateway> {
    const headerTimeout = options.headerTimeoutMs ?? HEADER_TIMEOUT_MS;
    const http = {
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: headerTimeout,
      // No limit on a whole request (a slow upload is not an attack); heads are bounded above, bodies by the
      // ingress idle limit.
      requestTimeout: 0,
      // How often the server looks for request heads past their timeout (Node's default is 30 s).
      connectionsCheckingInterval: 500,
    };
    const tls = options.tls;
    // Cluster identities: a client certificate is asked for, not required by the handshake, so the kubelet's
    // probes and ingress callers get HTTPS; a tunnel needs one (#caller).
    // TLS 1.3 only with cluster identities: no renegotiation, so the certificate checked at the handshake is the
    // one a tunnel is judged by (under TLS 1.2 a client could renegotiate with another one after the check).
    const clientCerts = tls?.clusterSet ? { requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' as const } : { requestCert: true, rejectUnauthorized: true };
    const server: Server = tls
      // allowHalfOpen: a client that half-closes still gets the answer (as over plain TCP), not a cut stream.
      ? (createTlsServer({ ...http, allowHalfOpen: true, secureOptions: cryptoConstants.SSL_OP_NO_RENEGOTIATION, cert: tls.cert, key: tls.key, ...(tls.ca ? { ca: tls.ca, ...clientCerts } : {}) }) as unknown as Server)
      : createServer(http);
    const gw = new Gateway(options, server);
    try {
      await listen(server, options.host, options.port);
      if (options.front && !tls) gw.#startFront(options);
    } catch (err) {
      gw.destroy();
      throw err;
    }
    return gw;
  }

  /**
   * The native front takes over accepting: a dup of the listening socket goes to it and the server closes its
   * own. The server still serves what the front hands over (as 'connection' events).
   */
  #startFront(options: GatewayOptions): void {
    const splicer = this.#tunnels.splicer;
    const catalog = this.#catalog as Catalog & Partial<ChangingCatalog>;
    const fd = descriptorOf(this.#server);
    if (!splicer || !catalog.subscribe || fd === undefined) return;
    this.#address = this.address;
    this.#frontListener = loadNative().handover.dup(fd);
    const limits = this.#limiter.limits;
    this.#front = new GatewayFront(
      splicer,
      [this.#frontListener],
      catalog as ChangingCatalog,
      { idleMs: options.idleTimeoutMs ?? 15 * 60_000, connectMs: this.#connectTimeoutMs, headerMs: this.#headerTimeoutMs, maxTotal: limits.total, maxPerSource: limits.perSource },
      {
        handed: (socket, free, verdict) => this.#fromFront(socket, free, verdict),
        succeeded: (n) => {
          this.stats.tunnels += n;
          this.stats.kernelSpliced += n;
          this.stats.fronted += n;
        },
        endpointFailed: (tag, ip, port, errno) => this.#frontEndpointFailed(tag, ip, port, errno),
      },
      (group, e) => this.#outliers.isEjected(group, `${e.ip}:${e.port}`, this.#now()),
      (namespace, name) => this.#tagOf(namespace, name),
    );
    this.#server.close();
    // close() also stopped the HTTP server's check of request-head timeouts, which the handed-over connections
    // still need: 'listening' is what starts it (Node's setupConnectionsTracking).
    this.#server.emit('listening');
  }

  /** A connection the front handed over: its slot stays the front's; the HTTP server serves it, or it gets a 408. */
  #fromFront(socket: Socket, free: () => void, verdict: GatewayVerdict): void {
    this.#fronted.add(socket);
    // Freed when it closes, or when its tunnel ends (release).
    this.#limiter.hold(socket, free);
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    if (!verdict.serve) {
      // The front waited the header timeout already: the answer Node's server would give, at once; then the
      // socket is read to its end (nothing else would: its 'close' frees the slot).
      this.#count(408);
      this.#metrics?.refusedOne('timeout', undefined, false);
      reply(socket, 408, 'bad request: ERR_HTTP_REQUEST_TIMEOUT');
      socket.resume();
      return void socket.destroySoon();
    }
    // What is left of the head's time (the HTTP server's own timeout would start again from here).
    const timer = setTimeout(() => {
      if (this.#headSeen.has(socket) || socket.destroyed) return;
      this.#count(408);
      this.#metrics?.refusedOne('timeout', undefined, false);
      if (socket.writable) reply(socket, 408, 'bad request: ERR_HTTP_REQUEST_TIMEOUT');
      socket.destroy();
    }, Math.max(1, this.#headerTimeoutMs - verdict.ageMs));
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
    this.#server.emit('connection', socket);
    // Created paused (nothing read before the server listens to it): the HTTP server reads from here.
    socket.resume();
  }

  get address(): { host: string; port: number } {
    if (this.#address) return this.#address;
    const a = this.#server.address() as AddressInfo;
    return { host: a.address, port: a.port };
  }

  #count(status: number): void {
    this.stats.refused[status] = (this.stats.refused[status] ?? 0) + 1;
  }

  #rotate(key: string, n: number): number {
    const i = this.#next.get(key) ?? 0;
    this.#next.set(key, (i + 1) % Math.max(1, n));
    return i % Math.max(1, n);
  }

  /** A refused CONNECT: counted (with service labels only for an exported service), and logged at most 10/s. */
  #refuse(socket: Socket, status: number, why: string, target: { namespace: string; service: string } | undefined, log?: Record<string, unknown>): void {
    this.#count(status);
    this.#metrics?.refusedOne(reasonOfStatus(status), target, Boolean(target && this.#catalog.get(target.namespace, target.service)?.export));
    const said = log && this.#refusals.take();
    if (said) this.#log.info({ event: 'tunnel_refused', status, why, ...log, ...(said.suppressed ? { suppressed: said.suppressed } : {}) }, 'tunnel refused');
    reply(socket, status, why);
  }

  async #tunnel(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const started = performance.now();
    socket.on('error', () => socket.destroy());
    const source = req.headers[SOURCE_CLUSTER_HEADER];
    const target = parseAuthority(req.url ?? '');
    if ('error' in target) return this.#refuse(socket, STATUS.badRequest, target.error, undefined);
    const caller = this.#caller(socket);
    if (caller && 'refused' in caller) return this.#refuse(socket, STATUS.notExported, caller.refused, target, { target, source });
    // The workload its node proxy asserted is believed only from a member cluster that proved itself.
    const who = caller ? { cluster: caller.cluster, workload: parseWorkload(req.headers[SOURCE_WORKLOAD_HEADER]) } : undefined;
    // Before the first full list the catalog is empty: "not yet", not "unknown".
    if (this.#catalog.readiness?.().synced === false) return this.#refuse(socket, STATUS.noEndpoint, 'the gateway has not synced its catalog yet', target);
    const d = decide(this.#catalog, target, who);
    if (d.status !== 200 || !('endpoints' in d)) return this.#refuse(socket, d.status, 'reason' in d ? d.reason : '', target, { target, source, ...(who ? { caller: who } : {}) });
    const key = `${target.namespace}/${target.service}:${target.port}`;
    const now = this.#now();
    const up = await connectFirst(
      d.endpoints,
      this.#rotate(key, d.endpoints.length),
      this.#connectTimeoutMs,
      (e) => this.#outliers.isEjected(key, `${e.ip}:${e.port}`, now),
      (e, ok, err) => {
        if (!ok) this.#metrics?.endpointFailed(target, reasonOfError(err));
        this.#endpointOutcome(key, e.ip, e.port, ok, d.endpoints.length);
      },
    );
    if ('errors' in up) {
      this.#count(STATUS.noEndpoint);
      this.#metrics?.refusedOne('no_endpoint', target, true);
      this.#log.warn({ event: 'tunnel_refused', status: STATUS.noEndpoint, target, source, errors: up.errors }, 'no endpoint answered');
      return reply(socket, STATUS.noEndpoint, `no endpoint of ${key} answered`);
    }
    if (socket.destroyed || this.#closed) return void up.socket.destroy();
    this.stats.tunnels++;
    const counted = this.#metrics?.openedOne(target, (performance.now() - started) / 1000);
    // Sealed records (tunnel/records.ts), when the member asks and this gateway's splicer can carry them: the
    // TLS layer stops reading, the 200 goes out through it, and then the TCP socket is the splicer's.
    if (who && req.headers[RECORDS_HEADER] === RECORDS_VERSION && !head.length && this.#tunnels.canSeal) {
      const seal = recordSeal(socket as TLSSocket, true);
      // The connection's slot is the TCP socket's, which closes at the hand-over: it is freed when the tunnel ends.
      const release = this.#limiter.detach(tcpSocketOf(socket));
      stopReading(socket);
      socket.write(`HTTP/1.1 200 Connection Established\r\n${RECORDS_HEADER}: ${RECORDS_VERSION}\r\n\r\n`, (err) => {
        if (err || socket.destroyed || this.#closed) {
          release();
          counted?.ended();
          resetSocket(up.socket);
          return void resetSocket(socket);
        }
        // (endpoint, tunnel): the splicer's A side is the upstream here.
        this.#tunnels.add(up.socket, socket, () => {
          release();
          counted?.ended();
        }, seal, counted && { tag: counted.tag, swapped: true });
      });
      return;
    }
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length) up.socket.write(head);
    // The socket's counts so far are the CONNECT head and the 200, not payload (`head`, read with the request
    // head, is: it goes to the endpoint).
    const before = { up: socket.bytesRead - head.length, down: socket.bytesWritten };
    let mode: 'kernel' | 'stream' | undefined;
    mode = this.#tunnels.add(socket, up.socket, () => {
      this.#limiter.release(socket);
      // Streams: the socket's counts since. The kernel splicer counts its bytes live, by the tag; `head` went
      // through Node before it had the pair.
      counted?.ended(mode !== 'kernel' ? { up: Math.max(0, socket.bytesRead - before.up), down: Math.max(0, socket.bytesWritten - before.down) } : { up: head.length, down: 0 });
    }, undefined, counted && { tag: counted.tag });
  }

  /**
   * With cluster identities, the cluster that calls (from its certificate, never from a header); a refusal when
   * it has none of this cluster set. Undefined without cluster identities (plain or host-name TLS).
   */
  #caller(socket: Socket): { cluster: ClusterKey } | { refused: string } | undefined {
    const set = this.#tls?.clusterSet;
    if (!set) return undefined;
    const t = socket as TLSSocket;
    const peer = t.getPeerCertificate();
    if (!peer || !Object.keys(peer).length) return { refused: "a tunnel needs a member cluster's certificate (none presented)" };
    if (!t.authorized) return { refused: `a tunnel needs a member cluster's certificate (${t.authorizationError ?? 'not verified'})` };
    // Also when the session was resumed (the chain was verified when it began): the certificate is valid now.
    const now = Date.now();
    if (!(Date.parse(peer.valid_from) <= now && now <= Date.parse(peer.valid_to))) return { refused: "the member cluster's certificate is not valid now" };
    const cluster = clusterOfSpiffeId(set, uriSan(peer.subjectaltname) ?? '');
    return cluster ? { cluster } : { refused: 'the certificate names no member cluster of this cluster set' };
  }

  /**
   * An endpoint of a service port (`namespace/name:port`, the group its ejection is capped in) failed to connect:
   * for the native front's reports (the JavaScript path records its own).
   */
  endpointFailed(service: string, ip: string, port: number): void {
    this.#endpointOutcome(service, ip, port, false, this.#groupSize(service));
  }

  /**
   * Each exported service's endpoints now: ready and serving, or ejected after failed connects (for the metrics;
   * an endpoint of several ports counts once per port). Whether the catalog is synced and its watches work.
   */
  serviceStates(): { synced: boolean; services: { namespace: string; service: string; serving: number; ejected: number }[] } {
    const now = this.#now();
    const r = this.#catalog.readiness?.();
    const services = [];
    for (const svc of this.#catalog.all()) {
      if (!svc.export) continue;
      let serving = 0;
      let ejected = 0;
      for (const [port, endpoints] of svc.ports) {
        const out = endpoints.filter((e) => this.#outliers.isEjected(`${svc.namespace}/${svc.name}:${port}`, `${e.ip}:${e.port}`, now)).length;
        ejected += out;
        serving += endpoints.length - out;
      }
      services.push({ namespace: svc.namespace, service: svc.name, serving, ejected });
    }
    return { synced: r ? r.synced && r.healthy : true, services };
  }

  /** The front's report index of a service: its tag. */
  #tagOf(namespace: string, name: string): number {
    return this.#tags.tag({ namespace, service: name });
  }

  /** An endpoint the front failed to connect (also when the next one answered): which service port, by its address. */
  #frontEndpointFailed(tag: number, ip: string, port: number, errno: number): void {
    const target = this.#tags.info(tag);
    if (!target) return;
    const key = `${target.namespace}/${target.service}`;
    this.#metrics?.endpointFailed(target, reasonOfErrno(errnoNames.get(errno)));
    const svc = this.#catalog.get(target.namespace, target.service);
    for (const [servicePort, endpoints] of svc?.ports ?? []) {
      if (endpoints.some((e) => e.ip === ip && e.port === port)) this.endpointFailed(`${key}:${servicePort}`, ip, port);
    }
  }

  /** An endpoint of a service port connected (ends its failure streak, and an ejection). */
  endpointSucceeded(service: string, ip: string, port: number): void {
    this.#endpointOutcome(service, ip, port, true, 0);
  }

  /** The endpoints the catalog lists now for `namespace/name:port`. */
  #groupSize(service: string): number {
    const m = /^([^/]+)\/([^:]+):(\d+)$/.exec(service);
    return m ? (this.#catalog.get(m[1]!, m[2]!)?.ports.get(Number(m[3]))?.length ?? 0) : 0;
  }

  #endpointOutcome(group: string, ip: string, port: number, ok: boolean, groupSize: number): void {
    const now = this.#now();
    const before = this.#outliers.version;
    if (ok) this.#outliers.success(group, `${ip}:${port}`, now);
    else if (this.#outliers.failure(group, `${ip}:${port}`, now, groupSize)) this.#log.warn({ service: group, endpoint: `${ip}:${port}`, ejectedForMs: this.#outliers.view(group, `${ip}:${port}`, now).ejectedForMs }, 'endpoint ejected after failed connections');
    // Endpoints gone from their Service are forgotten once not heard of for ten minutes.
    if (now - this.#lastPrune > 60_000) {
      this.#lastPrune = now;
      this.#outliers.prune(now, 10 * 60_000);
    }
    if (this.#outliers.version !== before) this.#ejectionsChanged(group);
  }

  /** The front's entry of the service follows its ejections, now and when the next one runs out. */
  #ejectionsChanged(group: string | undefined): void {
    if (this.#closed) return;
    if (group !== undefined) this.#front?.refresh([group.slice(0, group.lastIndexOf(':'))]);
    clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    const now = this.#now();
    const next = this.#outliers.nextExpiry(now);
    if (next === undefined) return;
    // The services with an ejection now: one of theirs runs out first.
    const services = this.#outliers.groups().filter((g) => this.#outliers.ejectedIn(g, now) > 0).map((g) => g.slice(0, g.lastIndexOf(':')));
    this.#expiryTimer = setTimeout(() => {
      this.#expiryTimer = undefined;
      if (this.#closed) return;
      this.#front?.refresh([...new Set(services)]);
      this.#ejectionsChanged(undefined);
    }, Math.max(1, next - now + 1));
    this.#expiryTimer.unref();
  }

  /**
   * GET /healthz/services: the services this caller may open a tunnel to, with their ready endpoints not
   * ejected (catalog.ts servicesHealth). With cluster identities the caller is the cluster of its certificate;
   * without, everyone gets every exported service. Kept per caller until the catalog or an ejection changes,
   * with an ETag: a proxy asking every 2 s mostly gets a 304.
   */
  #servicesHealth(req: IncomingMessage, res: ServerResponse): void {
    if (this.#closed) return void res.writeHead(503, { 'content-type': 'text/plain' }).end('closing\n');
    const caller = this.#caller(req.socket);
    if (caller && 'refused' in caller) {
      this.#count(403);
      return void res.writeHead(403, { 'content-type': 'text/plain' }).end(`${caller.refused}\n`);
    }
    const cluster = caller?.cluster;
    const now = this.#now();
    const synced = this.#catalog.readiness?.().synced ?? true;
    const cacheable = Boolean((this.#catalog as Catalog & Partial<ChangingCatalog>).subscribe);
    let a = this.#healthAnswers.get(cluster ?? '');
    if (!a || !cacheable || a.catalogVersion !== this.#catalogVersion || a.outliersVersion !== this.#outliers.version || a.synced !== synced || now >= a.validUntil) {
      const isOut = (group: string, e: Endpoint) => this.#outliers.isEjected(group, `${e.ip}:${e.port}`, now);
      const h = servicesHealth(this.#catalog, cluster, isOut, this.#maxHealthServices);
      const body = `${JSON.stringify({ synced, ...(h.truncated ? { truncated: true } : {}), services: Object.fromEntries(h.services) })}\n`;
      a = {
        catalogVersion: this.#catalogVersion,
        outliersVersion: this.#outliers.version,
        validUntil: this.#outliers.nextExpiry(now) ?? Infinity,
        synced,
        body,
        etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
      };
      // One answer per member cluster: bounded by the cluster set, and a certificate is needed to add one.
      if (this.#healthAnswers.size >= 256) this.#healthAnswers.clear();
      this.#healthAnswers.set(cluster ?? '', a);
    }
    const headers = { etag: a.etag, 'cache-control': 'no-cache' };
    const inm = req.headers['if-none-match'];
    if (typeof inm === 'string' && inm.length <= 4096 && inm.split(',').some((t) => t.trim().replace(/^W\//, '') === a.etag)) {
      return void res.writeHead(304, headers).end();
    }
    res.writeHead(200, { ...headers, 'content-type': 'application/json' }).end(a.body);
  }

  /** Serves the current certificate of `tls` (updated in place when it was renewed) to new connections. */
  reloadTls(): void {
    const tls = this.#tls;
    if (!tls) return;
    (this.#server as unknown as TlsServer).setSecureContext({ cert: tls.cert, key: tls.key, ...(tls.ca ? { ca: tls.ca } : {}) });
  }

  #request(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    if (url === '/healthz' || url.startsWith('/healthz?')) {
      res.writeHead(this.#closed ? 503 : 200, { 'content-type': 'text/plain' }).end(this.#closed ? 'closing\n' : 'ok\n');
      return;
    }
    if (url === '/readyz' || url.startsWith('/readyz?')) {
      const r = this.#catalog.readiness?.() ?? { synced: true, healthy: true };
      const why = this.#closed ? 'closing' : !r.synced || !r.healthy ? (r.reason ?? (r.synced ? 'the catalog is not healthy' : 'the catalog has not synced')) : undefined;
      res.writeHead(why ? 503 : 200, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(`${why ?? 'ready'}\n`);
      return;
    }
    if (url === '/healthz/services' || url.startsWith('/healthz/services?')) return this.#servicesHealth(req, res);
    const m = matchIngress(this.#catalog.withIngress(), url);
    if (!m) {
      this.#count(404);
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`no ingress rule matches ${url.split('?')[0]}\n`);
      return;
    }
    if ('refused' in m) {
      this.#count(m.refused);
      res.writeHead(m.refused, { 'content-type': 'text/plain' }).end(`${m.reason}\n`);
      return;
    }
    // An export for some clusters only is not public: its ingress rules serve nobody (ingress callers prove no cluster).
    if (!ingressOpen(m.service)) {
      this.#count(403);
      res.writeHead(403, { 'content-type': 'text/plain' }).end(`${m.service.namespace}/${m.service.name} is exported to some clusters only (targetClusters): not served to ingress callers\n`);
      return;
    }
    // A body may take long (an upload), but not stall: an idle limit rather than a limit on the whole request.
    // One 'timeout' listener per connection, not per request (a keep-alive client sends thousands).
    const sock = req.socket;
    if (!this.#idleWatched.has(sock)) {
      this.#idleWatched.add(sock);
      sock.on('timeout', () => sock.destroy());
    }
    sock.setTimeout(this.#ingressIdleMs);
    // Once the request is in, waiting is the upstream's limit (below), not the client's.
    req.once('end', () => sock.setTimeout(0));
    const endpoints = m.service.ports.get(m.port) ?? [];
    if (!endpoints.length) {
      this.#count(503);
      res.writeHead(503, { 'content-type': 'text/plain' }).end(`${m.service.namespace}/${m.service.name}:${m.port} has no ready endpoint\n`);
      return;
    }
    const ep = endpoints[this.#rotate(`ingress ${m.service.namespace}/${m.service.name}:${m.port}`, endpoints.length)]!;
    this.stats.ingress++;
    this.#metrics?.ingressOne({ namespace: m.service.namespace, service: m.service.name });
    const fail = (status: number, why: string) => {
      this.#count(status);
      res.writeHead(status, { 'content-type': 'text/plain' }).end(`${why}\n`);
    };
    let up: ReturnType<typeof request>;
    try {
      up = request({ host: ep.ip, port: ep.port, method: req.method, path: m.path, headers: req.headers, agent: false }, (upRes) => {
        // A backend's status line of 000-099 (or anything Node will not send on) is the backend's fault: 502.
        const code = upRes.statusCode ?? 0;
        try {
          if (code < 100 || code > 999) throw new RangeError(`status ${code}`);
          res.writeHead(code, upRes.headers);
        } catch (err) {
          upRes.destroy();
          return void fail(502, `endpoint ${ep.ip}:${ep.port} answered what cannot be passed on: ${(err as Error).message}`);
        }
        upRes.on('error', () => res.destroy());
        upRes.pipe(res);
      });
      // An upstream that accepts and then says nothing gets a 504, not a request held forever.
      up.setTimeout(this.#ingressIdleMs, () => {
        if (!res.headersSent) fail(504, `endpoint ${ep.ip}:${ep.port} did not answer within ${this.#ingressIdleMs} ms`);
        else res.destroy();
        up.destroy();
      });
    } catch (err) {
      // The export's pathRewrite made a path no HTTP request can carry (a space, a character above 0xff).
      this.#log.warn({ err, service: `${m.service.namespace}/${m.service.name}`, path: m.path }, 'ingress rule rewrites to an invalid path');
      return void fail(502, `the ingress rule of ${m.service.namespace}/${m.service.name} rewrites to an invalid path`);
    }
    up.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end(`endpoint ${ep.ip}:${ep.port}: ${err.message}\n`);
      else res.destroy();
    });
    // A client gone before its answer (reset, or half-closed: the HTTP server does not wait on those) takes
    // its upstream request with it, rather than leaving it open until the idle limit.
    res.once('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  }

  /** Stops accepting; open tunnels run until they end (or `graceMs`, then they are cut). */
  async close(graceMs = 10_000): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#shutFront();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    // Connections already accepted may still be in their TLS handshake or before their CONNECT: the HTTP server
    // counts them idle. They get a moment to become tunnels (or requests) before idle ones are closed.
    const settle = Math.min(1_000, graceMs);
    await new Promise((r) => setTimeout(r, settle));
    this.#server.closeIdleConnections();
    await this.#tunnels.drained(graceMs - settle);
    this.destroy();
    await closed;
  }

  destroy(err?: Error): void {
    if (err) this.#log.error({ err }, 'gateway aborted');
    this.#closed = true;
    this.#unsubscribeCatalog?.();
    clearTimeout(this.#expiryTimer);
    this.#front?.close();
    this.#shutFront();
    this.#tunnels.destroy();
    this.#server.closeAllConnections();
    for (const s of this.#sockets) s.destroy();
    this.#server.close();
  }

  /** As the server's close(): the listening socket closes, so new connections are refused rather than queued. */
  #shutFront(): void {
    this.#front?.shut();
    if (this.#frontListener !== undefined) closeFd(this.#frontListener);
    this.#frontListener = undefined;
  }
}
