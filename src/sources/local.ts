// The local source: one directory per cluster holding ordinary multi-document YAML, the same a user would
// `kubectl apply`. It plays the API server's part for that directory:
//  - every *.yaml / *.yml file below the directory (not in dot-directories) holds objects; edits are picked up
//    live (fs.watch, plus a periodic rescan for what fs.watch misses);
//  - what the server owns (uid, creationTimestamp, an allocated ClusterIP, status) is written beside the
//    object in `.ecnet/status/<kind>.<namespace>.<name>.yaml`, never into a user's file;
//  - `apply` writes an object into the file that already holds it, else into `<namespace>/<kind>.<name>.yaml`;
//  - a file that does not parse, or a flomesh.io object that does not validate, keeps the objects it held before
//    (as an API server keeps the stored object when an update is refused) and says why in the log.
// Files are written atomically (temporary file + rename) so a reader never sees half a document.
// The parts: directory-store.ts reads (directory-watch.ts says when), directory-writer.ts writes,
// server-fields.ts keeps what the server owns, local-layout.ts names files and objects.
import { DirectoryStore, type DirectoryStoreOptions } from './directory-store.js';
import { DirectoryWriter } from './directory-writer.js';
import { clone, keyOfRef } from './local-layout.js';
import { type LabelMatcher, parseLabelSelector } from './selectors.js';
import {
  type ApplyOptions,
  type EventNote,
  type Informer,
  type InformerOptions,
  type KindRef,
  type KubeObject,
  type Source,
  SourceError,
  type WatchEvent,
  apiVersionOf,
} from './source.js';

export interface LocalSourceOptions extends DirectoryStoreOptions {
  /** The cluster directory. */
  dir: string;
}

class LocalInformer<T extends KubeObject> implements Informer<T> {
  readonly synced: Promise<void>;
  #isSynced = false;
  #unsubscribe: () => void;
  #closed = false;
  readonly #matches: (o: KubeObject) => boolean;

