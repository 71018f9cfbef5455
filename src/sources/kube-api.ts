// The Kubernetes API as plain JSON over node:http(s): paths of kinds and objects, one request with the agent
// and credentials the kubeconfig gives, paged lists, and a non-2xx status mapped to a SourceError code. Separate
// from the source so the source holds only what each Source operation means (retries, preconditions, events).
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { Agent as HttpAgent, request as httpRequest, STATUS_CODES, type Agent } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest, type RequestOptions as HttpsRequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { isRecord } from '../util/objects.js';
import type { Clock } from '../util/time.js';
import { apiVersionOf, SourceError, type KindRef, type KubeObject, type SourceErrorCode } from './source.js';

const PAGE_SIZE = '500';

export type Json = Record<string, unknown>;
export const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export const groupVersionPath = (k: Pick<KindRef, 'group' | 'version'>) =>
  k.group ? `/apis/${k.group}/${k.version}` : `/api/${k.version}`;

export function collectionPath(k: KindRef, namespace: string | undefined): string {
  return k.namespaced && namespace
    ? `${groupVersionPath(k)}/namespaces/${encodeURIComponent(namespace)}/${k.plural}`
    : `${groupVersionPath(k)}/${k.plural}`;
}

export function objectPath(k: KindRef, name: string, namespace: string | undefined): string {
  if (k.namespaced && !namespace) {
    throw new SourceError('ECNET_SOURCE_INVALID', `${k.kind} "${name}" is namespaced: a namespace is required`);
  }
  return `${collectionPath(k, namespace)}/${encodeURIComponent(name)}`;
}

function codeForStatus(status: number): SourceErrorCode {
  if (status === 409) return 'ECNET_SOURCE_CONFLICT';
  if (status === 404) return 'ECNET_SOURCE_NOT_FOUND';
  if (status === 401 || status === 403) return 'ECNET_SOURCE_FORBIDDEN';
  if (status === 400 || status === 422 || status === 415 || status === 405) return 'ECNET_SOURCE_INVALID';
  if (status >= 500 || status === 429 || status === 408) return 'ECNET_SOURCE_UNREACHABLE';
  return 'ECNET_SOURCE_IO';
}

/** A non-2xx answer as a SourceError; the cause is the server's Status object (or its text). */
export function httpError(what: string, status: number, body: unknown): SourceError {
  const reason = isRecord(body) && typeof body.reason === 'string' && body.reason ? body.reason : STATUS_CODES[status] ?? 'Error';
  const detail = isRecord(body) && typeof body.message === 'string' ? body.message : typeof body === 'string' ? body.slice(0, 300) : '';
  return new SourceError(codeForStatus(status), `${what}: ${status} ${reason}${detail ? `: ${detail}` : ''}`, {
    status,
    cause: body ?? new Error(`HTTP ${status}`),
  });
}

export const closedError = (what: string) => new SourceError('ECNET_SOURCE_CLOSED', `${what}: the kubernetes source is closed`);

/** The kubeconfig's headers (node-fetch Headers, or a plain init) as a node:http header object. */
function plainHeaders(init: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(init)) {
    for (const pair of init as unknown[][]) if (typeof pair[0] === 'string') out[pair[0]] = String(pair[1]);
  } else if (isRecord(init) && typeof init.forEach === 'function') {
    (init as { forEach(cb: (value: string, name: string) => void): void }).forEach((v, k) => (out[k] = v));
  } else if (isRecord(init)) {
    for (const [k, v] of Object.entries(init)) out[k] = Array.isArray(v) ? v.join(', ') : String(v);
  }
  return out;
}

export interface Reply {
  status: number;
  body: unknown;
}

export interface CallOptions {
  query?: Record<string, string | undefined>;
  body?: unknown;
  /** The body's media type; default application/json. */
  contentType?: string;
  /** Aborts this request (an informer closing). */
  signal?: AbortSignal;
}

export interface ListResult {
  metadata: { resourceVersion: string };
  items: KubeObject[];
}

