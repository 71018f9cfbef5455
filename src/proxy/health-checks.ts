// Active checks of the gateways the routes use, once per gateway every intervalMs, on a socket the datapath
// does not redirect: GET /healthz/services asks the gateway which services it would open a tunnel to for this
// cluster, and whether they have ready endpoints (with If-None-Match: an unchanged answer is a 304). Each
// result goes to the proxy's HealthBook: an unanswered gateway has every service down; each service routed
// there is ready or not from the answer (one missing from it: the gateway would refuse it, so not ready). A
// gateway that answers 404 (a version before /healthz/services) is checked by GET /healthz, for the cluster
// only. The answer is the network's: bounded in size and checked in shape before it is believed.
import { type IncomingMessage, request } from 'node:http';
import type { Socket } from 'node:net';
import type { ClusterKey } from '../api/flomesh.js';
import type { HealthBook, ServiceKey } from '../policy/health.js';
import type { Gateway } from '../policy/plan.js';
import { gatewayConnection } from '../tunnel/client.js';
import type { TunnelTls } from '../tunnel/protocol.js';

/** What to check at one cluster: its gateway, and the services the proxy routes there (namespace/name). */
export interface CheckTarget {
  gateway: Gateway;
  services: ReadonlySet<ServiceKey>;
}

export interface HealthChecksOptions {
  health: HealthBook;
  /** The clusters to check now, with their gateway and the services routed there (read before each round). */
  targets: () => Map<ClusterKey, CheckTarget>;
  connect: (host: string, port: number) => Socket;
  tls?: TunnelTls;
  intervalMs?: number;
  timeoutMs?: number;
  /** A /healthz/services answer larger than this is not read (the gateway bounds its own far below). */
  maxAnswerBytes?: number;
  now?: () => number;
}

/** A gateway's /healthz/services answer, as far as the proxy uses it. */
export interface ServicesAnswer {
  synced: boolean;
  /** The gateway left services out (its bound): a service missing from the answer says nothing. */
  truncated: boolean;
  /** Per service (namespace/name): ready, and ready endpoints per port. */
  services: Map<ServiceKey, { ready: boolean; ports: Record<string, number> }>;
}

export type ServicesCheck =
  | { kind: 'answer'; answer: ServicesAnswer; etag: string | undefined }
  | { kind: 'unchanged' }
  /** The gateway does not serve /healthz/services (an older version). */
  | { kind: 'absent' }
  | { kind: 'failed'; reason: string };

/**
 * What to check, from the routes: per remote cluster, its gateway and the services routed there. A cluster
 * named with two gateways (two imports disagreeing) is checked at the first one seen.
 */
export function checkTargets(routes: Iterable<{ namespace: string; service: string; exporters: { clusterKey: ClusterKey; gateway: Gateway }[] }>, localCluster: ClusterKey): Map<ClusterKey, CheckTarget> {
  const out = new Map<ClusterKey, { gateway: Gateway; services: Set<ServiceKey> }>();
  for (const r of routes) {
    for (const e of r.exporters) {
      if (e.clusterKey === localCluster) continue;
      let t = out.get(e.clusterKey);
      if (!t) out.set(e.clusterKey, (t = { gateway: e.gateway, services: new Set() }));
      t.services.add(`${r.namespace}/${r.service}`);
    }
  }
  return out;
}

const DEFAULT_MAX_ANSWER = 16 * 1024 * 1024;

/** GET /healthz on a gateway: whether its process answers 200. */
export function checkGateway(gw: Gateway, connect: (host: string, port: number) => Socket, timeoutMs: number, tls?: TunnelTls, cluster?: ClusterKey): Promise<boolean> {
  return get(gw, '/healthz', {}, connect, timeoutMs, tls, cluster, 0).then((r) => 'status' in r && r.status === 200);
}

/** GET /healthz/services on a gateway (`etag`: the last answer's, sent as If-None-Match). */
export async function checkServices(gw: Gateway, connect: (host: string, port: number) => Socket, timeoutMs: number, tls?: TunnelTls, cluster?: ClusterKey, etag?: string, maxBytes = DEFAULT_MAX_ANSWER): Promise<ServicesCheck> {
  const r = await get(gw, '/healthz/services', etag ? { 'if-none-match': etag } : {}, connect, timeoutMs, tls, cluster, maxBytes);
  if ('error' in r) return { kind: 'failed', reason: r.error };
  if (r.status === 304 && etag) return { kind: 'unchanged' };
  if (r.status === 404) return { kind: 'absent' };
  if (r.status !== 200) return { kind: 'failed', reason: `the gateway answered ${r.status}` };
  const answer = parseServicesAnswer(r.body);
  if (!answer) return { kind: 'failed', reason: 'the gateway answered something that is not a /healthz/services answer' };
  const tag = r.headers.etag;
  return { kind: 'answer', answer, etag: typeof tag === 'string' && tag.length <= 256 ? tag : undefined };
}