  constructor(
    readonly kind: KindRef,
    private readonly store: DirectoryStore,
    options: InformerOptions<T>,
  ) {
    const apiVersion = apiVersionOf(kind);
    const labels: LabelMatcher = parseLabelSelector(options.labelSelector);
    const field = /^(spec\.nodeName|metadata\.name)=(.*)$/.exec(options.fieldSelector ?? '');
    if (options.fieldSelector !== undefined && !field) throw new SourceError('ECNET_SOURCE_INVALID', `field selector ${JSON.stringify(options.fieldSelector)}: the local source knows spec.nodeName=NAME and metadata.name=NAME only`);
    const fields = (o: KubeObject) =>
      !field || (field[1] === 'metadata.name' ? o.metadata.name === field[2] : (o.spec as { nodeName?: string } | undefined)?.nodeName === field[2]);
    this.#matches = (o) =>
      o.kind === kind.kind && o.apiVersion === apiVersion && (!options.namespace || o.metadata.namespace === options.namespace) && labels(o.metadata.labels) && fields(o);
    // Events before the first full scan are not delivered one by one: the initial list is.
    this.#unsubscribe = store.subscribe(
      (e) => {
        if (this.#isSynced && this.#matches(e.object)) options.onEvent?.(e as WatchEvent<T>);
      },
      (err) => options.onHealth?.(err),
    );
    this.synced = store.ready.then(() => {
      if (this.#closed) throw new SourceError('ECNET_SOURCE_CLOSED', 'informer closed before it synced');
      this.#isSynced = true;
      for (const o of this.list()) options.onEvent?.({ type: 'added', object: o });
    });
    this.synced.catch(() => undefined);
  }

  get isSynced(): boolean {
    return this.#isSynced;
  }
  get healthy(): boolean {
    return this.store.healthy;
  }
  get lastError(): Error | undefined {
    return this.store.lastError;
  }

  list(namespace?: string): T[] {
    return this.store.values().filter((o) => this.#matches(o) && (!namespace || o.metadata.namespace === namespace)) as T[];
  }

  get(name: string, namespace?: string): T | undefined {
    const o = this.store.get(keyOfRef(this.kind, name, namespace));
    return o && this.#matches(o) ? (o as T) : undefined;
  }

  close(): void {
    this.#closed = true;
    this.#unsubscribe();
  }
}

export class LocalSource implements Source {
  readonly description: string;
  readonly #store: DirectoryStore;
  readonly #writer: DirectoryWriter;
  readonly #informers = new Set<LocalInformer<KubeObject>>();
  #closed = false;

  constructor(options: LocalSourceOptions) {
    this.description = `local ${options.dir}`;
    this.#store = new DirectoryStore(options.dir, options);
    this.#writer = new DirectoryWriter(this.#store);
  }

  /** `rescan`: a store that does not watch looks at the whole directory again (reads; writes re-read their file). */
  async #ready(rescan = false): Promise<void> {
    this.#check();
    if (rescan) this.#store.refreshIfUnwatched();
    // One-shot reads and writes go ahead once the directory was read, even with a file that does not parse
    // (it was logged); informers wait until every file has parsed.
    if (this.#store.scanned) return;
    const err = this.#store.lastError;
    if (err) throw err;
    await this.#store.ready;
  }

  #check(): void {
    if (this.#closed) throw new SourceError('ECNET_SOURCE_CLOSED', `${this.description} is closed`);
  }

  informer<T extends KubeObject = KubeObject>(kind: KindRef, options: InformerOptions<T> = {}): Informer<T> {
    this.#check();
    const inf = new LocalInformer<T>(kind, this.#store, options);
    this.#informers.add(inf as unknown as LocalInformer<KubeObject>);
    return inf;
  }

  async list<T extends KubeObject = KubeObject>(kind: KindRef, namespace?: string): Promise<T[]> {
    await this.#ready(true);
    const apiVersion = apiVersionOf(kind);
    return this.#store
      .values()
      .filter((o) => o.kind === kind.kind && o.apiVersion === apiVersion && (!namespace || o.metadata.namespace === namespace))
      .map((o) => clone(o) as T);
  }

  async get<T extends KubeObject = KubeObject>(kind: KindRef, name: string, namespace?: string): Promise<T | undefined> {
    await this.#ready(true);
    const o = this.#store.get(keyOfRef(kind, name, namespace));
    return o ? (clone(o) as T) : undefined;
  }

  async apply<T extends KubeObject = KubeObject>(object: T, options: ApplyOptions): Promise<T> {
    await this.#ready();
    return this.#io(() => this.#writer.apply(object, options.precondition) as T);
  }

  async delete(kind: KindRef, name: string, namespace?: string, options: { uid?: string } = {}): Promise<boolean> {
    await this.#ready();
    return this.#io(() => this.#writer.delete(keyOfRef(kind, name, namespace), options.uid));
  }

  async label(kind: KindRef, name: string, namespace: string | undefined, labels: Record<string, string | null>): Promise<boolean> {
    await this.#ready();
    return this.#io(() => this.#writer.label(keyOfRef(kind, name, namespace), labels));
  }

  async writeStatus(kind: KindRef, name: string, namespace: string | undefined, status: unknown): Promise<void> {
    await this.#ready();
    this.#io(() => this.#writer.writeStatus(keyOfRef(kind, name, namespace), status));
  }

  async event(object: KubeObject, note: EventNote): Promise<void> {
    try {
      await this.#writer.event({ ...note, object: `${object.kind}/${object.metadata.namespace ? `${object.metadata.namespace}/` : ''}${object.metadata.name}` });
    } catch {
      // best effort, as Kubernetes events are
    }
  }

  #io<R>(fn: () => R): R {
    try {
      return fn();
    } catch (err) {
      if (err instanceof SourceError) throw err;
      throw new SourceError('ECNET_SOURCE_IO', `${this.description}: ${(err as Error).message}`, { cause: err });
    }
  }

  async close(): Promise<void> {
    this.destroy();
  }

  destroy(_err?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const i of this.#informers) i.close();
    this.#store.close();
  }
}
