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
import { defaults } from '../defaults.js';
import { randomUUID } from 'node:crypto';
import { type FSWatcher, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, unlinkSync, watch, writeFileSync } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { Document, parseAllDocuments, stringify } from 'yaml';
import { formatProblem } from '../api/schema.js';
import { isFlomesh, validateResource } from '../api/validate.js';
import { type Logger, componentLogger } from '../logger.js';
import { Backoff } from '../util/backoff.js';
import { type Clock, rfc3339, systemClock } from '../util/time.js';
import { type Cidr, allocateClusterIP, parseCidr } from './clusterip.js';
import { type LabelMatcher, parseLabelSelector } from './selectors.js';
import {
  type ApplyOptions,
  type EventNote,
  type Informer,
  type InformerOptions,
  type KindRef,
  type KubeObject,
  type Precondition,
  type Source,
  SourceError,
  type WatchEvent,
  apiVersionOf,
} from './source.js';

export interface LocalSourceOptions {
  dir: string;
  /** Range ClusterIPs are allocated from (default 10.96.0.0/16). */
  serviceCidr?: string;
  /** Keep the directory watched (informers); false for one-shot commands. Default true. */
  watch?: boolean;
  /** Full rescan period, for changes fs.watch did not report (default 5000 ms). */
  rescanMs?: number;
  clock?: Clock;
  logger?: Logger;
}

const CLUSTER_SCOPED = new Set(['Namespace', 'Cluster', 'Node', 'PersistentVolume', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'StorageClass', 'ClusterPropagationPolicy', 'PriorityClass']);
const STATE_DIR = '.ecnet';
/** How long an object that vanished from its file waits for a second look before it is deleted. */
const DELETE_GRACE_MS = 300;
const SIDECAR_DIR = join(STATE_DIR, 'status');

/** What the "server" owns of an object, kept beside it. */
interface Sidecar {
  metadata?: { uid?: string; creationTimestamp?: string };
  spec?: { clusterIP?: string; clusterIPs?: string[] };
  status?: unknown;
}

interface Entry {
  object: KubeObject;
  /** The object as read (before sidecar and server fields), to tell a spec change from a status change. */
  file: string;
  doc: number;
}

