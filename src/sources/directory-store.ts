// The objects of one cluster directory of the local source, in memory and in sync with its YAML files: what
// changed becomes watch events (a file that does not parse keeps what it held; an object that vanished gets a
// second look; of two files defining one object the first wins), and it knows when all is known. Kept apart:
// when to look (directory-watch.ts), writes (directory-writer.ts), what the "server" owns (server-fields.ts).
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { defaults } from '../defaults.js';
import { formatProblem } from '../api/schema.js';
import { isChecked, validateResource } from '../api/validate.js';
import { type Logger, componentLogger } from '../logger.js';
import { type Clock, systemClock } from '../util/time.js';
import { parseCidr } from './clusterip.js';
import { DirectoryWatch } from './directory-watch.js';
import { CLUSTER_SCOPED, SERVER_FIELDS_DIR, STATE_DIR, isYaml, keyOfObject, serverFieldsFile, stampOf } from './local-layout.js';
import { ServerFieldsStore } from './server-fields.js';
import { type KubeObject, SourceError, type WatchEvent } from './source.js';

export interface DirectoryStoreOptions {
  /** Range ClusterIPs are allocated from (default 10.96.0.0/16). */
  serviceCidr?: string;
  /** Keep the directory watched (informers); false for one-shot commands. Default true. */
  watch?: boolean;
  /** Full rescan period, for changes fs.watch did not report (default 5000 ms). */
  rescanMs?: number;
  clock?: Clock;
  logger?: Logger;
}

/** Where an object is defined: its file and the index of its document there. */
export interface Entry {
  object: KubeObject;
  file: string;
  doc: number;
}

/** How long an object that vanished from its file waits for a second look before it is deleted. */
const DELETE_GRACE_MS = 300;
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

type Listener = (e: WatchEvent) => void;
type HealthListener = (err: Error | undefined) => void;

/** The objects of one cluster directory, kept in memory and in sync with the files. */
export class DirectoryStore {
  readonly dir: string;
  readonly clock: Clock;
  /** What the "server" owns of the objects (see server-fields.ts). */
  readonly serverFields: ServerFieldsStore;
  readonly #log: Logger;
  readonly #watch: DirectoryWatch;
  readonly #entries = new Map<string, Entry>();
  /** file → keys it held at its last good read, with the stat it was read at */
  readonly #files = new Map<string, { keys: string[]; stamp: string }>();
  readonly #listeners = new Set<Listener>();
  readonly #health = new Set<HealthListener>();
  /** Files that have never parsed: until they do, this cluster's objects are not all known. */
  readonly #neverParsed = new Map<string, string>();
  /** Objects that vanished from a file, waiting for a second look before they are deleted. */
  readonly #pendingGone = new Map<string, Set<string>>();
  readonly #goneTimers = new Map<string, unknown>();
  /** key → files that also define it but lost to the first file (they take over when it goes). */
  readonly #shadowed = new Map<string, Set<string>>();
  #scanned = false;
  #rv = 0;
  #error: Error | undefined;
  #closed = false;
  #resolveReady!: () => void;
  readonly ready: Promise<void>;
  #isReady = false;

