// The Source on a Kubernetes API server: what each Source operation means there (apply as read, then create
// or replace, retried on conflict; status writes; events; discovery of kinds) and the source's lifetime (close
// waits for calls in flight, destroy cuts them short). Beside it: kubeconfig.ts loads the credentials,
// kube-api.ts makes the requests (plain JSON over node:http(s), so every kind is addressed the same way, by path,
// and objects stay the JSON the server sent), kube-bodies.ts builds write bodies, kube-informer.ts watches.
import type { KubeConfig } from '@kubernetes/client-node';
import { componentLogger, type Logger } from '../logger.js';
import { Backoff, defaultBackoff, type BackoffOptions } from '../util/backoff.js';
import { isRecord } from '../util/objects.js';
import { rfc3339, systemClock, type Clock } from '../util/time.js';
import { closedError, collectionPath, groupVersionPath, httpError, KubeApi, objectPath, type Json } from './kube-api.js';
import { bodyForCreate, bodyForUpdate } from './kube-bodies.js';
import { loadKubeConfig, type KubeconfigOptions } from './kubeconfig.js';
import { KubeInformer } from './kube-informer.js';
import {
  apiVersionOf,
  Kinds,
  MANAGED_BY,
  SourceError,
  type ApplyOptions,
  type EventNote,
  type Informer,
  type InformerOptions,
  type KindRef,
  type KubeObject,
  type Source,
} from './source.js';

