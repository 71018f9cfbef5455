// What the local source, playing the API server, owns of each object (uid, creationTimestamp, an allocated
// ClusterIP, status): kept beside the object in .ecnet/status/<kind>.<namespace>.<name>.yaml (kindStem), never in a user's
// file. Separate from the directory store: these files are the source's own, with their own rules.
import { randomUUID } from 'node:crypto';
import { readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import type { Logger } from '../logger.js';
import type { Clock } from '../util/time.js';
import { allocateClusterIP, type Cidr } from './clusterip.js';
import { clone, now, SERVER_FIELDS_DIR, serverFieldsFile, stampOf, writeAtomic } from './local-layout.js';
import type { KubeObject } from './source.js';

/** What the "server" owns of an object, kept beside it. */
export interface ServerFields {
  metadata?: { uid?: string; creationTimestamp?: string };
  spec?: { clusterIP?: string; clusterIPs?: string[] };
  status?: unknown;
}

export interface ServerFieldsStoreOptions {
  /** The cluster directory. */
  dir: string;
  cidr: Cidr;
  clock: Clock;
  log: Logger;
  /** The objects served now (their ClusterIPs are taken). */
  served(): Iterable<KubeObject>;
  /** A file of SERVER_FIELDS_DIR changed on disk (by name): the objects it belongs to are to be served again. */
  changed(name: string): void;
}

const needsClusterIP = (doc: KubeObject, fields: ServerFields): boolean => {
  const spec = (doc.spec ?? {}) as { clusterIP?: string; type?: string };
  return !spec.clusterIP && spec.type !== 'ExternalName' && !fields.spec?.clusterIP;
};

/** The server-owned fields of one cluster directory's objects, in memory and in SERVER_FIELDS_DIR. */
export class ServerFieldsStore {
  readonly #o: ServerFieldsStoreOptions;
  /** file name → its content, with the stat it was read at */
  readonly #files = new Map<string, { value: ServerFields; stamp: string }>();

  constructor(options: ServerFieldsStoreOptions) {
    this.#o = options;
  }

  /** By file name (serverFieldsFile). */
  get(name: string): ServerFields | undefined {
    return this.#files.get(name)?.value;
  }

  /** (Re)reads one file of SERVER_FIELDS_DIR, found by the directory scan or watch. */
  read(path: string): void {
    const name = path.slice(path.lastIndexOf('/') + 1);
    const stamp = stampOf(path);
    const prev = this.#files.get(name);
    if (stamp === undefined) {
      if (prev) {
        this.#files.delete(name);
        this.#o.changed(name);
      }
      return;
    }
    if (prev?.stamp === stamp) return;
    try {
      const value = (parseAllDocuments(readFileSync(path, 'utf8'))[0]?.toJS() ?? {}) as ServerFields;
      this.#files.set(name, { value, stamp });
      this.#o.changed(name);
    } catch (err) {
      this.#o.log.warn({ path, err }, 'unreadable status file ignored');
    }
  }

  write(name: string, update: (cur: ServerFields) => ServerFields): ServerFields {
    const path = join(this.#o.dir, SERVER_FIELDS_DIR, name);
    const cur = this.#files.get(name)?.value ?? {};
    const next = update(cur);
    writeAtomic(path, stringify(next));
    this.#files.set(name, { value: next, stamp: stampOf(path) ?? '' });
    return next;
  }

  /** The object is gone: what the server owned of it goes too, so an object created again later is a new one. */
  forget(name: string): void {
    this.#files.delete(name);
    try {
      unlinkSync(join(this.#o.dir, SERVER_FIELDS_DIR, name));
    } catch {
      // none was written, or another process removed it first
    }
  }

  /** A free ClusterIP of the service range for `namespace/name`. */
  allocate(key: string): string {
    return allocateClusterIP(this.#o.cidr, key, this.#takenIps());
  }

  #takenIps(): Set<string> {
    const taken = new Set<string>();
    for (const o of this.#o.served()) {
      if (o.kind !== 'Service') continue;
      const ip = (o.spec as { clusterIP?: string } | undefined)?.clusterIP;
      if (ip) taken.add(ip);
    }
    for (const s of this.#files.values()) if (s.value.spec?.clusterIP) taken.add(s.value.spec.clusterIP);
    return taken;
  }

  /**
   * The object as served: the document, plus what the server owns of it (a uid, a creationTimestamp and a
   * Service's ClusterIP are allocated and written down first where neither the document nor the file has them).
   */
  serve(doc: KubeObject): KubeObject {
    const ns = doc.metadata.namespace;
    const name = serverFieldsFile(doc);
    let fields = this.get(name) ?? {};
    const needsMeta = !doc.metadata.uid || !doc.metadata.creationTimestamp;
    const needsIp = doc.kind === 'Service' && doc.apiVersion === 'v1' && needsClusterIP(doc, fields);
    if ((needsMeta && !fields.metadata?.uid) || needsIp) {
      fields = this.write(name, (cur) => ({
        ...cur,
        metadata: cur.metadata?.uid ? cur.metadata : { uid: randomUUID(), creationTimestamp: now(this.#o.clock) },
        ...(needsIp && !cur.spec?.clusterIP ? { spec: { clusterIP: this.allocate(`${ns}/${doc.metadata.name}`) } } : {}),
      }));
    }
    const object = clone(doc);
    object.metadata = {
      ...object.metadata,
      uid: doc.metadata.uid ?? fields.metadata?.uid ?? randomUUID(),
      creationTimestamp: doc.metadata.creationTimestamp ?? fields.metadata?.creationTimestamp ?? now(this.#o.clock),
    };
    if (doc.kind === 'Service' && fields.spec?.clusterIP && !(object.spec as { clusterIP?: string } | undefined)?.clusterIP) {
      const ip = fields.spec.clusterIP;
      object.spec = { ...(object.spec as object), clusterIP: ip, clusterIPs: [ip] };
    }
    delete object.status;
    if (fields.status !== undefined) object.status = fields.status;
    return object;
  }
}