  constructor(dir: string, options: DirectoryStoreOptions) {
    this.dir = dir;
    const cidr = parseCidr(options.serviceCidr ?? defaults.serviceCidr);
    this.clock = options.clock ?? systemClock;
    this.#log = options.logger ?? componentLogger('local-source').child({ dir });
    this.serverFields = new ServerFieldsStore({
      dir,
      cidr,
      clock: this.clock,
      log: this.#log,
      served: () => this.values(),
      changed: (name) => this.#refreshByServerFields(name),
    });
    this.#watch = new DirectoryWatch({
      clock: this.clock,
      watching: options.watch ?? true,
      rescanMs: options.rescanMs ?? 5000,
      scan: () => this.#scan(),
      changed: (path) => this.#changed(path),
    });
    this.ready = new Promise((r) => (this.#resolveReady = r));
    this.#watch.rescan();
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
    if (this.#watch.watching || this.#closed) return;
    this.#watch.rescan();
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

  /** Where an object is defined (for the writer). */
  entry(key: string): Entry | undefined {
    return this.#entries.get(key);
  }

  get closed(): boolean {
    return this.#closed;
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

  /** One full scan (DirectoryWatch decides when); false when the directory could not be read. */
  #scan(): boolean {
    try {
      this.#fullScan();
      this.#scanned = true;
      this.#updateReadiness();
      return true;
    } catch (cause) {
      this.#scanned = false;
      this.#setHealth(new SourceError('ECNET_SOURCE_UNREACHABLE', `cannot read cluster directory ${this.dir}: ${(cause as Error).message}`, { cause }));
      return false;
    }
  }

  /** Healthy and ready once the directory was read and every file in it has parsed at least once. */
  #updateReadiness(): void {
    if (!this.#scanned) return;
    const [first] = this.#neverParsed;
    if (first) {
      const [path, message] = first;
      this.#setHealth(
        new SourceError('ECNET_SOURCE_INVALID', `${this.#neverParsed.size} file(s) in ${this.dir} have never parsed, so not all its resources are known: ${path}: ${message}`),
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
    if (!statSync(this.dir).isDirectory()) throw new Error('not a directory');
    const seen = new Set<string>();
    const walk = (dir: string) => {
      this.watchDir(dir);
      for (const d of readdirSync(dir, { withFileTypes: true })) {
        if (d.name.startsWith('.')) continue;
        const path = join(dir, d.name);
        if (d.isDirectory()) walk(path);
        else if (d.isFile() && isYaml(d.name)) {
          seen.add(path);
          this.readFile(path);
        }
      }
    };
    const fieldsDir = join(this.dir, SERVER_FIELDS_DIR);
    if (existsSync(fieldsDir)) {
      this.watchDir(fieldsDir);
      for (const f of readdirSync(fieldsDir)) if (isYaml(f)) this.serverFields.read(join(fieldsDir, f));
    }
    walk(this.dir);
    for (const file of [...this.#files.keys()]) if (!seen.has(file)) this.readFile(file);
  }

  watchDir(dir: string): void {
    this.#watch.watchDir(dir);
  }

  #changed(path: string): void {
    if (this.#closed) return;
    try {
      const rel = relative(this.dir, path);
      if (rel.startsWith(SERVER_FIELDS_DIR)) {
        if (isYaml(path)) this.serverFields.read(path);
        else if (existsSync(path) && statSync(path).isDirectory()) this.#fullScan();
        return;
      }
      if (existsSync(path) && statSync(path).isDirectory()) {
        if (rel === STATE_DIR || rel.split('/').some((p) => p.startsWith('.'))) {
          const fieldsDir = join(this.dir, SERVER_FIELDS_DIR);
          if (existsSync(fieldsDir)) this.#fullScan();
          return;
        }
        this.#fullScan();
        return;
      }
      if (isYaml(path)) this.readFile(path);
    } catch (err) {
      this.#log.warn({ path, err }, 'reading a changed file failed; the rescan retries');
    }
  }

  #refreshByServerFields(name: string): void {
    for (const e of this.#entries.values()) {
      const o = e.object;
      if (serverFieldsFile(o) === name) this.readFile(e.file, true);
    }
  }

  /**
   * (Re)reads one file and turns the difference into events. `force` re-derives objects even if the file is
   * unchanged; `immediate` deletes what vanished at once (the writer's own writes) instead of looking again.
   */
  readFile(path: string, force = false, immediate = false): void {
    const stamp = stampOf(path);
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
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return this.readFile(path, false, immediate);
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
      if (isChecked(o)) {
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
    if (immediate || !this.#watch.watching) {
      for (const k of keys) this.#remove(k, path);
      return;
    }
    const pending = this.#pendingGone.get(path) ?? new Set<string>();
    for (const k of keys) pending.add(k);
    this.#pendingGone.set(path, pending);
    if (this.#goneTimers.has(path)) return;
    const timer = this.clock.setTimeout(() => {
      this.#goneTimers.delete(path);
      const gone = this.#pendingGone.get(path);
      this.#pendingGone.delete(path);
      if (this.#closed || !gone) return;
      try {
        this.readFile(path, true, true);
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
    for (const f of shadows ?? []) this.readFile(f, true, true);
    if (this.#entries.get(key)?.file !== file) return;
    this.#entries.delete(key);
    this.#emit({ type: 'deleted', object: e.object });
    // What the server owned of it goes too: an object created again later is a new one.
    this.serverFields.forget(serverFieldsFile(e.object));
  }

  /** Serves an object of `file` (document `index`): added, updated, or where it is defined only moved. */
  #put(key: string, doc: KubeObject, file: string, index: number): void {
    // The object as served: the document, plus what the server owns of it.
    const object = this.serverFields.serve(doc);
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

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch.close();
    for (const t of this.#goneTimers.values()) this.clock.clearTimeout(t);
    this.#goneTimers.clear();
    this.#listeners.clear();
    this.#health.clear();
  }
}
