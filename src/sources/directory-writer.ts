// The writes of the local source into its cluster directory: apply puts an object into the file that already
// holds it (else `<namespace>/<kind>.<name>.yaml`), delete takes its document out, status goes to the server
// fields; each write reads its file back at once. Separate from the store, which only reads.
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, unlinkSync } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Document, parseAllDocuments, stringify } from 'yaml';
import { formatProblem } from '../api/schema.js';
import { isChecked, validateResource } from '../api/validate.js';
import type { DirectoryStore } from './directory-store.js';
import { CLUSTER_SCOPED, STATE_DIR, clone, groupOf, keyOfObject, kindStem, now, serverFieldsFile, writeAtomic } from './local-layout.js';
import { type EventNote, type KubeObject, type Precondition, SourceError } from './source.js';

/** Writes into the directory a DirectoryStore reads, through that store (so a write is seen at once). */
export class DirectoryWriter {
  readonly #store: DirectoryStore;

  constructor(store: DirectoryStore) {
    this.#store = store;
  }

  apply(input: KubeObject, precondition?: Precondition): KubeObject {
    this.#checkOpen();
    const o = clone(input);
    const namespaced = !CLUSTER_SCOPED.has(o.kind);
    if (typeof o.metadata?.name !== 'string' || !o.metadata.name) throw new SourceError('ECNET_SOURCE_INVALID', `${o.kind}: metadata.name is required`);
    if (namespaced) o.metadata.namespace = o.metadata.namespace ?? 'default';
    else delete o.metadata.namespace;
    if (isChecked(o)) {
      const v = validateResource(o);
      if (!v.ok) {
        throw new SourceError('ECNET_SOURCE_INVALID', `${o.kind} ${o.metadata.name} is invalid: ${v.problems.map(formatProblem).join('; ')}`);
      }
    }
    const key = keyOfObject(o);
    const conventional = this.#conventionalFile(groupOf(o.apiVersion), o.kind, o.metadata.namespace, o.metadata.name);
    // Another process may have written since this store last looked: read what is on disk now.
    this.#store.readFile(conventional);
    const known = this.#store.entry(key);
    if (known) this.#store.readFile(known.file);
    const existing = this.#store.entry(key);
    if (precondition && ('absent' in precondition ? existing !== undefined : existing?.object.metadata.uid !== precondition.uid)) {
      throw new SourceError('ECNET_SOURCE_CONFLICT', `${o.kind} ${o.metadata.name}: ${'absent' in precondition ? 'it exists already' : 'it is not the object seen (uid changed or deleted)'}`);
    }
    // What is written: the object without server-managed fields (status lives beside it).
    const { resourceVersion: _rv, generation: _g, managedFields: _m, ...meta } = o.metadata as typeof o.metadata & { managedFields?: unknown };
    const doc: KubeObject = { ...o, metadata: meta };
    delete doc.status;
    if (existing) {
      // What the server owns stays where it is: inline if the document had it, else beside it.
      const fields = this.#store.serverFields.get(serverFieldsFile(doc));
      if (fields?.metadata?.uid) {
        delete doc.metadata.uid;
        delete doc.metadata.creationTimestamp;
      } else {
        doc.metadata = { ...doc.metadata, uid: existing.object.metadata.uid ?? randomUUID(), creationTimestamp: existing.object.metadata.creationTimestamp ?? now(this.#store.clock) };
      }
      const es = existing.object.spec as { clusterIP?: string; clusterIPs?: string[] } | undefined;
      const ds = doc.spec as { clusterIP?: string } | undefined;
      if (doc.kind === 'Service' && es?.clusterIP && !ds?.clusterIP && !fields?.spec?.clusterIP) {
        doc.spec = { ...(doc.spec as object), clusterIP: es.clusterIP, clusterIPs: es.clusterIPs ?? [es.clusterIP] };
      }
      this.#replaceDoc(existing.file, existing.doc, doc);
      this.#store.readFile(existing.file, true, true);
    } else {
      doc.metadata.uid = doc.metadata.uid ?? randomUUID();
      doc.metadata.creationTimestamp = doc.metadata.creationTimestamp ?? now(this.#store.clock);
      const ds = (doc.spec ?? {}) as { clusterIP?: string; type?: string };
      if (doc.kind === 'Service' && doc.apiVersion === 'v1' && !ds.clusterIP && ds.type !== 'ExternalName') {
        const ip = this.#store.serverFields.allocate(`${doc.metadata.namespace}/${doc.metadata.name}`);
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
      this.#store.watchDir(dirname(file));
      this.#store.readFile(file, true, true);
    }
    const out = this.#store.entry(key);
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
  #conventionalFile(group: string, kind: string, ns: string | undefined, name: string): string {
    return join(this.#store.dir, ns ?? '_cluster', `${kindStem(group, kind)}.${name}.yaml`);
  }

  /** Brings one object up to date with the disk (its file, or where apply would have put it). */
  #refreshObject(key: string): void {
    const known = this.#store.entry(key);
    const [group, kind, ns, name] = key.split('|') as [string, string, string, string];
    this.#store.readFile(known?.file ?? this.#conventionalFile(group, kind, ns || undefined, name));
  }

  delete(key: string, uid?: string): boolean {
    this.#checkOpen();
    this.#refreshObject(key);
    const e = this.#store.entry(key);
    if (!e) return false;
    if (uid !== undefined && e.object.metadata.uid !== uid) {
      throw new SourceError('ECNET_SOURCE_CONFLICT', `${key.replaceAll('|', ' ')}: not the object seen (uid changed)`);
    }
    this.#replaceDoc(e.file, e.doc, undefined);
    // If another file also defines it, that definition now holds (as it would after a user's edit).
    this.#store.readFile(e.file, true, true);
    return true;
  }

  /** Sets (a string) or removes (null) labels of the object under `key`, nothing else; false if there is none. */
  label(key: string, labels: Record<string, string | null>): boolean {
    this.#checkOpen();
    this.#refreshObject(key);
    const e = this.#store.entry(key);
    if (!e) return false;
    const next: Record<string, string> = { ...(e.object.metadata.labels ?? {}) };
    for (const [k, v] of Object.entries(labels)) {
      if (v === null) delete next[k];
      else next[k] = v;
    }
    const { labels: _old, ...meta } = e.object.metadata;
    this.apply({ ...e.object, metadata: { ...meta, ...(Object.keys(next).length ? { labels: next } : {}) } }, e.object.metadata.uid ? { uid: e.object.metadata.uid } : undefined);
    return true;
  }

  writeStatus(key: string, status: unknown): void {
    this.#checkOpen();
    this.#refreshObject(key);
    const e = this.#store.entry(key);
    if (!e) throw new SourceError('ECNET_SOURCE_NOT_FOUND', `no object ${key.replaceAll('|', ' ')}`);
    const o = e.object;
    this.#store.serverFields.write(serverFieldsFile(o), (cur) => ({ ...cur, status }));
    this.#store.readFile(e.file, true, true);
  }

  async event(note: EventNote & { object: string }): Promise<void> {
    await appendFile(join(this.#store.dir, STATE_DIR, 'events.log'), `${JSON.stringify({ time: now(this.#store.clock), ...note })}\n`);
  }

  #checkOpen(): void {
    if (this.#store.closed) throw new SourceError('ECNET_SOURCE_CLOSED', `local source ${this.#store.dir} is closed`);
  }
}
