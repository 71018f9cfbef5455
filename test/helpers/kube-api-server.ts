// An in-memory API server that speaks enough of the Kubernetes protocol for the kubernetes Source and the
// controller tests: list, watch (with history, bookmarks and 410 Expired), get, create, update, status update,
// delete, discovery, Status error bodies. Tests change state directly (put/remove), break watches, compact
// history and inject failures. HTTP on 127.0.0.1 with a bearer token; one global resourceVersion counter.
// With `strict`, it refuses what a real kube-apiserver refuses on an empty cluster (install-order tests).
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { apiVersionOf, Kinds, type KindRef, type KubeObject } from '../../src/sources/source.js';

export interface KubeApiServerOptions {
  /** Creating a namespaced object needs its Namespace to exist (as on a real server). Default true. */
  requireNamespaces?: boolean;
  /**
   * As a real server on an empty cluster: a custom resource is served only while a CustomResourceDefinition
   * defines it (its scope and versions are the CRD's; else 404 on every path and in discovery), a CRD's name
   * must be `<plural>.<group>`, and namespaced objects need their Namespace whatever `requireNamespaces` says.
   * Default false: the source and controller tests put custom resources without CRDs.
   */
  strict?: boolean;
  /** How often a watch that asked for bookmarks gets one. Default 1000 ms. */
  bookmarkIntervalMs?: number;
  /** Kinds served besides `Kinds`. */
  kinds?: KindRef[];
  /** Bearer token the kubeconfig carries and the server requires. */
  token?: string;
  /** Address to listen on (default 127.0.0.1): e.g. an underlay address that node namespaces reach. */
  host?: string;
  /**
   * Time every request other than a watch waits before it is answered (a real API server's round trip, its
   * admission and etcd write): a client that writes one request at a time pays it per request. Default 0.
   */
  latencyMs?: number;
  /**
   * Bearer tokens accepted besides `token`: each names a client, whose requests and bytes are counted apart
   * (`client()`, `RecordedRequest.client`); `kubeconfigFor(token)` points a client at this server with one.
   */
  clients?: string[];
}

/** What the server sent one client (by its bearer token): response bytes (headers excluded), requests, watches. */
export interface ClientStats {
  requests: number;
  watches: number;
  /** Body bytes of every response, watch streams included. */
  bytes: number;
  /** Of those, the bytes written on watch streams (initial events, changes, bookmarks). */
  watchBytes: number;
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  watch: boolean;
  /** Date.now() on arrival. */
  at: number;
  /** The bearer token it carried (the client's name, see `clients`). */
  client: string;
  /** The status answered (once answered). */
  status?: number;
  /** A create, update or status update whose object equals what was stored: answered, nothing changed. */
  unchanged?: boolean;
}

/** Which requests a failure or hook applies to (all given fields must match). */
export interface RequestFilter {
  method?: string;
  /** Exact path, or a pattern tested against it. */
  path?: string | RegExp;
  watch?: boolean;
}

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';
interface HistoryEntry {
  rv: number;
  kindKey: string;
  type: EventType;
  object: KubeObject;
  /** The object before this change (for selector transitions). */
  previous: KubeObject | undefined;
}

interface OpenWatch {
  kindKey: string;
  kind: KindRef;
  namespace: string | undefined;
  selector: (o: KubeObject) => boolean;
  res: ServerResponse;
  socket: Socket;
  timers: NodeJS.Timeout[];
}

type LabelSelector = (labels: Record<string, string> | undefined) => boolean;

class HttpStatus extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

const reasons: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  409: 'Conflict',
  410: 'Expired',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

const statusBody = (code: number, reason: string, message: string, details?: Record<string, unknown>) => ({
  kind: 'Status',
  apiVersion: 'v1',
  metadata: {},
  status: 'Failure',
  message,
  reason,
  ...(details ? { details } : {}),
  code,
});

const kindKeyOf = (k: Pick<KindRef, 'group' | 'plural'>) => `${k.group}/${k.plural}`;
const objKey = (namespace: string | undefined, name: string) => (namespace ? `${namespace}/${name}` : name);
const clone = <T>(v: T): T => structuredClone(v);
const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
// Built-in kinds (core, apps, *.k8s.io) are served without kind/apiVersion on list items; custom resources
// (any other dotted group) carry them, and only those need a CRD on a strict server.
const isBuiltIn = (k: Pick<KindRef, 'group'>) => !k.group.includes('.') || k.group.endsWith('.k8s.io');