const groupOf = (apiVersion: string) => (apiVersion.includes('/') ? apiVersion.split('/')[0]! : '');
const storeKey = (group: string, kind: string, ns: string | undefined, name: string) => `${group}|${kind}|${ns ?? ''}|${name}`;
const keyOfObject = (o: KubeObject) => storeKey(groupOf(o.apiVersion), o.kind, o.metadata.namespace, o.metadata.name);
const keyOfRef = (k: KindRef, name: string, ns: string | undefined) => storeKey(k.group, k.kind, k.namespaced ? (ns ?? 'default') : undefined, name);
const sidecarName = (kind: string, ns: string | undefined, name: string) => `${kind.toLowerCase()}.${ns ?? '_'}.${name}.yaml`;
const isYaml = (f: string) => /\.ya?ml$/.test(f);
const now = (clock: Clock) => rfc3339(clock.now());
const clone = <T>(v: T): T => structuredClone(v);
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Writes a file so that readers see the old or the new content, never a part. */
function writeAtomic(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${randomUUID()}.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

type Listener = (e: WatchEvent) => void;
type HealthListener = (err: Error | undefined) => void;

/** The objects of one cluster directory, kept in memory and in sync with the files. */
class DirectoryStore {
  readonly #dir: string;
  readonly #cidr: Cidr;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #watching: boolean;
  readonly #rescanMs: number;
  readonly #entries = new Map<string, Entry>();
  /** file → keys it held at its last good read, with the stat it was read at */
  readonly #files = new Map<string, { keys: string[]; stamp: string }>();
  readonly #sidecars = new Map<string, { value: Sidecar; stamp: string }>();
  readonly #watchers = new Map<string, FSWatcher>();
  readonly #listeners = new Set<Listener>();
  readonly #health = new Set<HealthListener>();
  readonly #pending = new Map<string, unknown>();
  readonly #backoff = new Backoff({ initialMs: 100, maxMs: 5000, jitter: 0.2 });
  /** Files that have never parsed: until they do, this cluster's objects are not all known. */
  readonly #neverParsed = new Map<string, string>();
  /** Objects that vanished from a file, waiting for a second look before they are deleted. */
  readonly #pendingGone = new Map<string, Set<string>>();
  readonly #goneTimers = new Map<string, unknown>();
  /** key → files that also define it but lost to the first file (they take over when it goes). */
  readonly #shadowed = new Map<string, Set<string>>();
  #scanned = false;
  #rv = 0;
  #timer: unknown;
  #error: Error | undefined;
  #closed = false;
  #resolveReady!: () => void;
  readonly ready: Promise<void>;
  #isReady = false;

  constructor(dir: string, options: LocalSourceOptions) {
    this.#dir = dir;
    this.#cidr = parseCidr(options.serviceCidr ?? defaults.serviceCidr);
    this.#clock = options.clock ?? systemClock;
    this.#log = options.logger ?? componentLogger('local-source').child({ dir });
    this.#watching = options.watch ?? true;
    this.#rescanMs = options.rescanMs ?? 5000;
    this.ready = new Promise((r) => (this.#resolveReady = r));
    this.#scanLoop();
  }

  get healthy(): boolean {
    return this.#error === undefined && this.#isReady;
  }
  get lastError(): Error | undefined {
    return this.#error;
  }
  get isReady(): boolean {
    return this.#isReady;
  }
  /** The directory has been read (even if some file in it does not parse yet). */
  get scanned(): boolean {
    return this.#scanned;
  }

  /** A store that does not watch looks at the disk again before each use. */
  refreshIfUnwatched(): void {
    if (this.#watching || this.#closed) return;
    this.#scanLoop();
  }

  subscribe(l: Listener, h?: HealthListener): () => void {
    this.#listeners.add(l);
    if (h) this.#health.add(h);
    return () => {
      this.#listeners.delete(l);
      if (h) this.#health.delete(h);
    };
  }

  values(): KubeObject[] {
    return [...this.#entries.values()].map((e) => e.object);
  }

  get(key: string): KubeObject | undefined {
    return this.#entries.get(key)?.object;
  }

  #emit(e: WatchEvent): void {
    for (const l of [...this.#listeners]) l(e);
  }

  #setHealth(err: Error | undefined): void {
    if ((err === undefined) === (this.#error === undefined)) {
      this.#error = err;
      return;
    }
    this.#error = err;
    if (err) this.#log.warn({ err }, 'cluster directory unreadable; keeping the last known objects');
    else this.#log.info('cluster directory readable again');
    for (const h of [...this.#health]) h(err);
  }

  #scanLoop(): void {
    if (this.#closed) return;
    let delay = this.#rescanMs;
    try {
      this.#fullScan();
      this.#backoff.reset();
      this.#scanned = true;
      this.#updateReadiness();
    } catch (cause) {
      this.#scanned = false;
      this.#setHealth(new SourceError('ECNET_SOURCE_UNREACHABLE', `cannot read cluster directory ${this.#dir}: ${(cause as Error).message}`, { cause }));
      delay = this.#backoff.next();
    }
    if (this.#watching) {
      this.#timer = this.#clock.setTimeout(() => this.#scanLoop(), delay);
      (this.#timer as { unref?: () => void }).unref?.();
    }
  }

  /** Healthy and ready once the directory was read and every file in it has parsed at least once. */
  #updateReadiness(): void {
    if (!this.#scanned) return;
    const [first] = this.#neverParsed;
    if (first) {
      const [path, message] = first;
      this.#setHealth(
        new SourceError('ECNET_SOURCE_INVALID', `${this.#neverParsed.size} file(s) in ${this.#dir} have never parsed, so not all its resources are known: ${path}: ${message}`),
      );
      return;
    }
    this.#setHealth(undefined);
    if (!this.#isReady) {
      this.#isReady = true;
      this.#resolveReady();
    }
  }

  /** Reads every file whose stat changed; forgets files that are gone. Throws when the directory is unreadable. */
  #fullScan(): void {
    if (!statSync(this.#dir).isDirectory()) throw new Error('not a directory');
    const seen = new Set<string>();
    const walk = (dir: string) => {
      this.#watchDir(dir);
      for (const d of readdirSync(dir, { withFileTypes: true })) {
        if (d.name.startsWith('.')) continue;
        const path = join(dir, d.name);
        if (d.isDirectory()) walk(path);
        else if (d.isFile() && isYaml(d.name)) {
          seen.add(path);
          this.#readFile(path);
        }
      }
    };
    const sidecars = join(this.#dir, SIDECAR_DIR);
    if (existsSync(sidecars)) {
      this.#watchDir(sidecars);
      for (const f of readdirSync(sidecars)) if (isYaml(f)) this.#readSidecar(join(sidecars, f));
    }
    walk(this.#dir);
    for (const file of [...this.#files.keys()]) if (!seen.has(file)) this.#readFile(file);
  }

  #watchDir(dir: string): void {
    if (!this.#watching || this.#watchers.has(dir) || this.#closed) return;
    try {
      const w = watch(dir, { persistent: false }, (_type, name) => {
        if (name === null) return void this.#schedule(dir);
        const path = join(dir, name.toString());
        if (name.toString().startsWith('.') && !dir.endsWith(SIDECAR_DIR) && name.toString() !== STATE_DIR) return;
        this.#schedule(path);
      });
      w.on('error', () => {
        w.close();
        this.#watchers.delete(dir);
      });
      this.#watchers.set(dir, w);
    } catch {
      // A directory that vanished between readdir and watch: the next scan sees it gone.
    }
  }

  /** Coalesces the burst of events one write produces (create, write, rename) into one read. */
  #schedule(path: string): void {
    if (this.#pending.has(path) || this.#closed) return;
    this.#pending.set(
      path,
      this.#clock.setTimeout(() => {
        this.#pending.delete(path);
        this.#changed(path);
      }, 2),
    );
  }

  #changed(path: string): void {
    if (this.#closed) return;
    try {
      const rel = relative(this.#dir, path);
      if (rel.startsWith(SIDECAR_DIR)) {
        if (isYaml(path)) this.#readSidecar(path);
        else if (existsSync(path) && statSync(path).isDirectory()) this.#fullScan();
        return;
      }
      if (existsSync(path) && statSync(path).isDirectory()) {
        if (rel === STATE_DIR || rel.split('/').some((p) => p.startsWith('.'))) {
          const sc = join(this.#dir, SIDECAR_DIR);
          if (existsSync(sc)) this.#fullScan();
          return;
        }
        this.#fullScan();
        return;
      }
      if (isYaml(path)) this.#readFile(path);
    } catch (err) {
      this.#log.warn({ path, err }, 'reading a changed file failed; the rescan retries');
    }
  }

  #stampOf(path: string): string | undefined {
    try {
      const s = statSync(path);
      return `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch {
      return undefined;
    }
  }

  #readSidecar(path: string): void {
    const name = path.slice(path.lastIndexOf('/') + 1);
    const stamp = this.#stampOf(path);
    const prev = this.#sidecars.get(name);
    if (stamp === undefined) {
      if (prev) {
        this.#sidecars.delete(name);
        this.#refreshBySidecar(name);
      }
      return;
    }
    if (prev?.stamp === stamp) return;
    try {
      const value = (parseAllDocuments(readFileSync(path, 'utf8'))[0]?.toJS() ?? {}) as Sidecar;
      this.#sidecars.set(name, { value, stamp });
      this.#refreshBySidecar(name);
    } catch (err) {
      this.#log.warn({ path, err }, 'unreadable status file ignored');
    }
  }

  #refreshBySidecar(name: string): void {
    for (const e of this.#entries.values()) {
      const o = e.object;
      if (sidecarName(o.kind, o.metadata.namespace, o.metadata.name) === name) this.#readFile(e.file, true);
    }
  }

  /**
   * (Re)reads one file and turns the difference into events. `force` re-derives objects even if the file is
   * unchanged; `immediate` deletes what vanished at once (this store's own writes) instead of looking again.
   */
  #readFile(path: string, force = false, immediate = false): void {
    const stamp = this.#stampOf(path);
    const prev = this.#files.get(path);
    if (stamp !== undefined && prev?.stamp === stamp && !force) return;
    if (stamp === undefined) {
      if (this.#neverParsed.delete(path)) this.#updateReadiness();
      if (!prev) return;
      this.#files.delete(path);
      this.#dropLater(path, prev.keys, immediate);
      return;
    }
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return this.#readFile(path, false, immediate);
      throw err;
    }
    const docs = parseAllDocuments(text);
    const broken = docs.find((d) => d.errors.length);
    if (broken) {
      const message = broken.errors[0]!.message.split('\n')[0]!;
      this.#log.warn({ file: path, err: message }, 'YAML does not parse; keeping the objects the file held before');
      this.#files.set(path, { keys: prev?.keys ?? [], stamp });
      if (!prev) {
        this.#neverParsed.set(path, message);
        this.#updateReadiness();
      }
      return;
    }
    if (this.#neverParsed.delete(path)) this.#updateReadiness();
    const keys: string[] = [];
    docs.forEach((doc, i) => {
      const raw = doc.toJS() as unknown;
      if (raw === null || raw === undefined) return;
      const o = raw as KubeObject;
      if (typeof o !== 'object' || typeof o.apiVersion !== 'string' || typeof o.kind !== 'string' || typeof o.metadata?.name !== 'string') {
        this.#log.warn({ file: path, doc: i }, 'document is not a Kubernetes object (apiVersion, kind, metadata.name); ignored');
        return;
      }
      if (!CLUSTER_SCOPED.has(o.kind)) o.metadata = { ...o.metadata, namespace: o.metadata.namespace ?? 'default' };
      const key = keyOfObject(o);
      const owner = this.#entries.get(key);
      if (owner && owner.file !== path && owner.file < path && this.#files.get(owner.file)?.keys.includes(key)) {
        this.#log.warn({ file: path, other: owner.file, object: key }, 'object defined in two files; the first file wins');
        const files = this.#shadowed.get(key) ?? new Set<string>();
        this.#shadowed.set(key, files.add(path));
        return;
      }
      let object: KubeObject = o;
      if (isFlomesh(o) || o.apiVersion.startsWith('flomesh.io/')) {
        const v = validateResource(o);
        if (!v.ok) {
          this.#log.warn({ file: path, object: key, problems: v.problems.map(formatProblem) }, 'invalid resource; keeping its last valid version');
          if (owner?.file === path) {
            owner.doc = i;
            keys.push(key);
          }
          return;
        }
        object = v.resource as unknown as KubeObject;
      }
      keys.push(key);
      if (owner && owner.file !== path && this.#files.get(owner.file)?.keys.includes(key)) {
        // Taking over from a later file that still defines it: that one waits in the shadow.
        this.#shadowed.set(key, (this.#shadowed.get(key) ?? new Set<string>()).add(owner.file));
      }
      this.#put(key, object, path, i);
    });
    this.#files.set(path, { keys, stamp });
    this.#dropLater(
      path,
      (prev?.keys ?? []).filter((k) => !keys.includes(k)),
      immediate,
    );
  }

  /**
   * Objects that vanished from `path`. An editor's save can leave a file missing or empty for a moment, and a
   * deleted Cluster or export costs a lot (its imports go everywhere), so the file is looked at again first.
   */
  #dropLater(path: string, keys: string[], immediate: boolean): void {
    if (!keys.length) return;
    if (immediate || !this.#watching) {
      for (const k of keys) this.#remove(k, path);
      return;
    }
    const pending = this.#pendingGone.get(path) ?? new Set<string>();
    for (const k of keys) pending.add(k);
    this.#pendingGone.set(path, pending);
    if (this.#goneTimers.has(path)) return;
    const timer = this.#clock.setTimeout(() => {
      this.#goneTimers.delete(path);
      const gone = this.#pendingGone.get(path);
      this.#pendingGone.delete(path);
      if (this.#closed || !gone) return;
      try {
        this.#readFile(path, true, true);
      } catch (err) {
        this.#log.warn({ path, err }, 'second look at a changed file failed');
        return;
      }
      const still = this.#files.get(path)?.keys ?? [];
      for (const k of gone) if (!still.includes(k)) this.#remove(k, path);
    }, DELETE_GRACE_MS);
    (timer as { unref?: () => void }).unref?.();
    this.#goneTimers.set(path, timer);
  }

  #remove(key: string, file: string): void {
    const e = this.#entries.get(key);
    if (!e || e.file !== file) return;
    // Another file defining the same object takes over rather than the object going.
    const shadows = this.#shadowed.get(key);
    this.#shadowed.delete(key);
    for (const f of shadows ?? []) this.#readFile(f, true, true);
    if (this.#entries.get(key)?.file !== file) return;
    this.#entries.delete(key);
    this.#emit({ type: 'deleted', object: e.object });
    // What the server owned of it goes too: an object created again later is a new one.
    const sc = sidecarName(e.object.kind, e.object.metadata.namespace, e.object.metadata.name);
    this.#sidecars.delete(sc);
    try {
      unlinkSync(join(this.#dir, SIDECAR_DIR, sc));
    } catch {
      // none was written, or another process removed it first
    }
  }

  /** The object as served: the document, plus what the server owns of it. */
  #put(key: string, doc: KubeObject, file: string, index: number): void {
    const ns = doc.metadata.namespace;
    const scName = sidecarName(doc.kind, ns, doc.metadata.name);
    let sc = this.#sidecars.get(scName)?.value ?? {};
    const needsMeta = !doc.metadata.uid || !doc.metadata.creationTimestamp;
    const needsIp = doc.kind === 'Service' && doc.apiVersion === 'v1' && this.#needsClusterIP(doc, sc);
    if ((needsMeta && !sc.metadata?.uid) || needsIp) {
      sc = this.#writeSidecar(scName, (cur) => ({
        ...cur,
        metadata: cur.metadata?.uid ? cur.metadata : { uid: randomUUID(), creationTimestamp: now(this.#clock) },
        ...(needsIp && !cur.spec?.clusterIP ? { spec: { clusterIP: this.#allocate(`${ns}/${doc.metadata.name}`) } } : {}),
      }));
    }
    const object = clone(doc);
    object.metadata = {
      ...object.metadata,
      uid: doc.metadata.uid ?? sc.metadata?.uid ?? randomUUID(),
      creationTimestamp: doc.metadata.creationTimestamp ?? sc.metadata?.creationTimestamp ?? now(this.#clock),
    };
    if (doc.kind === 'Service' && sc.spec?.clusterIP && !(object.spec as { clusterIP?: string } | undefined)?.clusterIP) {
      const ip = sc.spec.clusterIP;
      object.spec = { ...(object.spec as object), clusterIP: ip, clusterIPs: [ip] };
    }
    delete object.status;
    if (sc.status !== undefined) object.status = sc.status;
    const prev = this.#entries.get(key);
    const generation = prev ? (same(prev.object.spec, object.spec) ? prev.object.metadata.generation : (prev.object.metadata.generation ?? 1) + 1) : 1;
    object.metadata.generation = generation ?? 1;
    if (prev) {
      const { resourceVersion: _a, ...pm } = prev.object.metadata;
      if (same({ ...prev.object, metadata: pm }, { ...object, metadata: { ...object.metadata, resourceVersion: undefined } })) {
        prev.file = file;
        prev.doc = index;
        return;
      }
    }
    object.metadata.resourceVersion = String(++this.#rv);
    this.#entries.set(key, { object, file, doc: index });
    this.#emit({ type: prev ? 'updated' : 'added', object });
  }

  #needsClusterIP(doc: KubeObject, sc: Sidecar): boolean {
    const spec = (doc.spec ?? {}) as { clusterIP?: string; type?: string };
    return !spec.clusterIP && spec.type !== 'ExternalName' && !sc.spec?.clusterIP;
  }

  #takenIps(): Set<string> {
    const taken = new Set<string>();
    for (const e of this.#entries.values()) {
      if (e.object.kind !== 'Service') continue;
      const ip = (e.object.spec as { clusterIP?: string } | undefined)?.clusterIP;
      if (ip) taken.add(ip);
    }
    for (const s of this.#sidecars.values()) if (s.value.spec?.clusterIP) taken.add(s.value.spec.clusterIP);
    return taken;
  }

  #allocate(key: string): string {
    return allocateClusterIP(this.#cidr, key, this.#takenIps());
  }

  #writeSidecar(name: string, update: (cur: Sidecar) => Sidecar): Sidecar {
    const path = join(this.#dir, SIDECAR_DIR, name);
    const cur = this.#sidecars.get(name)?.value ?? {};
    const next = update(cur);
    writeAtomic(path, stringify(next));
    this.#sidecars.set(name, { value: next, stamp: this.#stampOf(path) ?? '' });
    return next;
  }

  // ---- writes ----

  apply(input: KubeObject, precondition?: Precondition): KubeObject {
    this.#checkOpen();
    const o = clone(input);
    const namespaced = !CLUSTER_SCOPED.has(o.kind);
    if (typeof o.metadata?.name !== 'string' || !o.metadata.name) throw new SourceError('ECNET_SOURCE_INVALID', `${o.kind}: metadata.name is required`);
    if (namespaced) o.metadata.namespace = o.metadata.namespace ?? 'default';
    else delete o.metadata.namespace;
    if (isFlomesh(o) || o.apiVersion.startsWith('flomesh.io/')) {
      const v = validateResource(o);
      if (!v.ok) {
        throw new SourceError('ECNET_SOURCE_INVALID', `${o.kind} ${o.metadata.name} is invalid: ${v.problems.map(formatProblem).join('; ')}`);
      }
    }
    const key = keyOfObject(o);
    const conventional = this.#conventionalFile(o.kind, o.metadata.namespace, o.metadata.name);
    // Another process may have written since this store last looked: read what is on disk now.
    this.#readFile(conventional);
    const known = this.#entries.get(key);
    if (known) this.#readFile(known.file);
    const existing = this.#entries.get(key);
    if (precondition && ('absent' in precondition ? existing !== undefined : existing?.object.metadata.uid !== precondition.uid)) {
      throw new SourceError('ECNET_SOURCE_CONFLICT', `${o.kind} ${o.metadata.name}: ${'absent' in precondition ? 'it exists already' : 'it is not the object seen (uid changed or deleted)'}`);
    }
    // What is written: the object without server-managed fields (status lives beside it).
    const { resourceVersion: _rv, generation: _g, managedFields: _m, ...meta } = o.metadata as typeof o.metadata & { managedFields?: unknown };
    const doc: KubeObject = { ...o, metadata: meta };
    delete doc.status;
    if (existing) {
      // What the server owns stays where it is: inline if the document had it, else beside it.
      const sc = this.#sidecars.get(sidecarName(doc.kind, doc.metadata.namespace, doc.metadata.name))?.value;
      if (sc?.metadata?.uid) {
        delete doc.metadata.uid;
        delete doc.metadata.creationTimestamp;
      } else {
        doc.metadata = { ...doc.metadata, uid: existing.object.metadata.uid ?? randomUUID(), creationTimestamp: existing.object.metadata.creationTimestamp ?? now(this.#clock) };
      }
      const es = existing.object.spec as { clusterIP?: string; clusterIPs?: string[] } | undefined;
      const ds = doc.spec as { clusterIP?: string } | undefined;
      if (doc.kind === 'Service' && es?.clusterIP && !ds?.clusterIP && !sc?.spec?.clusterIP) {
        doc.spec = { ...(doc.spec as object), clusterIP: es.clusterIP, clusterIPs: es.clusterIPs ?? [es.clusterIP] };
      }
      this.#replaceDoc(existing.file, existing.doc, doc);
      this.#readFile(existing.file, true, true);
    } else {
      doc.metadata.uid = doc.metadata.uid ?? randomUUID();
      doc.metadata.creationTimestamp = doc.metadata.creationTimestamp ?? now(this.#clock);
      const ds = (doc.spec ?? {}) as { clusterIP?: string; type?: string };
      if (doc.kind === 'Service' && doc.apiVersion === 'v1' && !ds.clusterIP && ds.type !== 'ExternalName') {
        const ip = this.#allocate(`${doc.metadata.namespace}/${doc.metadata.name}`);
        doc.spec = { ...ds, clusterIP: ip, clusterIPs: [ip] };
      }
      const file = conventional;
      if (existsSync(file)) {
        // Another object's file name (same kind and name, other API group): append rather than overwrite.
        const text = readFileSync(file, 'utf8');
        writeAtomic(file, `${text.trimEnd()}\n---\n${stringify(doc)}`);
      } else {
        writeAtomic(file, stringify(doc));
      }
      this.#watchDir(dirname(file));
      this.#readFile(file, true, true);
    }
    const out = this.#entries.get(key);
    if (!out) throw new SourceError('ECNET_SOURCE_IO', `${o.kind} ${key} was written but could not be read back`);
    return clone(out.object);
  }

  #replaceDoc(file: string, index: number, object: KubeObject | undefined): void {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      // Gone since it was read: a delete is done; a write starts the file afresh.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      if (object) writeAtomic(file, stringify(object));
      return;
    }
    const docs = parseAllDocuments(text);
    const parts: string[] = [];
    docs.forEach((d, i) => {
      if (i !== index) {
        if (d.contents !== null) parts.push(String(d));
      } else if (object) parts.push(String(new Document(object)));
    });
    if (!parts.length) unlinkSync(file);
    else writeAtomic(file, parts.map((p) => p.trimEnd()).join('\n---\n') + '\n');
  }

  /** Where `apply` puts an object no file holds yet. */
  #conventionalFile(kind: string, ns: string | undefined, name: string): string {
    return join(this.#dir, ns ?? '_cluster', `${kind.toLowerCase()}.${name}.yaml`);
  }

  /** Brings one object up to date with the disk (its file, or where apply would have put it). */
  #refreshObject(key: string): void {
    const known = this.#entries.get(key);
    const [, kind, ns, name] = key.split('|') as [string, string, string, string];
    this.#readFile(known?.file ?? this.#conventionalFile(kind, ns || undefined, name));
  }

  delete(key: string, uid?: string): boolean {
    this.#checkOpen();
    this.#refreshObject(key);
    const e = this.#entries.get(key);
    if (!e) return false;
    if (uid !== undefined && e.object.metadata.uid !== uid) {
      throw new SourceError('ECNET_SOURCE_CONFLICT', `${key.replaceAll('|', ' ')}: not the object seen (uid changed)`);
    }
    this.#replaceDoc(e.file, e.doc, undefined);
    // If another file also defines it, that definition now holds (as it would after a user's edit).
    this.#readFile(e.file, true, true);
    return true;
  }

  writeStatus(key: string, status: unknown): void {
    this.#checkOpen();
    this.#refreshObject(key);
    const e = this.#entries.get(key);
    if (!e) throw new SourceError('ECNET_SOURCE_NOT_FOUND', `no object ${key.replaceAll('|', ' ')}`);
    const o = e.object;
    this.#writeSidecar(sidecarName(o.kind, o.metadata.namespace, o.metadata.name), (cur) => ({ ...cur, status }));
    this.#readFile(e.file, true, true);
  }

  async event(note: EventNote & { object: string }): Promise<void> {
    await appendFile(join(this.#dir, STATE_DIR, 'events.log'), `${JSON.stringify({ time: now(this.#clock), ...note })}\n`);
  }

  #checkOpen(): void {
    if (this.#closed) throw new SourceError('ECNET_SOURCE_CLOSED', `local source ${this.#dir} is closed`);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#clock.clearTimeout(this.#timer);
    for (const t of this.#pending.values()) this.#clock.clearTimeout(t);
    this.#pending.clear();
    for (const t of this.#goneTimers.values()) this.#clock.clearTimeout(t);
    this.#goneTimers.clear();
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
    this.#listeners.clear();
    this.#health.clear();
  }
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
    this.#matches = (o) =>
      o.kind === kind.kind && o.apiVersion === apiVersion && (!options.namespace || o.metadata.namespace === options.namespace) && labels(o.metadata.labels);
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
  readonly #informers = new Set<LocalInformer<KubeObject>>();
  #closed = false;

  constructor(options: LocalSourceOptions) {
    this.description = `local ${options.dir}`;
    this.#store = new DirectoryStore(options.dir, options);
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
    return this.#io(() => this.#store.apply(object, options.precondition) as T);
  }

  async delete(kind: KindRef, name: string, namespace?: string, options: { uid?: string } = {}): Promise<boolean> {
    await this.#ready();
    return this.#io(() => this.#store.delete(keyOfRef(kind, name, namespace), options.uid));
  }

  async writeStatus(kind: KindRef, name: string, namespace: string | undefined, status: unknown): Promise<void> {
    await this.#ready();
    this.#io(() => this.#store.writeStatus(keyOfRef(kind, name, namespace), status));
  }

  async event(object: KubeObject, note: EventNote): Promise<void> {
    try {
      await this.#store.event({ ...note, object: `${object.kind}/${object.metadata.namespace ? `${object.metadata.namespace}/` : ''}${object.metadata.name}` });
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