export interface KubernetesSourceOptions extends KubeconfigOptions {
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

class KubernetesSource implements Source {
  readonly description: string;
  readonly #kc: KubeConfig;
  readonly #clock: Clock;
  readonly #backoff: BackoffOptions;
  readonly #watchTimeoutSeconds: number | undefined;
  readonly #log: Logger;
  readonly #api: KubeApi;
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
    const server = this.#kc.getCurrentCluster()?.server ?? '';
    this.description = `kubernetes ${server}`;
    this.#clock = options.clock ?? systemClock;
    this.#backoff = options.backoff ?? defaultBackoff;
    this.#watchTimeoutSeconds = options.watchTimeoutSeconds;
    this.#log = componentLogger('kubernetes-source').child({ server });
    this.#api = new KubeApi({
      kc: this.#kc,
      server,
      clock: this.#clock,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      signal: this.#abort.signal,
    });
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
      list: (signal) => this.#api.listAll(kind, options.namespace, options.labelSelector, signal, options.fieldSelector),
      onClose: () => this.#informers.delete(informer as unknown as KubeInformer<KubeObject>),
    });
    this.#informers.add(informer as unknown as KubeInformer<KubeObject>);
    return informer;
  }

  list<T extends KubeObject = KubeObject>(kind: KindRef, namespace?: string): Promise<T[]> {
    return this.#op(`list ${kind.plural}`, async () => {
      this.#learn(kind);
      return (await this.#api.listAll(kind, namespace, undefined, undefined)).items as T[];
    });
  }

  get<T extends KubeObject = KubeObject>(kind: KindRef, name: string, namespace?: string): Promise<T | undefined> {
    return this.#op(`get ${kind.kind} ${name}`, async () => {
      this.#learn(kind);
      return (await this.#api.read(kind, name, namespace)) as T | undefined;
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
      const pre = options.precondition;
      // What the caller saw stands in for the first read (one request per write instead of two); a write
      // against it that the server refuses as stale reads and tries again.
      let seen: KubeObject | null | undefined = options.seen === null ? null : options.seen && sameObject(options.seen, object) ? options.seen : undefined;
      for (let attempt = 1; ; attempt++) {
        const fromSeen = seen !== undefined;
        const current = fromSeen ? (seen ?? undefined) : await this.#api.read(kind, name, namespace);
        seen = undefined;
        if (pre && ('absent' in pre ? current !== undefined : current?.metadata.uid !== pre.uid)) {
          throw new SourceError('ECNET_SOURCE_CONFLICT', `apply ${kind.kind} "${name}": ${'absent' in pre ? 'it exists already' : 'it is not the object seen (uid changed or deleted)'}`, { status: 409 });
        }
        try {
          if (!current) {
            return (await this.#api.expect('POST', collectionPath(kind, namespace), { query, body: bodyForCreate(object, kind, namespace) })) as T;
          }
          return (await this.#api.expect('PUT', objectPath(kind, name, namespace), { query, body: bodyForUpdate(object, current, kind) })) as T;
        } catch (err) {
          // Conflict: created or modified since the read. Not found on PUT: deleted since the read. Read again.
          // A create under `absent` that finds one is the precondition failing, as a read would have found.
          const stale = err instanceof SourceError && (err.code === 'ECNET_SOURCE_CONFLICT' || (current !== undefined && err.code === 'ECNET_SOURCE_NOT_FOUND'));
          if (stale && fromSeen && !(pre && 'absent' in pre)) continue;
          const retryable = stale && !pre;
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
      const r = await this.#api.call('DELETE', path, { body });
      if (r.status === 404) return false;
      if (r.status >= 300) throw httpError(`DELETE ${path}`, r.status, r.body);
      return true;
    });
  }

  label(kind: KindRef, name: string, namespace: string | undefined, labels: Record<string, string | null>): Promise<boolean> {
    return this.#op(`label ${kind.kind} ${name}`, async () => {
      this.#learn(kind);
      const path = objectPath(kind, name, namespace);
      // A JSON merge patch of the labels alone: nothing else of the object is sent, so nothing else can change,
      // and no read or resourceVersion is needed.
      const r = await this.#api.call('PATCH', path, { body: { metadata: { labels } }, contentType: 'application/merge-patch+json', query: { fieldManager: MANAGED_BY } });
      if (r.status === 404) return false;
      if (r.status >= 300) throw httpError(`PATCH ${path}`, r.status, r.body);
      return true;
    });
  }

  writeStatus(kind: KindRef, name: string, namespace: string | undefined, status: unknown, seen?: KubeObject): Promise<void> {
    return this.#op(`write status of ${kind.kind} ${name}`, async () => {
      this.#learn(kind);
      const path = `${objectPath(kind, name, namespace)}/status`;
      const retry = new Backoff(conflictBackoff);
      let given = seen?.metadata.resourceVersion && seen.metadata.name === name && (seen.metadata.namespace ?? undefined) === (kind.namespaced ? namespace : undefined) ? seen : undefined;
      for (let attempt = 1; ; attempt++) {
        const fromSeen = given !== undefined;
        const current = given ?? (await this.#api.read(kind, name, namespace));
        given = undefined;
        if (!current) throw new SourceError('ECNET_SOURCE_NOT_FOUND', `write status: ${kind.kind} "${namespace ? `${namespace}/` : ''}${name}" not found`, { status: 404 });
        const body: KubeObject = { ...current, status };
        delete (body.metadata as unknown as Json).managedFields;
        try {
          await this.#api.expect('PUT', path, { body });
          return;
        } catch (err) {
          // Stale (409) or gone since it was seen (404): read it, as without it.
          if (fromSeen && err instanceof SourceError && (err.code === 'ECNET_SOURCE_CONFLICT' || err.code === 'ECNET_SOURCE_NOT_FOUND')) continue;
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
      await this.#op('event', () => this.#api.expect('POST', collectionPath(Kinds.Event, namespace), { body: event }));
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
        this.#api.release();
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
    const list = await this.#api.expect('GET', groupVersionPath(gv), {});
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

/** Whether `seen` is the object `desired` names (a caller's copy of another object is not used). */
const sameObject = (seen: KubeObject, desired: KubeObject): boolean =>
  Boolean(seen.metadata?.resourceVersion) && seen.metadata.name === desired.metadata.name && (seen.metadata.namespace ?? '') === (desired.metadata.namespace ?? '') && seen.kind === desired.kind;

/** The Source on the API server a kubeconfig names. Throws SourceError ECNET_SOURCE_INVALID for a bad kubeconfig. */
export function createKubernetesSource(options: KubernetesSourceOptions = {}): Source {
  return new KubernetesSource(options);
}