/** The answer's JSON, checked in shape; undefined if it is not one. Only own properties are read. */
export function parseServicesAnswer(body: string): ServicesAnswer | undefined {
  let v: unknown;
  try {
    v = JSON.parse(body);
  } catch {
    return undefined;
  }
  const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (!isObject(v) || typeof v.synced !== 'boolean' || !isObject(v.services)) return undefined;
  const services = new Map<ServiceKey, { ready: boolean; ports: Record<string, number> }>();
  for (const [name, s] of Object.entries(v.services)) {
    if (!isObject(s) || typeof s.ready !== 'boolean') continue;
    const ports: Record<string, number> = Object.create(null) as Record<string, number>;
    if (isObject(s.ports)) for (const [p, n] of Object.entries(s.ports)) if (typeof n === 'number' && Number.isFinite(n)) ports[p] = n;
    services.set(name, { ready: s.ready, ports });
  }
  return { synced: v.synced, truncated: v.truncated === true, services };
}

type Got = { status: number; headers: IncomingMessage['headers']; body: string } | { error: string };

function get(gw: Gateway, path: string, headers: Record<string, string>, connect: (host: string, port: number) => Socket, timeoutMs: number, tls: TunnelTls | undefined, cluster: ClusterKey | undefined, maxBytes: number): Promise<Got> {
  const createConnection = gatewayConnection(gw.host, gw.port, connect, tls, cluster)!;
  return new Promise((resolve) => {
    // No `agent` option: with one (even `agent: false`) Node ignores createConnection and dials plain TCP itself,
    // which a TLS gateway hangs up on.
    const req = request({ host: gw.host, port: gw.port, path, headers, timeout: timeoutMs, createConnection }, (res) => {
      const status = res.statusCode ?? 0;
      if (status !== 200 || maxBytes === 0) {
        res.resume();
        return resolve({ status, headers: res.headers, body: '' });
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size > maxBytes) return void req.destroy(new Error(`answer larger than ${maxBytes} bytes`));
        chunks.push(d);
      });
      res.on('end', () => resolve({ status, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (err) => resolve({ error: err.message }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ error: err.message }));
    req.end();
  });
}

export class HealthChecks {
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Per cluster, the last answer and its ETag (a 304 means it still holds). */
  readonly #last = new Map<ClusterKey, { gateway: string; etag: string; answer: ServicesAnswer }>();
  constructor(private readonly o: HealthChecksOptions) {}

  start(): void {
    const round = async () => {
      await this.checkOnce();
      if (!this.#closed) this.#timer = setTimeout(() => void round(), this.o.intervalMs ?? 2000).unref();
    };
    void round();
  }

  /** One round: every cluster's gateway checked once, the results in the HealthBook. */
  async checkOnce(): Promise<void> {
    const targets = this.o.targets();
    for (const k of this.#last.keys()) if (!targets.has(k)) this.#last.delete(k);
    await Promise.all([...targets].map(([cluster, t]) => this.#check(cluster, t)));
    // Passive state of targets no longer routed (or quiet for long) goes: routes come and go with imports; and
    // so does what checks said of them.
    this.o.health.prune((this.o.now ?? Date.now)(), 10 * 60_000);
    this.o.health.retain(this.o.targets());
  }

  async #check(cluster: ClusterKey, t: CheckTarget): Promise<void> {
    const timeoutMs = this.o.timeoutMs ?? 1000;
    const gateway = `${t.gateway.host}:${t.gateway.port}`;
    const last = this.#last.get(cluster);
    const etag = last?.gateway === gateway ? last.etag : undefined;
    const r = await checkServices(t.gateway, this.o.connect, timeoutMs, this.o.tls, cluster, etag, this.o.maxAnswerBytes ?? DEFAULT_MAX_ANSWER);
    if (this.#closed) return;
    const health = this.o.health;
    const now = (this.o.now ?? Date.now)();
    switch (r.kind) {
      case 'failed':
        this.#last.delete(cluster);
        return health.checked(cluster, false, now);
      case 'absent':
        // An older gateway: its process answers for the cluster, nothing is said of services.
        this.#last.delete(cluster);
        return health.checked(cluster, await checkGateway(t.gateway, this.o.connect, timeoutMs, this.o.tls, cluster), now);
      case 'answer':
        if (r.etag) this.#last.set(cluster, { gateway, etag: r.etag, answer: r.answer });
        else this.#last.delete(cluster);
        return this.#apply(cluster, t.services, r.answer, now);
      case 'unchanged':
        // The answer held (the services routed there may have changed since: applied again).
        return this.#apply(cluster, t.services, last!.answer, now);
    }
  }

  #apply(cluster: ClusterKey, services: ReadonlySet<ServiceKey>, answer: ServicesAnswer, now: number): void {
    const health = this.o.health;
    health.reached(cluster);
    for (const service of services) {
      if (!answer.synced) {
        health.serviceChecked(cluster, service, false, now, 'the gateway has not synced its catalog yet');
        continue;
      }
      const s = answer.services.get(service);
      if (s) health.serviceChecked(cluster, service, s.ready, now, 'no ready endpoint at the gateway');
      // Left out of a bounded answer: no word on it either way.
      else if (!answer.truncated) health.serviceChecked(cluster, service, false, now, 'the gateway does not offer it to this cluster (not exported to it, or unknown there)');
    }
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }
}