/** Requests to the one API server a kubeconfig names, cut short (ECNET_SOURCE_CLOSED) once `signal` aborts. */
export class KubeApi {
  readonly #kc: KubeConfig;
  readonly #server: string;
  readonly #clock: Clock;
  readonly #requestTimeoutMs: number;
  readonly #signal: AbortSignal;
  /** The kept-alive agent for the current TLS material (see #agentFor), and how many requests it carries. */
  #pool: Pooled | undefined;
  /** Agents of earlier TLS material with requests still on them: destroyed when the last one ends. */
  readonly #retired = new Set<Pooled>();

  constructor(o: { kc: KubeConfig; server: string; clock: Clock; requestTimeoutMs: number; signal: AbortSignal }) {
    this.#kc = o.kc;
    this.#server = o.server;
    this.#clock = o.clock;
    this.#requestTimeoutMs = o.requestTimeoutMs;
    this.#signal = o.signal;
    this.#signal.addEventListener('abort', () => this.release(), { once: true });
    // Each request in flight listens to the source's signal (removed when it ends): many at once is not a leak.
    setMaxListeners(0, this.#signal);
  }

  /** Closes the kept-alive connections (the source closing or destroyed). */
  release(): void {
    this.#pool?.agent.destroy();
    this.#pool = undefined;
    for (const r of this.#retired) r.agent.destroy();
    this.#retired.clear();
  }

  /**
   * client-node builds a new agent for every request, so every request would pay a new connection (and TLS
   * handshake). One kept-alive agent serves every request instead, made again only when the kubeconfig's TLS
   * material changes (certificate files are read again per request, so a rotated one is picked up). Behind a
   * proxy the library's own agent is used as it is.
   */
  #agentFor(url: URL, o: HttpsRequestOptions): Agent | Pooled | undefined {
    if (this.#kc.getCurrentCluster()?.proxyUrl) return o.agent as Agent | undefined;
    const tls = { ca: o.ca, cert: o.cert, key: o.key, pfx: o.pfx, passphrase: o.passphrase, rejectUnauthorized: o.rejectUnauthorized, servername: o.servername };
    const hash = createHash('sha256').update(url.protocol);
    for (const [k, v] of Object.entries(tls)) hash.update(`${k}=${v === undefined ? '' : Buffer.isBuffer(v) ? v.toString('base64') : String(v)};`);
    const key = hash.digest('hex');
    if (this.#pool?.key !== key) {
      // The old agent's requests in flight finish on it (destroying it would cut them: ECONNRESET); it goes
      // with the last of them.
      if (this.#pool) this.#retire(this.#pool);
      const defined = Object.fromEntries(Object.entries(tls).filter(([, v]) => v !== undefined));
      const agent = url.protocol === 'https:' ? new HttpsAgent({ keepAlive: true, ...defined }) : new HttpAgent({ keepAlive: true });
      this.#pool = { key, agent, active: 0 };
    }
    return this.#pool;
  }

  #retire(p: Pooled): void {
    if (p.active === 0) p.agent.destroy();
    else this.#retired.add(p);
  }

  #done(p: Pooled): void {
    p.active--;
    if (p.active === 0 && this.#retired.delete(p)) p.agent.destroy();
  }

  /** One object, or undefined when the server has none (404). */
  async read(kind: KindRef, name: string, namespace: string | undefined): Promise<KubeObject | undefined> {
    const path = objectPath(kind, name, namespace);
    const r = await this.call('GET', path, {});
    if (r.status === 404) return undefined;
    if (r.status >= 300) throw httpError(`GET ${path}`, r.status, r.body);
    return this.#typed(kind, r.body);
  }

  #typed(kind: KindRef, item: unknown): KubeObject {
    // Lists of built-in kinds carry no apiVersion/kind on their items.
    return { apiVersion: apiVersionOf(kind), kind: kind.kind, ...(item as Json) } as KubeObject;
  }

  /** Every page of a collection, as one list with the first page's resourceVersion. */
  async listAll(kind: KindRef, namespace: string | undefined, labelSelector: string | undefined, signal: AbortSignal | undefined, fieldSelector?: string): Promise<ListResult> {
    const path = collectionPath(kind, namespace);
    const items: KubeObject[] = [];
    let resourceVersion = '';
    let next: string | undefined;
    let restarts = 0;
    for (;;) {
      let page: unknown;
      try {
        page = await this.expect('GET', path, { query: { labelSelector, fieldSelector, limit: PAGE_SIZE, continue: next }, ...(signal ? { signal } : {}) });
      } catch (err) {
        // The continue token expired (410): the snapshot is gone, list again from the start.
        if (next !== undefined && err instanceof SourceError && err.status === 410 && restarts++ < 3) {
          items.length = 0;
          resourceVersion = '';
          next = undefined;
          continue;
        }
        throw err;
      }
      const list = isRecord(page) ? page : {};
      const meta = isRecord(list.metadata) ? list.metadata : {};
      if (!resourceVersion && typeof meta.resourceVersion === 'string') resourceVersion = meta.resourceVersion;
      if (Array.isArray(list.items)) for (const it of list.items) items.push(this.#typed(kind, it));
      next = typeof meta.continue === 'string' && meta.continue ? meta.continue : undefined;
      if (!next) return { metadata: { resourceVersion }, items };
    }
  }

  /** A request whose non-2xx answers are SourceErrors; resolves to the body. */
  async expect(method: string, path: string, options: CallOptions): Promise<unknown> {
    const r = await this.call(method, path, options);
    if (r.status < 200 || r.status >= 300) throw httpError(`${method} ${path}`, r.status, r.body);
    return r.body;
  }

  /** One HTTP exchange with the API server (any status); network failures and timeouts reject. */
  async call(method: string, path: string, options: CallOptions): Promise<Reply> {
    const what = `${method} ${path}`;
    if (this.#signal.aborted) throw closedError(what);
    // One controller per request, linked by listeners removed afterwards (AbortSignal.any would keep every
    // request's signal attached to the source's long-lived one).
    const request = new AbortController();
    let timedOut = false;
    const timer = this.#clock.setTimeout(() => {
      timedOut = true;
      request.abort();
    }, this.#requestTimeoutMs);
    const abort = () => request.abort();
    const parents = [this.#signal, ...(options.signal ? [options.signal] : [])];
    for (const p of parents) p.addEventListener('abort', abort, { once: true });
    if (options.signal?.aborted) request.abort();
    const signal = request.signal;
    let pooled: Pooled | undefined;
    try {
      const init: HttpsRequestOptions = {};
      await this.#kc.applyToHTTPSOptions(init);
      const url = new URL(this.#server + path);
      for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
      const headers: Record<string, string> = { ...plainHeaders(init.headers), accept: 'application/json' };
      if (init.auth) headers.authorization = `Basic ${Buffer.from(init.auth).toString('base64')}`;
      const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
      if (payload) {
        headers['content-type'] = options.contentType ?? 'application/json';
        headers['content-length'] = String(payload.length);
      }
      const chosen = this.#agentFor(url, init);
      if (chosen && 'key' in chosen) {
        pooled = chosen;
        pooled.active++;
      }
      const agent = chosen && 'key' in chosen ? chosen.agent : chosen;
      const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
      return await new Promise<Reply>((resolve, reject) => {
        const req = send(url, { method, headers, signal, ...(agent ? { agent } : {}) }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('close', () => {
            if (!res.complete) reject(new Error('the connection closed before the response was complete'));
          });
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown = text;
            if (text && (res.headers['content-type'] ?? '').includes('json')) {
              try {
                body = JSON.parse(text);
              } catch {
                // keep the text: the error message shows it
              }
            }
            resolve({ status: res.statusCode ?? 0, body });
          });
        });
        req.on('error', reject);
        req.end(payload);
      });
    } catch (err) {
      if (err instanceof SourceError) throw err;
      if (this.#signal.aborted || options.signal?.aborted) throw closedError(what);
      if (timedOut) {
        throw new SourceError('ECNET_SOURCE_UNREACHABLE', `${what}: no answer within ${this.#requestTimeoutMs} ms`, { cause: err });
      }
      const code = isRecord(err) && typeof err.code === 'string' ? ` (${err.code})` : '';
      throw new SourceError('ECNET_SOURCE_UNREACHABLE', `${what}: ${errorMessage(err)}${code}`, { cause: err });
    } finally {
      this.#clock.clearTimeout(timer);
      for (const p of parents) p.removeEventListener('abort', abort);
      if (pooled) this.#done(pooled);
    }
  }
}

/** A kept-alive agent for one TLS material (`key`: its hash) and the requests it carries now. */
interface Pooled {
  key: string;
  agent: Agent;
  active: number;
}