const builtIn = (group: string, kind: string, plural: string, namespaced = true): KindRef => ({ group, version: 'v1', kind, plural, namespaced });
/** Built-in kinds served besides `Kinds`: what daemonset/ installs and the controller's Lease. */
export const BuiltInKinds = {
  ServiceAccount: builtIn('', 'ServiceAccount', 'serviceaccounts'),
  ConfigMap: builtIn('', 'ConfigMap', 'configmaps'),
  Deployment: builtIn('apps', 'Deployment', 'deployments'),
  DaemonSet: builtIn('apps', 'DaemonSet', 'daemonsets'),
  Role: builtIn('rbac.authorization.k8s.io', 'Role', 'roles'),
  RoleBinding: builtIn('rbac.authorization.k8s.io', 'RoleBinding', 'rolebindings'),
  ClusterRole: builtIn('rbac.authorization.k8s.io', 'ClusterRole', 'clusterroles', false),
  ClusterRoleBinding: builtIn('rbac.authorization.k8s.io', 'ClusterRoleBinding', 'clusterrolebindings', false),
  Lease: builtIn('coordination.k8s.io', 'Lease', 'leases'),
  CustomResourceDefinition: builtIn('apiextensions.k8s.io', 'CustomResourceDefinition', 'customresourcedefinitions', false),
} as const satisfies Record<string, KindRef>;

/** The fields of a CustomResourceDefinition that decide what it serves. */
interface CrdSpec {
  group?: string;
  scope?: string;
  names?: { kind?: string; plural?: string };
  versions?: { name?: string; served?: boolean }[];
}

function parseSelector(s: string | null): LabelSelector {
  if (!s) return () => true;
  const terms = s.split(',').map((t) => t.trim()).filter(Boolean).map((t): LabelSelector => {
    let m = /^([^!=\s]+)\s*!=\s*(.*)$/.exec(t);
    if (m) {
      const [, k = '', v = ''] = m;
      return (l) => l?.[k] !== v;
    }
    m = /^([^!=\s]+)\s*==?\s*(.*)$/.exec(t);
    if (m) {
      const [, k = '', v = ''] = m;
      return (l) => l?.[k] === v;
    }
    if (t.startsWith('!')) return (l) => l?.[t.slice(1)] === undefined;
    return (l) => l?.[t] !== undefined;
  });
  return (labels) => terms.every((f) => f(labels));
}

/** Field selectors: `path=value` and `path!=value` terms on dotted paths (metadata.name, spec.nodeName, …). */
function parseFieldSelector(s: string | null): (o: KubeObject) => boolean {
  if (!s) return () => true;
  const terms = s.split(',').map((t) => t.trim()).filter(Boolean).map((t) => {
    const m = /^([^!=\s]+)\s*(!=|==|=)\s*(.*)$/.exec(t);
    if (!m) throw new HttpStatus(400, 'BadRequest', `invalid field selector term ${JSON.stringify(t)}`);
    const [, path = '', op, value = ''] = m;
    const get = (o: KubeObject) => path.split('.').reduce<unknown>((v, k) => (v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), o);
    return (o: KubeObject) => (op === '!=' ? String(get(o) ?? '') !== value : String(get(o) ?? '') === value);
  });
  return (o) => terms.every((f) => f(o));
}

function objectSelector(labelSelector: string | null, fieldSelector: string | null): (o: KubeObject) => boolean {
  const labels = parseSelector(labelSelector);
  const fields = parseFieldSelector(fieldSelector);
  return (o) => labels(o.metadata.labels) && fields(o);
}

function matches(filter: RequestFilter, r: RecordedRequest): boolean {
  if (filter.method !== undefined && filter.method.toUpperCase() !== r.method) return false;
  if (filter.watch !== undefined && filter.watch !== r.watch) return false;
  if (filter.path !== undefined) {
    if (typeof filter.path === 'string' ? filter.path !== r.path : !filter.path.test(r.path)) return false;
  }
  return true;
}

interface Route {
  kind: KindRef;
  namespace: string | undefined;
  name: string | undefined;
  status: boolean;
}

export class KubeApiServer {
  /** Every request in arrival order. */
  readonly requests: RecordedRequest[] = [];
  #server = createServer((req, res) => this.#handle(req, res));
  #url = '';
  #token: string;
  #requireNamespaces: boolean;
  #strict: boolean;
  #bookmarkIntervalMs: number;
  #kinds = new Map<string, KindRef>();
  #store = new Map<string, Map<string, KubeObject>>();
  #rv = 1;
  #history: HistoryEntry[] = [];
  /** Watches from a resourceVersion older than this get 410 Expired. */
  #compactedRv = 1;
  #watches = new Set<OpenWatch>();
  #failures: { remaining: number; status: number; filter: RequestFilter }[] = [];
  #hooks: { filter: RequestFilter; action: () => void }[] = [];
  #nextIp = 10;
  #closed = false;
  #host: string;
  #latencyMs: number;
  /** Set by #update when the write changed nothing. */
  #unchanged = false;
  #tokens: Set<string>;
  #clients = new Map<string, ClientStats>();
  #connections = 0;
  #sockets = new Set<Socket>();
  /** bytesWritten of sockets already closed. */
  #closedBytes = 0;

