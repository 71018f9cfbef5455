// A Source held in memory, for benchmarks and tests of what sits above the Source interface (the agent's and
// the gateway's reconcilers) at sizes an API server in a test would take minutes to serve. Informers behave as
// the real ones do: the initial list as `added` events once synced, then one event per change, after the cache.
// Writes of status and Events are accepted and dropped. Not a stand-in for the sources' own tests.
import type { RedirectSet } from '../../src/agent/agent.js';
import type { ServiceEntry } from '../../src/bpf/services.js';
import { type ApplyOptions, type EventNote, type Informer, type InformerOptions, type KindRef, type KubeObject, type Source, objectKey } from '../../src/sources/source.js';

const groupOf = (apiVersion: string) => (apiVersion.includes('/') ? apiVersion.split('/')[0]! : '');
const kindOfObject = (o: KubeObject) => `${groupOf(o.apiVersion)}/${o.kind}`;
const kindOfRef = (k: KindRef) => `${k.group}/${k.kind}`;

export class MemorySource implements Source {
  readonly description = 'memory';
  readonly #objects = new Map<string, Map<string, KubeObject>>();
  readonly #watchers = new Set<{ kind: string; onEvent: (type: 'added' | 'updated' | 'deleted', o: KubeObject) => void }>();

  /** Kinds by group and name: flomesh.io and the MCS API both have a ServiceExport and a ServiceImport. */
  #store(kind: string): Map<string, KubeObject> {
    let m = this.#objects.get(kind);
    if (!m) this.#objects.set(kind, (m = new Map()));
    return m;
  }

  /** Creates or replaces an object (a new object each time, as informers hand them out), and tells informers. */
  put(o: KubeObject): void {
    const store = this.#store(kindOfObject(o));
    const type = store.has(objectKey(o)) ? 'updated' : 'added';
    store.set(objectKey(o), o);
    for (const w of this.#watchers) if (w.kind === kindOfObject(o)) w.onEvent(type, o);
  }

  remove(o: KubeObject): void {
    const store = this.#store(kindOfObject(o));
    const old = store.get(objectKey(o));
    if (!old) return;
    store.delete(objectKey(o));
    for (const w of this.#watchers) if (w.kind === kindOfObject(o)) w.onEvent('deleted', old);
  }

  informer<T extends KubeObject = KubeObject>(kind: KindRef, options: InformerOptions<T> = {}): Informer<T> {
    const store = this.#store(kindOfRef(kind));
    let synced = false;
    const watcher = { kind: kindOfRef(kind), onEvent: (type: 'added' | 'updated' | 'deleted', object: KubeObject) => synced && options.onEvent?.({ type, object: object as T }) };
    this.#watchers.add(watcher);
    const ready = Promise.resolve().then(() => {
      synced = true;
      for (const o of store.values()) options.onEvent?.({ type: 'added', object: o as T });
    });
    const key = (name: string, namespace?: string) => (kind.namespaced && namespace ? `${namespace}/${name}` : name);
    return {
      kind,
      synced: ready,
      get isSynced() {
        return synced;
      },
      healthy: true,
      lastError: undefined,
      list: (namespace?: string) => [...store.values()].filter((o) => !namespace || o.metadata.namespace === namespace) as T[],
      get: (name: string, namespace?: string) => store.get(key(name, namespace)) as T | undefined,
      close: () => void this.#watchers.delete(watcher),
    };
  }

  async list<T extends KubeObject = KubeObject>(kind: KindRef, namespace?: string): Promise<T[]> {
    return [...this.#store(kindOfRef(kind)).values()].filter((o) => !namespace || o.metadata.namespace === namespace) as T[];
  }

  async get<T extends KubeObject = KubeObject>(kind: KindRef, name: string, namespace?: string): Promise<T | undefined> {
    return this.#store(kindOfRef(kind)).get(namespace ? `${namespace}/${name}` : name) as T | undefined;
  }

  async apply<T extends KubeObject = KubeObject>(object: T, _options: ApplyOptions): Promise<T> {
    this.put(object);
    return object;
  }

  async delete(kind: KindRef, name: string, namespace?: string): Promise<boolean> {
    const o = this.#store(kindOfRef(kind)).get(namespace ? `${namespace}/${name}` : name);
    if (o) this.remove(o);
    return o !== undefined;
  }

  async label(kind: KindRef, name: string, namespace: string | undefined, labels: Record<string, string | null>): Promise<boolean> {
    const o = this.#store(kindOfRef(kind)).get(namespace ? `${namespace}/${name}` : name);
    if (!o) return false;
    const next: Record<string, string> = { ...(o.metadata.labels ?? {}) };
    for (const [k, v] of Object.entries(labels)) if (v === null) delete next[k];
    else next[k] = v;
    this.put({ ...o, metadata: { ...o.metadata, labels: next } });
    return true;
  }
  async writeStatus(): Promise<void> {}
  async event(_object: KubeObject, _note: EventNote): Promise<void> {}
  async close(): Promise<void> {
    this.#watchers.clear();
  }
  destroy(): void {
    this.#watchers.clear();
  }
}

/** The agent's redirect set held in a Map, written as the datapath's would be (whole, or a change). */
export function memoryRedirects(): RedirectSet & { held: Map<string, ServiceEntry>; size(): number } {
  const held = new Map<string, ServiceEntry>();
  return {
    held,
    replaceAll: (e) => {
      held.clear();
      for (const x of e) held.set(`${x.ip}:${x.port}`, x);
    },
    apply: (u, r) => {
      for (const x of r) held.delete(`${x.ip}:${x.port}`);
      for (const x of u) held.set(`${x.ip}:${x.port}`, x);
    },
    size: () => held.size,
  };
}
