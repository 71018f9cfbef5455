// The Source on a Kubernetes API server. Informers are client-node's ListWatch, supervised: the library only
// recovers by itself from 410 Gone and from a watch that ends cleanly, so every other failure (list error, HTTP
// error, dropped connection) is restarted here with backoff, keeping the cache. One-shot reads and writes are
// plain JSON over node:http(s) with the agent and credentials the kubeconfig gives (kc.applyToFetchOptions),
// so every kind is addressed the same way, by path, and objects stay the JSON the server sent.
import { isRecord } from '../util/objects.js';
import { request as httpRequest, STATUS_CODES, type Agent } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { KubeConfig, ListWatch, Watch, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { componentLogger, type Logger } from '../logger.js';
import { Backoff, defaultBackoff, type BackoffOptions } from '../util/backoff.js';
import { rfc3339, systemClock, type Clock } from '../util/time.js';
import {
  apiVersionOf,
  Kinds,
  SourceError,
  type ApplyOptions,
  type EventNote,
  type Informer,
  type InformerOptions,
  type KindRef,
  type KubeObject,
  type Source,
  type SourceErrorCode,
  type WatchEventType,
} from './source.js';
import { inlineKubeconfig } from './inline-kubeconfig.js';

export interface KubernetesSourceOptions {
  /** Kubeconfig YAML text (e.g. inline from a Cluster resource). Wins over the options below. */
  kubeconfig?: string;
  kubeconfigPath?: string;
  /** The pod's service account (KUBERNETES_SERVICE_HOST/PORT and the mounted token, as client-node reads them). */
  inCluster?: boolean;
  /** Context to use instead of the kubeconfig's current-context. */
  context?: string;
  /**
   * The kubeconfig text comes from a resource others can write (a Cluster, a Secret): inline credentials only,
   * no exec or auth-provider plugin, no file; and no line of it in an error (see inline-kubeconfig.ts).
   */
  inlineOnly?: boolean;
  clock?: Clock;
  /** Delays between informer restarts. */
  backoff?: BackoffOptions;
  /** Time limit of each one-shot request. Default 30 s. */
  requestTimeoutMs?: number;
  /** timeoutSeconds asked of the server for each watch. Default: random in 300..600 (as client-go). */
  watchTimeoutSeconds?: number;
}

const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
const WRITE_ATTEMPTS = 5;
const conflictBackoff: BackoffOptions = { initialMs: 20, maxMs: 500, jitter: 0.5 };
const PAGE_SIZE = '500';

type Json = Record<string, unknown>;
const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

const groupVersionPath = (k: Pick<KindRef, 'group' | 'version'>) =>
  k.group ? `/apis/${k.group}/${k.version}` : `/api/${k.version}`;

function collectionPath(k: KindRef, namespace: string | undefined): string {
  return k.namespaced && namespace
    ? `${groupVersionPath(k)}/namespaces/${encodeURIComponent(namespace)}/${k.plural}`
    : `${groupVersionPath(k)}/${k.plural}`;
}

function objectPath(k: KindRef, name: string, namespace: string | undefined): string {
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
function httpError(what: string, status: number, body: unknown): SourceError {
  const reason = isRecord(body) && typeof body.reason === 'string' && body.reason ? body.reason : STATUS_CODES[status] ?? 'Error';
  const detail = isRecord(body) && typeof body.message === 'string' ? body.message : typeof body === 'string' ? body.slice(0, 300) : '';
  return new SourceError(codeForStatus(status), `${what}: ${status} ${reason}${detail ? `: ${detail}` : ''}`, {
    status,
    cause: body ?? new Error(`HTTP ${status}`),
  });
}

const closedError = (what: string) => new SourceError('ECNET_SOURCE_CLOSED', `${what}: the kubernetes source is closed`);

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

/** The KubeConfig a source would use (checked as createKubernetesSource checks it); for other clients of the same server. */
export function loadKubeConfig(o: KubernetesSourceOptions): KubeConfig {
  const kc = new KubeConfig();
  const from =
    o.kubeconfig !== undefined
      ? 'the given kubeconfig text'
      : o.kubeconfigPath !== undefined
        ? o.kubeconfigPath
        : o.inCluster
          ? 'the in-cluster service account'
          : 'the default kubeconfig';
  const invalid = (message: string, cause?: unknown) =>
    new SourceError('ECNET_SOURCE_INVALID', `cannot use ${from}: ${message}`, cause === undefined ? undefined : { cause });
  if (o.inlineOnly && o.kubeconfig === undefined) throw invalid('only an inline kubeconfig is accepted here');
  try {
    // Inline-only: never client-node's loader (plugins, files, merge keys); the allowlisted fields alone.
    if (o.inlineOnly) kc.loadFromOptions(inlineKubeconfig(o.kubeconfig!));
    else if (o.kubeconfig !== undefined) kc.loadFromString(o.kubeconfig);
    else if (o.kubeconfigPath !== undefined) kc.loadFromFile(o.kubeconfigPath);
    else if (o.inCluster) kc.loadFromCluster();
    else kc.loadFromDefault();
  } catch (err) {
    if (err instanceof SourceError) throw err; // the allowlist's refusal, which quotes nothing
    // An inline kubeconfig's parse error quotes its text (a Secret's content): not passed on.
    if (o.inlineOnly) throw invalid('it does not load as a kubeconfig');
    throw invalid(errorMessage(err), err);
  }
  if (o.context !== undefined) {
    if (!kc.getContextObject(o.context)) throw invalid(`it has no context "${o.context}"`);
    kc.setCurrentContext(o.context);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    throw invalid(kc.getCurrentContext() ? `context "${kc.getCurrentContext()}" names no known cluster` : 'it sets no current-context');
  }
  let url: URL;
  try {
    url = new URL(cluster.server);
  } catch (err) {
    throw invalid(`cluster "${cluster.name}" has an invalid server URL ${JSON.stringify(cluster.server)}`, err);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw invalid(`cluster "${cluster.name}" server ${cluster.server} is neither https:// nor http://`);
  }
  // client-node refuses plain http unless the cluster says insecure-skip-tls-verify: fail here, not on first use.
  if (url.protocol === 'http:' && !cluster.skipTLSVerify && !cluster.proxyUrl) {
    throw invalid(`cluster "${cluster.name}" uses http:// without insecure-skip-tls-verify: true, which client-node refuses`);
  }
  return kc;
}

interface Reply {
  status: number;
  body: unknown;
}

interface CallOptions {
  query?: Record<string, string | undefined>;
  body?: unknown;
  /** Aborts this request (an informer closing). */
  signal?: AbortSignal;
}

interface ListResult {
  metadata: { resourceVersion: string };
  items: KubeObject[];
}

/** Fields of metadata the server owns: never sent on create, always taken from the live object on update. */
const SERVER_OWNED_METADATA = [
  'resourceVersion',
  'uid',
  'creationTimestamp',
  'generation',
  'managedFields',
  'selfLink',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
] as const;

/** Service fields the API server allocates or defaults once and rejects (or re-allocates) when a PUT omits them. */
const SERVICE_ALLOCATED = ['clusterIP', 'clusterIPs', 'ipFamilies', 'ipFamilyPolicy', 'healthCheckNodePort'] as const;

function bodyForCreate(desired: KubeObject, kind: KindRef, namespace: string | undefined): KubeObject {
  const body = structuredClone(desired);
  const meta = body.metadata as unknown as Json;
  for (const f of SERVER_OWNED_METADATA) delete meta[f];
  if (namespace) meta.namespace = namespace;
  delete body.status;
  body.apiVersion = apiVersionOf(kind);
  body.kind = kind.kind;
  return body;
}

/**
 * The PUT body that replaces `current` with `desired`: desired's fields, current's server-owned metadata and
 * status; labels, annotations, finalizers and ownerReferences stay as they are when desired leaves them unset;
 * a Service keeps what the server allocated (clusterIP(s), ipFamilies, node ports) unless desired sets it.
 */
function bodyForUpdate(desired: KubeObject, current: KubeObject, kind: KindRef): KubeObject {
  const body = bodyForCreate(desired, kind, current.metadata.namespace);
  const meta = body.metadata as unknown as Json;
  const live = current.metadata as unknown as Json;
  for (const f of ['labels', 'annotations', 'finalizers', 'ownerReferences']) {
    if (meta[f] === undefined && live[f] !== undefined) meta[f] = structuredClone(live[f]);
  }
  for (const f of SERVER_OWNED_METADATA) {
    if (f !== 'managedFields' && live[f] !== undefined) meta[f] = live[f];
  }
  if (current.status !== undefined) body.status = structuredClone(current.status);
  if (kind.group === '' && kind.kind === 'Service' && isRecord(body.spec) && isRecord(current.spec)) {
    keepServiceAllocations(body.spec, current.spec);
  }
  return body;
}

function keepServiceAllocations(spec: Json, live: Json): void {
  if (spec.type === 'ExternalName' || live.type === 'ExternalName') return;
  for (const f of SERVICE_ALLOCATED) {
    if (spec[f] === undefined && live[f] !== undefined) spec[f] = structuredClone(live[f]);
  }
  const nodePorts = (t: unknown) => t === 'NodePort' || t === 'LoadBalancer';
  if (!nodePorts(spec.type) || !nodePorts(live.type) || !Array.isArray(spec.ports) || !Array.isArray(live.ports)) return;
  const protocol = (p: Json) => (typeof p.protocol === 'string' ? p.protocol : 'TCP');
  for (const p of spec.ports) {
    if (!isRecord(p) || p.nodePort !== undefined) continue;
    const was = live.ports.find((q): q is Json => isRecord(q) && q.port === p.port && protocol(q) === protocol(p));
    if (was?.nodePort !== undefined) p.nodePort = was.nodePort;
  }
}


class KubernetesSource implements Source {
  readonly description: string;
  readonly #kc: KubeConfig;
  readonly #server: string;
  readonly #clock: Clock;
  readonly #backoff: BackoffOptions;
  readonly #requestTimeoutMs: number;
  readonly #watchTimeoutSeconds: number | undefined;
  readonly #log: Logger;
  /** Aborted by destroy(): every request and sleep in flight. */
  readonly #abort = new AbortController();
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #informers = new Set<KubeInformer<KubeObject>>();
  /** `apiVersion/Kind` → KindRef, for apply() on objects (seeded with Kinds, learned from calls and discovery). */
  readonly #kinds = new Map<string, KindRef>();
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: KubernetesSourceOptions) {
    this.#kc = loadKubeConfig(options);
    this.#server = this.#kc.getCurrentCluster()?.server ?? '';
    this.description = `kubernetes ${this.#server}`;
    this.#clock = options.clock ?? systemClock;
    this.#backoff = options.backoff ?? defaultBackoff;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#watchTimeoutSeconds = options.watchTimeoutSeconds;
    this.#log = componentLogger('kubernetes-source').child({ server: this.#server });
    for (const k of Object.values(Kinds)) this.#learn(k);
  }

  informer<T extends KubeObject = KubeObject>(kind: KindRef, options: InformerOptions<T> = {}): Informer<T> {
    if (this.#closed) throw closedError(`informer ${kind.kind}`);
    this.#learn(kind);
    const informer: KubeInformer<T> = new KubeInformer<T>({
      kc: this.#kc,
      kind,
      options,
      clock: this.#clock,
      backoff: this.#backoff,
      watchTimeoutSeconds: this.#watchTimeoutSeconds,
      log: this.#log,
      list: (signal) => this.#listAll(kind, options.namespace, options.labelSelector, signal),
      onClose: () => this.#informers.delete(informer as unknown as KubeInformer<KubeObject>),
    });
    this.#informers.add(informer as unknown as KubeInformer<KubeObject>);
    return informer;
  }

  list<T extends KubeObject = KubeObject>(kind: KindRef, namespace?: string): Promise<T[]> {
    return this.#op(`list ${kind.plural}`, async () => {
      this.#learn(kind);
      return (await this.#listAll(kind, namespace, undefined, undefined)).items as T[];
    });
  }

  get<T extends KubeObject = KubeObject>(kind: KindRef, name: string, namespace?: string): Promise<T | undefined> {
    return this.#op(`get ${kind.kind} ${name}`, async () => {
      this.#learn(kind);
      return (await this.#read(kind, name, namespace)) as T | undefined;
    });
  }

  apply<T extends KubeObject = KubeObject>(object: T, options: ApplyOptions): Promise<T> {
    const name = object.metadata?.name;
    return this.#op(`apply ${object.kind} ${name}`, async () => {
      const kind = await this.#kindOf(object);
      if (!name) throw new SourceError('ECNET_SOURCE_INVALID', `apply ${kind.kind}: metadata.name is required`);
      const namespace = kind.namespaced ? object.metadata.namespace : undefined;
      if (kind.namespaced && !namespace) {
        throw new SourceError('ECNET_SOURCE_INVALID', `apply ${kind.kind} "${name}": metadata.namespace is required`);
      }
      const query = { fieldManager: options.manager };
      const retry = new Backoff(conflictBackoff);
      for (let attempt = 1; ; attempt++) {
        const current = await this.#read(kind, name, namespace);
        const pre = options.precondition;
        if (pre && ('absent' in pre ? current !== undefined : current?.metadata.uid !== pre.uid)) {
          throw new SourceError('ECNET_SOURCE_CONFLICT', `apply ${kind.kind} "${name}": ${'absent' in pre ? 'it exists already' : 'it is not the object seen (uid changed or deleted)'}`, { status: 409 });
        }
        try {
          if (!current) {
            return (await this.#expect('POST', collectionPath(kind, namespace), { query, body: bodyForCreate(object, kind, namespace) })) as T;
          }
          return (await this.#expect('PUT', objectPath(kind, name, namespace), { query, body: bodyForUpdate(object, current, kind) })) as T;
        } catch (err) {
          // Conflict: created or modified since the read. Not found on PUT: deleted since the read. Read again.
          const retryable =
            err instanceof SourceError &&
            !pre &&
            (err.code === 'ECNET_SOURCE_CONFLICT' || (current !== undefined && err.code === 'ECNET_SOURCE_NOT_FOUND'));
          if (!retryable || attempt >= WRITE_ATTEMPTS) throw err;
          this.#log.debug({ kind: kind.kind, name, namespace, attempt, err }, 'apply: retrying');
          await this.#sleep(retry.next());
        }
      }
    });
  }

  delete(kind: KindRef, name: string, namespace?: string, options: { uid?: string } = {}): Promise<boolean> {
    return this.#op(`delete ${kind.kind} ${name}`, async () => {
      this.#learn(kind);
      const path = objectPath(kind, name, namespace);
      const body = { apiVersion: 'v1', kind: 'DeleteOptions', propagationPolicy: 'Background', ...(options.uid ? { preconditions: { uid: options.uid } } : {}) };
      const r = await this.#call('DELETE', path, { body });
      if (r.status === 404) return false;
      if (r.status >= 300) throw httpError(`DELETE ${path}`, r.status, r.body);
      return true;
    });
  }

  writeStatus(kind: KindRef, name: string, namespace: string | undefined, status: unknown): Promise<void> {
    return this.#op(`write status of ${kind.kind} ${name}`, async () => {
      this.#learn(kind);
      const path = `${objectPath(kind, name, namespace)}/status`;
      const retry = new Backoff(conflictBackoff);
      for (let attempt = 1; ; attempt++) {
        const current = await this.#read(kind, name, namespace);
        if (!current) throw new SourceError('ECNET_SOURCE_NOT_FOUND', `write status: ${kind.kind} "${namespace ? `${namespace}/` : ''}${name}" not found`, { status: 404 });
        const body: KubeObject = { ...current, status };
        delete (body.metadata as unknown as Json).managedFields;
        try {
          await this.#expect('PUT', path, { body });
          return;
        } catch (err) {
          if (!(err instanceof SourceError) || err.code !== 'ECNET_SOURCE_CONFLICT' || attempt >= WRITE_ATTEMPTS) throw err;
          this.#log.debug({ kind: kind.kind, name, namespace, attempt }, 'write status: conflict, retrying');
          await this.#sleep(retry.next());
        }
      }
    });
  }

  async event(object: KubeObject, note: EventNote): Promise<void> {
    const name = object.metadata?.name ?? '';
    if (this.#closed) {
      this.#log.debug({ kind: object.kind, name, reason: note.reason }, 'event dropped: source closed');
      return;
    }
    // A cluster-scoped object's events go to "default", which the API server accepts for them.
    const namespace = object.metadata?.namespace || 'default';
    const now = this.#clock.now();
    const event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: `${name.slice(0, 200)}.${(BigInt(now) * 1_000_000n + BigInt(Math.floor(Math.random() * 1e6))).toString(16)}`, namespace },
      involvedObject: {
        apiVersion: object.apiVersion,
        kind: object.kind,
        name,
        ...(object.metadata?.namespace ? { namespace: object.metadata.namespace } : {}),
        ...(object.metadata?.uid ? { uid: object.metadata.uid } : {}),
        ...(object.metadata?.resourceVersion ? { resourceVersion: object.metadata.resourceVersion } : {}),
      },
      reason: note.reason,
      message: note.message.slice(0, 1024),
      type: note.type,
      source: { component: 'ecnet' },
      reportingComponent: 'ecnet',
      firstTimestamp: rfc3339(now),
      lastTimestamp: rfc3339(now),
      count: 1,
    };
    try {
      await this.#op('event', () => this.#expect('POST', collectionPath(Kinds.Event, namespace), { body: event }));
    } catch (err) {
      this.#log.warn({ kind: object.kind, name, namespace, reason: note.reason, err }, 'could not record event');
    }
  }

  close(): Promise<void> {
    if (!this.#closing) {
      this.#closed = true;
      for (const i of [...this.#informers]) i.close();
      this.#closing = (async () => {
        while (this.#inflight.size) await Promise.allSettled([...this.#inflight]);
      })();
    }
    return this.#closing;
  }

  destroy(err?: Error): void {
    if (this.#abort.signal.aborted) return;
    if (err) this.#log.warn({ err }, 'kubernetes source destroyed');
    this.#closed = true;
    this.#closing ??= Promise.resolve();
    for (const i of [...this.#informers]) i.close();
    this.#abort.abort(err ?? closedError('destroy'));
  }

  // ---- internals ----

  #learn(kind: KindRef): void {
    this.#kinds.set(`${apiVersionOf(kind)}/${kind.kind}`, kind);
  }

  /** The KindRef of an object: known kinds first, else discovery of its group/version. */
  async #kindOf(object: KubeObject): Promise<KindRef> {
    const key = `${object.apiVersion}/${object.kind}`;
    const known = this.#kinds.get(key);
    if (known) return known;
    if (typeof object.apiVersion !== 'string' || typeof object.kind !== 'string' || !object.apiVersion || !object.kind) {
      throw new SourceError('ECNET_SOURCE_INVALID', 'apply: the object has no apiVersion and kind');
    }
    const [group, version] = object.apiVersion.includes('/') ? object.apiVersion.split('/', 2) : ['', object.apiVersion];
    const gv = { group: group ?? '', version: version ?? '' };
    const list = await this.#expect('GET', groupVersionPath(gv), {});
    const resources = isRecord(list) && Array.isArray(list.resources) ? list.resources : [];
    const found = resources.find((r): r is Json => isRecord(r) && r.kind === object.kind && typeof r.name === 'string' && !r.name.includes('/'));
    if (!found) throw new SourceError('ECNET_SOURCE_INVALID', `apply: the server does not serve kind ${object.kind} in ${object.apiVersion}`);
    const kind: KindRef = { ...gv, kind: object.kind, plural: found.name as string, namespaced: found.namespaced === true };
    this.#learn(kind);
    return kind;
  }

  /** Tracks a public call so close() can wait for it; rejects at once when closed. */
  #op<R>(what: string, fn: () => Promise<R>): Promise<R> {
    if (this.#closed) return Promise.reject(closedError(what));
    const p = fn();
    this.#inflight.add(p);
    const done = () => this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  async #read(kind: KindRef, name: string, namespace: string | undefined): Promise<KubeObject | undefined> {
    const path = objectPath(kind, name, namespace);
    const r = await this.#call('GET', path, {});
    if (r.status === 404) return undefined;
    if (r.status >= 300) throw httpError(`GET ${path}`, r.status, r.body);
    return this.#typed(kind, r.body);
  }

  #typed(kind: KindRef, item: unknown): KubeObject {
    // Lists of built-in kinds carry no apiVersion/kind on their items.
    return { apiVersion: apiVersionOf(kind), kind: kind.kind, ...(item as Json) } as KubeObject;
  }

  async #listAll(kind: KindRef, namespace: string | undefined, labelSelector: string | undefined, signal: AbortSignal | undefined): Promise<ListResult> {
    const path = collectionPath(kind, namespace);
    const items: KubeObject[] = [];
    let resourceVersion = '';
    let next: string | undefined;
    let restarts = 0;
    for (;;) {
      let page: unknown;
      try {
        page = await this.#expect('GET', path, { query: { labelSelector, limit: PAGE_SIZE, continue: next }, ...(signal ? { signal } : {}) });
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
  async #expect(method: string, path: string, options: CallOptions): Promise<unknown> {
    const r = await this.#call(method, path, options);
    if (r.status < 200 || r.status >= 300) throw httpError(`${method} ${path}`, r.status, r.body);
    return r.body;
  }

  /** One HTTP exchange with the API server (any status); network failures and timeouts reject. */
  async #call(method: string, path: string, options: CallOptions): Promise<Reply> {
    const what = `${method} ${path}`;
    if (this.#abort.signal.aborted) throw closedError(what);
    // One controller per request, linked by listeners removed afterwards (AbortSignal.any would keep every
    // request's signal attached to the source's long-lived one).
    const request = new AbortController();
    let timedOut = false;
    const timer = this.#clock.setTimeout(() => {
      timedOut = true;
      request.abort();
    }, this.#requestTimeoutMs);
    const abort = () => request.abort();
    const parents = [this.#abort.signal, ...(options.signal ? [options.signal] : [])];
    for (const p of parents) p.addEventListener('abort', abort, { once: true });
    if (options.signal?.aborted) request.abort();
    const signal = request.signal;
    try {
      const init = await this.#kc.applyToFetchOptions({});
      const url = new URL(this.#server + path);
      for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
      const headers: Record<string, string> = { ...plainHeaders(init.headers), accept: 'application/json' };
      const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
      if (payload) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = String(payload.length);
      }
      const agent = (typeof init.agent === 'function' ? init.agent(url) : init.agent) as Agent | undefined;
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
      if (this.#abort.signal.aborted || options.signal?.aborted) throw closedError(what);
      if (timedOut) {
        throw new SourceError('ECNET_SOURCE_UNREACHABLE', `${what}: no answer within ${this.#requestTimeoutMs} ms`, { cause: err });
      }
      const code = isRecord(err) && typeof err.code === 'string' ? ` (${err.code})` : '';
      throw new SourceError('ECNET_SOURCE_UNREACHABLE', `${what}: ${errorMessage(err)}${code}`, { cause: err });
    } finally {
      this.#clock.clearTimeout(timer);
      for (const p of parents) p.removeEventListener('abort', abort);
    }
  }

  /** A delay on the injected clock that destroy() cuts short (rejecting). */
  #sleep(ms: number): Promise<void> {
    const signal = this.#abort.signal;
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) return reject(closedError('retry'));
      const onAbort = () => {
        this.#clock.clearTimeout(timer);
        reject(closedError('retry'));
      };
      const timer = this.#clock.setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

// ---- informers ----

interface WatchHooks {
  clock: Clock;
  closed(): boolean;
  /** ListWatch calls watch() right after it delivered a list (or to resume): the first call means synced. */
  opening(): void;
  /** The server answered 200 and the stream is open. */
  connected(): void;
  timeoutSeconds(): number;
}

const abortedController = () => {
  const c = new AbortController();
  c.abort();
  return c;
};

/**
 * client-node's Watch, asking for bookmarks and a server-side timeout, with what the library leaves out: the
 * connected signal, in-stream ERROR events (other than 410) and instant clean closes turned into errors so they
 * restart with backoff instead of in a tight loop, a client-side limit for a watch the server never ends, and
 * nothing delivered once the informer is closed.
 */
class InformerWatch extends Watch {
  #current: AbortController | undefined;

  constructor(
    config: KubeConfig,
    private readonly hooks: WatchHooks,
  ) {
    super(config);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const h = this.hooks;
    h.opening();
    if (h.closed()) return abortedController();
    const timeoutSeconds = h.timeoutSeconds();
    const openedAt = h.clock.now();
    let ended = false;
    let lines = 0;
    let streamError: Error | undefined;
    let guard: unknown;
    let guardFired = false;
    const finish = (err: unknown) => {
      if (ended) return;
      ended = true;
      if (guard !== undefined) h.clock.clearTimeout(guard);
      this.#current = undefined;
      if (h.closed()) return;
      let reported = err ?? undefined;
      if (guardFired) {
        reported = new SourceError('ECNET_SOURCE_UNREACHABLE', `watch ${path}: still open ${timeoutSeconds + 30} s after it asked the server to end it at ${timeoutSeconds} s`);
      } else if (reported === undefined && streamError) {
        reported = streamError;
      } else if (reported === undefined && lines === 0 && h.clock.now() - openedAt < 1000) {
        reported = new SourceError('ECNET_SOURCE_UNREACHABLE', `watch ${path}: the server closed it as soon as it opened`);
      }
      done(reported ?? null);
    };
    const onEvent = (phase: string, obj: unknown, raw?: unknown) => {
      if (h.closed()) return;
      lines++;
      if (phase === 'ERROR' && isRecord(obj) && obj.code !== 410) {
        streamError = httpError(`watch ${path}`, typeof obj.code === 'number' ? obj.code : 500, obj);
      }
      callback(phase, obj, raw);
    };
    let controller: AbortController;
    try {
      controller = await super.watch(path, { ...queryParams, allowWatchBookmarks: true, timeoutSeconds }, onEvent, finish);
    } catch (err) {
      // applyToFetchOptions (credentials) failed before the library's own error handling.
      finish(err);
      return abortedController();
    }
    if (h.closed()) {
      controller.abort();
      return controller;
    }
    if (!ended) {
      this.#current = controller;
      guard = h.clock.setTimeout(() => {
        guardFired = true;
        controller.abort();
      }, (timeoutSeconds + 30) * 1000);
      h.connected();
    }
    return controller;
  }

  abort(): void {
    this.#current?.abort();
    this.#current = undefined;
  }
}

interface InformerDeps<T extends KubeObject> {
  kc: KubeConfig;
  kind: KindRef;
  options: InformerOptions<T>;
  clock: Clock;
  backoff: BackoffOptions;
  watchTimeoutSeconds: number | undefined;
  log: Logger;
  list(signal: AbortSignal): Promise<ListResult>;
  onClose(): void;
}

/** Converts what ListWatch reports (SourceError from our list, HTTP or stream errors from Watch) to a SourceError. */
function watchError(path: string, err: unknown): SourceError {
  if (err instanceof SourceError) return err;
  const status = isRecord(err) && typeof err.statusCode === 'number' ? err.statusCode : undefined;
  if (status !== undefined) return httpError(`watch ${path}`, status, err);
  const code = isRecord(err) ? err.code : undefined;
  const message = code === 'ERR_STREAM_PREMATURE_CLOSE' ? 'the connection dropped' : errorMessage(err);
  return new SourceError('ECNET_SOURCE_UNREACHABLE', `watch ${path}: ${message}`, { cause: err });
}

class KubeInformer<T extends KubeObject> implements Informer<T> {
  readonly kind: KindRef;
  readonly synced: Promise<void>;
  readonly #deps: InformerDeps<T>;
  readonly #lw: ListWatch<KubernetesObject>;
  readonly #watch: InformerWatch;
  readonly #backoff: Backoff;
  readonly #listAbort = new AbortController();
  readonly #path: string;
  readonly #log: Logger;
  #resolveSynced!: () => void;
  #rejectSynced!: (err: Error) => void;
  #isSynced = false;
  #healthy = true;
  #lastError: Error | undefined;
  #restart: unknown;
  #closed = false;

  constructor(deps: InformerDeps<T>) {
    this.#deps = deps;
    this.kind = deps.kind;
    const { kind, options } = deps;
    this.#path = collectionPath(kind, options.namespace);
    this.#log = deps.log.child({ informer: this.#path, ...(options.labelSelector ? { labelSelector: options.labelSelector } : {}) });
    this.synced = new Promise<void>((resolve, reject) => {
      this.#resolveSynced = resolve;
      this.#rejectSynced = reject;
    });
    this.synced.catch(() => {});
    this.#backoff = new Backoff(deps.backoff);
    this.#watch = new InformerWatch(deps.kc, {
      clock: deps.clock,
      closed: () => this.#closed,
      opening: () => this.#markSynced(),
      connected: () => this.#recovered(),
      timeoutSeconds: () => deps.watchTimeoutSeconds ?? Math.round(300 * (1 + Math.random())),
    });
    // Objects stay the server's JSON (timestamps are strings), not the library's typed models.
    const list = () => deps.list(this.#listAbort.signal) as unknown as Promise<KubernetesListObject<KubernetesObject>>;
    this.#lw = new ListWatch<KubernetesObject>(this.#path, this.#watch, list, false, options.labelSelector);
    this.#lw.on('add', (o) => this.#emit('added', o));
    this.#lw.on('update', (o) => this.#emit('updated', o));
    this.#lw.on('delete', (o) => this.#emit('deleted', o));
    this.#lw.on('error', (err) => this.#broke(err));
    this.#start();
  }

  get isSynced(): boolean {
    return this.#isSynced;
  }

  get healthy(): boolean {
    return this.#healthy;
  }

  get lastError(): Error | undefined {
    return this.#lastError;
  }

  list(namespace?: string): T[] {
    return [...this.#lw.list(namespace)] as unknown as T[];
  }

  get(name: string, namespace?: string): T | undefined {
    return this.#lw.get(name, this.kind.namespaced ? namespace : undefined) as unknown as T | undefined;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#restart !== undefined) this.#deps.clock.clearTimeout(this.#restart);
    this.#restart = undefined;
    this.#listAbort.abort();
    this.#watch.abort();
    void this.#lw.stop();
    if (!this.#isSynced) this.#rejectSynced(closedError(`informer ${this.#path}`));
    this.#deps.onClose();
  }

  #start(): void {
    this.#lw.start().catch((err: unknown) => this.#broke(err));
  }

  #markSynced(): void {
    if (this.#isSynced || this.#closed) return;
    this.#isSynced = true;
    this.#resolveSynced();
  }

  #emit(type: WatchEventType, object: KubernetesObject): void {
    if (this.#closed) return;
    try {
      this.#deps.options.onEvent?.({ type, object: object as unknown as T });
    } catch (err) {
      this.#log.error({ err, type }, 'onEvent threw');
    }
  }

  #health(error: Error | undefined): void {
    try {
      this.#deps.options.onHealth?.(error);
    } catch (err) {
      this.#log.error({ err }, 'onHealth threw');
    }
  }

  #broke(raw: unknown): void {
    if (this.#closed) return;
    const err = watchError(this.#path, raw);
    this.#lastError = err;
    const wasHealthy = this.#healthy;
    this.#healthy = false;
    if (this.#restart === undefined) {
      const delay = this.#backoff.next();
      this.#log.warn({ err, attempt: this.#backoff.attempts, retryInMs: delay }, 'informer broken, restarting');
      this.#restart = this.#deps.clock.setTimeout(() => {
        this.#restart = undefined;
        if (!this.#closed) this.#start();
      }, delay);
    }
    if (wasHealthy) this.#health(err);
  }

  #recovered(): void {
    if (this.#closed) return;
    this.#backoff.reset();
    if (this.#healthy) return;
    this.#healthy = true;
    this.#lastError = undefined;
    this.#log.info('informer recovered');
    this.#health(undefined);
  }
}

/** The Source on the API server a kubeconfig names. Throws SourceError ECNET_SOURCE_INVALID for a bad kubeconfig. */
export function createKubernetesSource(options: KubernetesSourceOptions = {}): Source {
  return new KubernetesSource(options);
}