  constructor(options: KubeApiServerOptions = {}) {
    this.#host = options.host ?? '127.0.0.1';
    this.#token = options.token ?? 'ecnet-test-token';
    this.#strict = options.strict ?? false;
    this.#requireNamespaces = this.#strict || (options.requireNamespaces ?? true);
    this.#bookmarkIntervalMs = options.bookmarkIntervalMs ?? 1000;
    this.#latencyMs = options.latencyMs ?? 0;
    this.#tokens = new Set([this.#token, ...(options.clients ?? [])]);
    this.#server.on('connection', (socket: Socket) => {
      this.#connections++;
      this.#sockets.add(socket);
      socket.once('close', () => {
        this.#sockets.delete(socket);
        this.#closedBytes += socket.bytesWritten;
      });
    });
    for (const k of [...Object.values(Kinds), ...Object.values(BuiltInKinds), ...(options.kinds ?? [])]) this.register(k);
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(0, this.#host, () => resolve());
    });
    this.#url = `http://${this.#host}:${(this.#server.address() as AddressInfo).port}`;
    return this;
  }

  get url(): string {
    return this.#url;
  }

  /** A kubeconfig pointing at this server. client-node refuses http:// unless insecure-skip-tls-verify is set. */
  get kubeconfig(): string {
    return this.kubeconfigFor(this.#token);
  }

  /** A kubeconfig with another bearer token: one of `clients` (else every request is refused, 401). */
  kubeconfigFor(token: string): string {
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: test',
      '  cluster:',
      `    server: ${this.#url}`,
      '    insecure-skip-tls-verify: true',
      'users:',
      '- name: test',
      '  user:',
      `    token: ${token}`,
      'contexts:',
      '- name: test',
      '  context:',
      '    cluster: test',
      '    user: test',
      'current-context: test',
      '',
    ].join('\n');
  }

  /** The current global resourceVersion. */
  get resourceVersion(): string {
    return String(this.#rv);
  }

  /** Watch connections currently open. */
  get openWatches(): number {
    return this.#watches.size;
  }

  /** TCP connections accepted since listen(): with kept-alive clients, far fewer than requests. */
  get connectionsAccepted(): number {
    return this.#connections;
  }

  /** TCP connections open now. */
  get connectionsOpen(): number {
    return this.#sockets.size;
  }

  /** Bytes written on every connection since listen() (headers and chunk framing included). */
  get bytesWritten(): number {
    let n = this.#closedBytes;
    for (const s of this.#sockets) n += s.bytesWritten;
    return n;
  }

  /** What was sent to the client with this bearer token so far (a live object: it keeps counting). */
  client(token: string): ClientStats {
    let c = this.#clients.get(token);
    if (!c) this.#clients.set(token, (c = { requests: 0, watches: 0, bytes: 0, watchBytes: 0 }));
    return c;
  }

  /** How many objects of `kind` are stored (in `namespace`, and passing `filter`), without copying them. */
  count<T extends KubeObject = KubeObject>(kind: KindRef, namespace?: string, filter?: (o: T) => boolean): number {
    let n = 0;
    for (const o of this.#bucket(kind).values()) {
      if ((namespace === undefined || o.metadata.namespace === namespace) && (!filter || filter(o as T))) n++;
    }
    return n;
  }

  register(kind: KindRef): void {
    this.#kinds.set(`${kind.group}/${kind.version}/${kind.plural}`, kind);
    if (!this.#store.has(kindKeyOf(kind))) this.#store.set(kindKeyOf(kind), new Map());
  }

  /** Creates or replaces an object as it is (status included), bypassing admission; emits the watch event. */
  put<T extends KubeObject>(object: T): T {
    const kind = this.#kindOfObject(object);
    const bucket = this.#bucket(kind);
    const ns = kind.namespaced ? (object.metadata.namespace ?? 'default') : undefined;
    const key = objKey(ns, object.metadata.name);
    const old = bucket.get(key);
    const obj = clone(object) as KubeObject;
    obj.metadata = { ...obj.metadata };
    if (ns) obj.metadata.namespace = ns;
    else delete obj.metadata.namespace;
    if (old) {
      obj.metadata.uid = old.metadata.uid ?? randomUUID();
      obj.metadata.creationTimestamp = old.metadata.creationTimestamp ?? this.#now();
      const gen = old.metadata.generation ?? 1;
      obj.metadata.generation = sameJson(old.spec, obj.spec) ? gen : gen + 1;
    } else {
      obj.metadata.uid = randomUUID();
      obj.metadata.creationTimestamp = this.#now();
      obj.metadata.generation = 1;
    }
    return this.#commit(kind, key, old ? 'MODIFIED' : 'ADDED', obj, old) as T;
  }

  /** Deletes an object directly; emits DELETED. False if it did not exist. */
  remove(kind: KindRef, namespace: string | undefined, name: string): boolean {
    const bucket = this.#bucket(kind);
    const key = objKey(kind.namespaced ? namespace : undefined, name);
    const old = bucket.get(key);
    if (!old) return false;
    this.#commit(kind, key, 'DELETED', clone(old), old);
    return true;
  }

  objects<T extends KubeObject = KubeObject>(kind: KindRef, namespace?: string): T[] {
    return [...this.#bucket(kind).values()]
      .filter((o) => namespace === undefined || o.metadata.namespace === namespace)
      .map((o) => clone(o) as T);
  }

  object<T extends KubeObject = KubeObject>(kind: KindRef, namespace: string | undefined, name: string): T | undefined {
    const o = this.#bucket(kind).get(objKey(kind.namespaced ? namespace : undefined, name));
    return o && (clone(o) as T);
  }

  /** Destroys every open watch socket without ending the response (as a crashed server or a cut cable would). */
  dropWatches(): number {
    const n = this.#watches.size;
    for (const w of [...this.#watches]) this.#closeWatch(w, 'drop');
    return n;
  }

  /** Forgets all history: a watch from any earlier resourceVersion gets 410 Expired. */
  compact(): void {
    this.#history = [];
    this.#compactedRv = this.#rv;
  }

  /** Answers the next `n` requests (matching `filter`) with `status` and a Status body. */
  failNext(n: number, status: number, filter: RequestFilter = {}): void {
    this.#failures.push({ remaining: n, status, filter });
  }

  /** Forgets every pending injected failure (the server "comes back"). */
  heal(): void {
    this.#failures = [];
  }

  /** Runs `action` just before the next request matching `filter` is handled (once). */
  beforeNext(filter: RequestFilter, action: () => void): void {
    this.#hooks.push({ filter, action });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of [...this.#watches]) this.#closeWatch(w, 'end');
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  // ---- request handling ----

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const query = Object.fromEntries(url.searchParams);
    const watch = query.watch === 'true' || query.watch === '1';
    const auth = req.headers.authorization ?? '';
    const client = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    const record: RecordedRequest = { method: req.method ?? 'GET', path: url.pathname, query, watch, at: Date.now(), client };
    this.requests.push(record);
    const stats = this.client(client);
    stats.requests++;
    if (watch) stats.watches++;
    // Count the body bytes this client is sent, watch streams included.
    const write = res.write.bind(res) as (...a: unknown[]) => boolean;
    const end = res.end.bind(res) as (...a: unknown[]) => ServerResponse;
    const counted = (chunk: unknown) => {
      const n = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk instanceof Uint8Array ? chunk.length : 0;
      stats.bytes += n;
      if (watch) stats.watchBytes += n;
    };
    res.write = ((chunk: unknown, ...rest: unknown[]) => (counted(chunk), write(chunk, ...rest))) as typeof res.write;
    res.end = ((chunk?: unknown, ...rest: unknown[]) => (typeof chunk !== 'function' && counted(chunk), end(chunk, ...rest))) as typeof res.end;
    res.once('finish', () => (record.status = res.statusCode));
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (this.#latencyMs > 0 && !watch) setTimeout(() => this.#answer(req, res, url, record, chunks), this.#latencyMs);
      else this.#answer(req, res, url, record, chunks);
    });
  }

  #answer(req: IncomingMessage, res: ServerResponse, url: URL, record: RecordedRequest, chunks: Buffer[]): void {
    {
      if (res.destroyed) return;
      try {
        const hook = this.#hooks.findIndex((h) => matches(h.filter, record));
        if (hook >= 0) this.#hooks.splice(hook, 1)[0]?.action();
        const failure = this.#failures.find((f) => f.remaining > 0 && matches(f.filter, record));
        if (failure) {
          failure.remaining--;
          const reason = reasons[failure.status] ?? 'Unknown';
          throw new HttpStatus(failure.status, reason, `injected failure: ${failure.status} ${reason}`);
        }
        if (!this.#tokens.has(record.client)) {
          throw new HttpStatus(401, 'Unauthorized', 'Unauthorized');
        }
        const body = chunks.length ? this.#parseBody(Buffer.concat(chunks).toString('utf8'), req) : undefined;
        this.#route(record, url, body, res);
      } catch (err) {
        if (err instanceof HttpStatus) this.#send(res, err.code, statusBody(err.code, err.reason, err.message, err.details));
        else this.#send(res, 500, statusBody(500, 'InternalError', String(err)));
      }
    }
  }

  #parseBody(text: string, req: IncomingMessage): unknown {
    const type = req.headers['content-type'] ?? '';
    const patch = req.method === 'PATCH';
    if (patch ? !type.startsWith('application/merge-patch+json') : !type.startsWith('application/json')) {
      throw new HttpStatus(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json`);
    }
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new HttpStatus(400, 'BadRequest', `the object provided is unrecognized: ${String(err)}`);
    }
  }

  #send(res: ServerResponse, code: number, body: unknown): void {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  #route(r: RecordedRequest, url: URL, body: unknown, res: ServerResponse): void {
    const seg = r.path.split('/').filter(Boolean).map(decodeURIComponent);
    // Discovery: /api/v1 and /apis/{group}/{version}.
    if ((seg[0] === 'api' && seg.length === 2) || (seg[0] === 'apis' && seg.length === 3)) {
      if (r.method !== 'GET') throw new HttpStatus(405, 'MethodNotAllowed', 'the server does not allow this method');
      return this.#send(res, 200, this.#discovery(seg[0] === 'api' ? '' : (seg[1] ?? ''), seg[seg.length - 1] ?? ''));
    }
    const route = this.#parseRoute(seg);
    if (!route) throw new HttpStatus(404, 'NotFound', 'the server could not find the requested resource');
    const { kind, namespace, name } = route;
    switch (r.method) {
      case 'GET':
        if (name === undefined) {
          if (r.watch) return this.#watch(kind, namespace, url.searchParams, res);
          return this.#send(res, 200, this.#list(kind, namespace, url.searchParams.get('labelSelector'), url.searchParams.get('fieldSelector')));
        }
        return this.#send(res, 200, this.#get(kind, namespace, name));
      case 'POST':
        if (name !== undefined) throw new HttpStatus(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        return this.#send(res, 201, this.#create(kind, namespace, body));
      case 'PUT':
        if (name === undefined) throw new HttpStatus(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        this.#unchanged = false;
        {
          const o = this.#update(route as Route & { name: string }, body);
          r.unchanged = this.#unchanged;
          return this.#send(res, 200, o);
        }
      case 'PATCH': {
        // JSON merge patch (RFC 7386) only, as the sources send it for labels.
        if (name === undefined || route.status) throw new HttpStatus(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        const current = this.#get(kind, namespace, name);
        this.#unchanged = false;
        const o = this.#update(route as Route & { name: string }, mergePatch(current, body));
        r.unchanged = this.#unchanged;
        return this.#send(res, 200, o);
      }
      case 'DELETE':
        if (name === undefined) throw new HttpStatus(405, 'MethodNotAllowed', 'deletecollection is not supported here');
        return this.#send(res, 200, this.#delete(kind, namespace, name, (body as { preconditions?: { uid?: string } } | undefined)?.preconditions?.uid));
      default:
        throw new HttpStatus(405, 'MethodNotAllowed', `the server does not allow method ${r.method}`);
    }
  }

  #parseRoute(seg: string[]): Route | undefined {
    let group: string;
    let version: string;
    let rest: string[];
    if (seg[0] === 'api' && seg.length >= 3) [group, version, rest] = ['', seg[1] ?? '', seg.slice(2)];
    else if (seg[0] === 'apis' && seg.length >= 4) [group, version, rest] = [seg[1] ?? '', seg[2] ?? '', seg.slice(3)];
    else return undefined;
    const kindOf = (plural: string | undefined) => (plural === undefined ? undefined : this.#served(group, version, plural));
    // namespaces/{ns}/{plural}[/{name}[/status]]
    // (namespaces/{name}/status is the Namespace's own status.)
    const namespaced = rest[0] === 'namespaces' && rest.length >= 3 ? kindOf(rest[2]) : undefined;
    if (namespaced) {
      if (!namespaced.namespaced || rest.length > 5 || (rest.length === 5 && rest[4] !== 'status')) return undefined;
      return { kind: namespaced, namespace: rest[1], name: rest[3], status: rest.length === 5 };
    }
    // {plural}[/{name}[/status]]: all namespaces, or a cluster-scoped object
    const kind = kindOf(rest[0]);
    if (!kind || rest.length > 3 || (rest.length === 3 && rest[2] !== 'status')) return undefined;
    if (kind.namespaced && rest.length > 1) return undefined;
    return { kind, namespace: undefined, name: rest[1], status: rest.length === 3 };
  }

  #discovery(group: string, version: string) {
    const resources = this.#servedKinds()
      .filter((k) => k.group === group && k.version === version)
      .flatMap((k) => [
        { name: k.plural, singularName: k.kind.toLowerCase(), namespaced: k.namespaced, kind: k.kind, verbs: ['create', 'delete', 'get', 'list', 'update', 'watch'] },
        { name: `${k.plural}/status`, singularName: '', namespaced: k.namespaced, kind: k.kind, verbs: ['get', 'update'] },
      ]);
    if (!resources.length) throw new HttpStatus(404, 'NotFound', 'the server could not find the requested resource');
    return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources };
  }

  #list(kind: KindRef, namespace: string | undefined, labelSelector: string | null, fieldSelector: string | null = null) {
    const labels = parseSelector(labelSelector);
    const fields = parseFieldSelector(fieldSelector);
    const selector = (o: KubeObject) => labels(o.metadata.labels) && fields(o);
    const items = [...this.#bucket(kind).values()]
      .filter((o) => (namespace === undefined || o.metadata.namespace === namespace) && selector(o))
      .map((o) => {
        const item = clone(o) as Partial<KubeObject>;
        if (isBuiltIn(kind)) {
          delete item.kind;
          delete item.apiVersion;
        }
        return item;
      });
    return { apiVersion: apiVersionOf(kind), kind: `${kind.kind}List`, metadata: { resourceVersion: String(this.#rv) }, items };
  }

  #get(kind: KindRef, namespace: string | undefined, name: string): KubeObject {
    const o = this.#bucket(kind).get(objKey(namespace, name));
    if (!o) throw this.#notFound(kind, name);
    return clone(o);
  }

  #create(kind: KindRef, namespace: string | undefined, body: unknown): KubeObject {
    const obj = this.#checkBody(kind, body);
    const generateName = (obj.metadata as unknown as Record<string, unknown>).generateName;
    if (!obj.metadata.name && typeof generateName === 'string') obj.metadata.name = `${generateName}${randomUUID().slice(0, 5)}`;
    delete (obj.metadata as unknown as Record<string, unknown>).generateName;
    if (!obj.metadata.name) throw this.#invalid(kind, '', 'metadata.name: Required value: name or generateName is required');
    this.#checkNamespace(kind, namespace, obj);
    this.#checkCrd(kind, obj);
    if (kind.namespaced && this.#requireNamespaces && kind !== Kinds.Namespace && !this.#bucket(Kinds.Namespace).has(namespace ?? '')) {
      throw new HttpStatus(404, 'NotFound', `namespaces "${namespace}" not found`, { name: namespace, kind: 'namespaces' });
    }
    const key = objKey(namespace, obj.metadata.name);
    if (this.#bucket(kind).has(key)) {
      throw new HttpStatus(409, 'AlreadyExists', `${kind.plural}${kind.group ? `.${kind.group}` : ''} "${obj.metadata.name}" already exists`, {
        name: obj.metadata.name,
        group: kind.group,
        kind: kind.plural,
      });
    }
    const meta = obj.metadata;
    for (const f of ['resourceVersion', 'uid', 'creationTimestamp', 'deletionTimestamp', 'generation'] as const) delete meta[f];
    obj.metadata = { ...meta, uid: randomUUID(), creationTimestamp: this.#now(), generation: 1 };
    if (namespace) obj.metadata.namespace = namespace;
    // Status is not writable on create (every kind here has a status subresource or none).
    delete obj.status;
    if (kind === Kinds.Namespace) obj.status = { phase: 'Active' };
    if (kind === Kinds.Service) this.#defaultService(obj, undefined);
    return this.#commit(kind, key, 'ADDED', obj, undefined);
  }

  #update(route: Route & { name: string }, body: unknown): KubeObject {
    const { kind, namespace, name } = route;
    const incoming = this.#checkBody(kind, body);
    if (incoming.metadata.name !== name) {
      throw new HttpStatus(400, 'BadRequest', `the name of the object (${incoming.metadata.name}) does not match the name on the URL (${name})`);
    }
    this.#checkNamespace(kind, namespace, incoming);
    if (!route.status) this.#checkCrd(kind, incoming);
    const key = objKey(namespace, name);
    const old = this.#bucket(kind).get(key);
    if (!old) throw this.#notFound(kind, name);
    const rv = incoming.metadata.resourceVersion;
    if (rv !== undefined && rv !== '' && rv !== old.metadata.resourceVersion) {
      throw new HttpStatus(
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${kind.plural}${kind.group ? `.${kind.group}` : ''} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name, group: kind.group, kind: kind.plural },
      );
    }
    let next: KubeObject;
    if (route.status) {
      next = clone(old);
      if (incoming.status === undefined) delete next.status;
      else next.status = incoming.status;
    } else {
      next = incoming;
      // Server-owned metadata comes from the stored object, whatever the request says.
      next.metadata = { ...incoming.metadata, generation: old.metadata.generation ?? 1 };
      for (const f of ['uid', 'creationTimestamp', 'deletionTimestamp'] as const) {
        const v = old.metadata[f];
        if (v === undefined) delete next.metadata[f];
        else next.metadata[f] = v;
      }
      if (namespace) next.metadata.namespace = namespace;
      if (old.status === undefined) delete next.status;
      else next.status = clone(old.status);
      if (kind === Kinds.Service) this.#defaultService(next, old);
      if (!sameJson(old.spec, next.spec)) next.metadata.generation = (old.metadata.generation ?? 1) + 1;
    }
    next.metadata.resourceVersion = old.metadata.resourceVersion ?? '';
    // A write that changes nothing keeps its resourceVersion and emits no event, as on a real server.
    if (sameJson(old, next)) {
      this.#unchanged = true;
      return clone(old);
    }
    return this.#commit(kind, key, 'MODIFIED', next, old);
  }

  #delete(kind: KindRef, namespace: string | undefined, name: string, uid?: string): KubeObject {
    const key = objKey(namespace, name);
    const old = this.#bucket(kind).get(key);
    if (!old) throw this.#notFound(kind, name);
    if (uid !== undefined && old.metadata.uid !== uid) {
      throw new HttpStatus(409, 'Conflict', `Precondition failed: UID in precondition: ${uid}, UID in object meta: ${old.metadata.uid}`);
    }
    return this.#commit(kind, key, 'DELETED', clone(old), old);
  }

  #checkBody(kind: KindRef, body: unknown): KubeObject {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new HttpStatus(400, 'BadRequest', 'the body of the request must be a JSON object');
    }
    const obj = clone(body) as KubeObject;
    if (obj.kind !== kind.kind || obj.apiVersion !== apiVersionOf(kind)) {
      throw new HttpStatus(400, 'BadRequest', `the API version in the data (${String(obj.apiVersion)}) and kind (${String(obj.kind)}) do not match ${apiVersionOf(kind)} ${kind.kind}`);
    }
    if (typeof obj.metadata !== 'object' || obj.metadata === null) obj.metadata = { name: '' };
    return obj;
  }

  #checkNamespace(kind: KindRef, namespace: string | undefined, obj: KubeObject): void {
    if (kind.namespaced && obj.metadata.namespace && obj.metadata.namespace !== namespace) {
      throw new HttpStatus(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
    }
  }

  /** Strict: the API server's own check of a CRD's name, without which its resources would not be served. */
  #checkCrd(kind: KindRef, obj: KubeObject): void {
    if (!this.#strict || kind.kind !== BuiltInKinds.CustomResourceDefinition.kind || kind.group !== BuiltInKinds.CustomResourceDefinition.group) return;
    const spec = (obj.spec ?? {}) as CrdSpec;
    const want = `${spec.names?.plural ?? ''}.${spec.group ?? ''}`;
    if (obj.metadata.name !== want) throw this.#invalid(kind, obj.metadata.name, `metadata.name: Invalid value: "${obj.metadata.name}": must be spec.names.plural+"."+spec.group`);
  }

  /**
   * The kind served at group/version/plural. Strict: a custom resource only as a stored CRD defines it (the
   * registered KindRef when it agrees, so tests keep using `Kinds`; else the CRD's, e.g. another scope).
   */
  #served(group: string, version: string, plural: string): KindRef | undefined {
    const known = this.#kinds.get(`${group}/${version}/${plural}`);
    if (!this.#strict || isBuiltIn({ group })) return known;
    const crd = this.#bucket(BuiltInKinds.CustomResourceDefinition).get(`${plural}.${group}`);
    const spec = (crd?.spec ?? {}) as CrdSpec;
    if (spec.group !== group || spec.names?.plural !== plural || !spec.names.kind) return undefined;
    if (!spec.versions?.some((v) => v.name === version && v.served !== false)) return undefined;
    const defined: KindRef = { group, version, kind: spec.names.kind, plural, namespaced: spec.scope === 'Namespaced' };
    if (known && known.kind === defined.kind && known.namespaced === defined.namespaced) return known;
    this.register(defined);
    return defined;
  }

  /** Every kind served now (discovery): the registered ones and, strict, those the stored CRDs define. */
  #servedKinds(): KindRef[] {
    const refs = [...this.#kinds.values()].map((k): [string, string, string] => [k.group, k.version, k.plural]);
    if (this.#strict) {
      for (const crd of this.#bucket(BuiltInKinds.CustomResourceDefinition).values()) {
        const spec = (crd.spec ?? {}) as CrdSpec;
        for (const v of spec.versions ?? []) refs.push([spec.group ?? '', v.name ?? '', spec.names?.plural ?? '']);
      }
    }
    const served = new Map<string, KindRef>();
    for (const [g, v, p] of refs) {
      const k = this.#served(g, v, p);
      if (k) served.set(`${g}/${v}/${p}`, k);
    }
    return [...served.values()];
  }

  /** Allocates and defaults like the Service registry; clusterIP is immutable once set. */
  #defaultService(obj: KubeObject, old: KubeObject | undefined): void {
    const spec = (obj.spec ?? {}) as Record<string, unknown>;
    obj.spec = spec;
    spec.type ??= 'ClusterIP';
    spec.sessionAffinity ??= 'None';
    if (Array.isArray(spec.ports)) {
      for (const p of spec.ports as Record<string, unknown>[]) {
        p.protocol ??= 'TCP';
        p.targetPort ??= p.port;
      }
    }
    if (spec.type === 'ExternalName') return;
    const oldSpec = old?.spec as Record<string, unknown> | undefined;
    if (old && oldSpec?.clusterIP !== undefined && spec.clusterIP !== oldSpec.clusterIP) {
      throw this.#invalid(Kinds.Service, obj.metadata.name, `spec.clusterIP: Invalid value: "${String(spec.clusterIP ?? '')}": field is immutable`);
    }
    if (spec.clusterIP === undefined || spec.clusterIP === '') {
      const n = this.#nextIp++;
      spec.clusterIP = `10.96.${Math.floor(n / 256) % 256}.${n % 256}`;
    }
    spec.clusterIPs ??= [spec.clusterIP];
    if (spec.clusterIP !== 'None') {
      spec.ipFamilies ??= ['IPv4'];
      spec.ipFamilyPolicy ??= 'SingleStack';
    }
  }

  #notFound(kind: KindRef, name: string): HttpStatus {
    return new HttpStatus(404, 'NotFound', `${kind.plural}${kind.group ? `.${kind.group}` : ''} "${name}" not found`, {
      name,
      group: kind.group,
      kind: kind.plural,
    });
  }

  #invalid(kind: KindRef, name: string, message: string): HttpStatus {
    return new HttpStatus(422, 'Invalid', `${kind.kind} "${name}" is invalid: ${message}`, { name, group: kind.group, kind: kind.kind });
  }

  // ---- state and watch ----

  #kindOfObject(o: KubeObject): KindRef {
    for (const k of this.#kinds.values()) if (k.kind === o.kind && apiVersionOf(k) === o.apiVersion) return k;
    throw new Error(`kube-api-server: unknown kind ${o.apiVersion} ${o.kind} (register it)`);
  }

  #bucket(kind: KindRef): Map<string, KubeObject> {
    let b = this.#store.get(kindKeyOf(kind));
    if (!b) {
      this.register(kind);
      b = this.#store.get(kindKeyOf(kind)) as Map<string, KubeObject>;
    }
    return b;
  }

  #now(): string {
    return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  }

  /** Stores (or deletes) with a fresh resourceVersion, records history, fans out to watches. */
  #commit(kind: KindRef, key: string, type: EventType, obj: KubeObject, previous: KubeObject | undefined): KubeObject {
    const rv = ++this.#rv;
    obj.apiVersion = apiVersionOf(kind);
    obj.kind = kind.kind;
    obj.metadata.resourceVersion = String(rv);
    const bucket = this.#bucket(kind);
    if (type === 'DELETED') bucket.delete(key);
    else bucket.set(key, obj);
    const entry: HistoryEntry = { rv, kindKey: kindKeyOf(kind), type, object: clone(obj), previous: previous && clone(previous) };
    this.#history.push(entry);
    for (const w of this.#watches) this.#deliver(w, entry);
    return clone(obj);
  }

  /** Writes one history entry to a watch, translated through its namespace and label selector. */
  #deliver(w: OpenWatch, e: HistoryEntry): void {
    if (e.kindKey !== w.kindKey) return;
    if (w.namespace !== undefined && e.object.metadata.namespace !== w.namespace) return;
    const now = e.type !== 'DELETED' && w.selector(e.object);
    const before = e.previous !== undefined && w.selector(e.previous);
    let type: EventType | undefined;
    if (e.type === 'DELETED') type = before ? 'DELETED' : undefined;
    else if (now) type = before ? 'MODIFIED' : 'ADDED';
    else if (before) type = 'DELETED';
    if (type) this.#write(w, { type, object: e.object });
  }

  #write(w: OpenWatch, event: unknown): void {
    if (!w.res.destroyed && !w.res.writableEnded) w.res.write(`${JSON.stringify(event)}\n`);
  }

  #watch(kind: KindRef, namespace: string | undefined, q: URLSearchParams, res: ServerResponse): void {
    const socket = res.socket as Socket;
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'cache-control': 'no-cache, private' });
    res.flushHeaders();
    const w: OpenWatch = { kindKey: kindKeyOf(kind), kind, namespace, selector: objectSelector(q.get('labelSelector'), q.get('fieldSelector')), res, socket, timers: [] };
    this.#watches.add(w);
    res.on('close', () => this.#closeWatch(w, 'end'));
    const rvParam = q.get('resourceVersion') ?? '';
    if (rvParam === '' || rvParam === '0') {
      // "Any" resourceVersion: the current state as synthetic ADDED events, then changes.
      for (const o of this.#bucket(kind).values()) {
        if ((namespace === undefined || o.metadata.namespace === namespace) && w.selector(o)) {
          this.#write(w, { type: 'ADDED', object: clone(o) });
        }
      }
    } else {
      const from = Number(rvParam);
      if (!Number.isInteger(from) || from < this.#compactedRv) {
        this.#write(w, {
          type: 'ERROR',
          object: statusBody(410, 'Expired', `too old resource version: ${rvParam} (${this.#compactedRv})`),
        });
        this.#closeWatch(w, 'end');
        return;
      }
      for (const e of this.#history) if (e.rv > from) this.#deliver(w, e);
    }
    if (q.get('allowWatchBookmarks') === 'true') {
      w.timers.push(
        setInterval(() => {
          this.#write(w, { type: 'BOOKMARK', object: { kind: kind.kind, apiVersion: apiVersionOf(kind), metadata: { resourceVersion: String(this.#rv) } } });
        }, this.#bookmarkIntervalMs),
      );
    }
    const timeout = Number(q.get('timeoutSeconds') ?? '0');
    if (timeout > 0) w.timers.push(setTimeout(() => this.#closeWatch(w, 'end'), timeout * 1000));
  }

  #closeWatch(w: OpenWatch, how: 'end' | 'drop'): void {
    if (!this.#watches.delete(w)) return;
    for (const t of w.timers) clearTimeout(t);
    if (how === 'drop') w.socket.destroy();
    else w.res.end();
  }
}

/** RFC 7386: objects merge key by key, null removes, anything else replaces. */
function mergePatch(target: unknown, patch: unknown): KubeObject {
  const merge = (t: unknown, p: unknown): unknown => {
    if (p === null || typeof p !== 'object' || Array.isArray(p)) return p;
    const out: Record<string, unknown> = t !== null && typeof t === 'object' && !Array.isArray(t) ? { ...(t as Record<string, unknown>) } : {};
    for (const [k, v] of Object.entries(p)) {
      if (v === null) delete out[k];
      else out[k] = merge(out[k], v);
    }
    return out;
  };
  return merge(target, patch) as KubeObject;
}

export async function startKubeApiServer(options?: KubeApiServerOptions): Promise<KubeApiServer> {
  return new KubeApiServer(options).listen();
}
