// An informer on the API server: client-node's ListWatch, supervised. The library recovers by itself only from
// 410 Gone and from a watch that ends cleanly, so every other failure (list error, HTTP error, dropped
// connection) is restarted here with backoff, keeping the cache. Separate from the source: it is the only
// long-lived, stateful part (a watch, its timers and its health).
import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '../logger.js';
import { Backoff, type BackoffOptions } from '../util/backoff.js';
import { isRecord } from '../util/objects.js';
import type { Clock } from '../util/time.js';
import { closedError, collectionPath, errorMessage, httpError, type ListResult } from './kube-api.js';
import { SourceError, type Informer, type InformerOptions, type KindRef, type KubeObject, type WatchEventType } from './source.js';

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
      callback(phase, trimmed(obj), raw);
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

export interface InformerDeps<T extends KubeObject> {
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

/**
 * An object as the cache keeps it: without metadata.managedFields, which a real API server sends with every
 * object and no reader here uses (often the larger part of a small object; client-go's informers drop it with
 * a transform for the same reason). Writes never send it back (kube-bodies.ts), so nothing is lost.
 */
function trimmed<O>(o: O): O {
  const meta = isRecord(o) && isRecord(o.metadata) ? o.metadata : undefined;
  if (meta && 'managedFields' in meta) delete meta.managedFields;
  return o;
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

export class KubeInformer<T extends KubeObject> implements Informer<T> {
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
    const list = async () => {
      const l = await deps.list(this.#listAbort.signal);
      for (const o of l.items) trimmed(o);
      return l as unknown as KubernetesListObject<KubernetesObject>;
    };
    this.#lw = new ListWatch<KubernetesObject>(this.#path, this.#watch, list, false, options.labelSelector, options.fieldSelector);
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
