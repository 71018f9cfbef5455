// The redirect set: the imported services' ClusterIP:port/proto in ecnet_services, programmed as a diff.
import {
  type Codec,
  type ServiceKey,
  type ServiceValue,
  serviceKeyCodec,
  serviceValueCodec,
} from './codecs.js';
import { BpfError } from '../native/errors.js';
import { DatapathError } from './errors.js';
import { MAP_NAMES } from './loader.js';
import type { NativeMap } from '../native/addon.js';

export interface ServiceEntry extends ServiceKey, ServiceValue {}

export interface ReplaceReport {
  added: number;
  updated: number;
  removed: number;
  unchanged: number;
}

const BPF_ANY = 0;

/** Lookups and programming of the redirect set (the ecnet_services map). */
export class ServiceTable {
  readonly #map: () => NativeMap;
  /** Entries in the map as of the last replaceAll and the applies since (undefined: not known). */
  #count: number | undefined;
  /** `map` returns the services map (and throws once its owner is closed). */
  constructor(map: () => NativeMap) {
    this.#map = map;
  }

  get capacity(): number {
    return this.#map().info().maxEntries;
  }

  /** Redirects `key` (adds or updates). ECNET_MAP_FULL when the map is full. */
  set(key: ServiceKey, value: ServiceValue): void {
    const k = encodeRedirectable(key);
    const v = serviceValueCodec.encode(value);
    this.#count = undefined;
    try {
      this.#map().update(k, v, BPF_ANY);
    } catch (cause) {
      throw mapError(cause, `add service ${key.ip}:${key.port}/${key.protocol}`, this.capacity);
    }
  }

  /** Stops redirecting `key`; false if it was not there. */
  delete(key: ServiceKey): boolean {
    this.#count = undefined;
    return this.#map().delete(serviceKeyCodec.encode(key));
  }

  get(key: ServiceKey): ServiceValue | undefined {
    const v = this.#map().lookup(serviceKeyCodec.encode(key));
    return v ? serviceValueCodec.decode(v) : undefined;
  }

  list(): ServiceEntry[] {
    return decodeAll(this.#map(), serviceKeyCodec, serviceValueCodec).map(([k, v]) => ({ ...k, ...v }));
  }

  /**
   * Makes the map hold exactly `entries`, writing only the difference. All-or-nothing for the caller:
   * every entry is validated and the capacity checked before the first write, and a kernel error
   * part-way restores the previous content before it is thrown.
   */
  replaceAll(entries: Iterable<ServiceEntry>): ReplaceReport {
    const map = this.#map();
    const ks = serviceKeyCodec.size;
    const vs = serviceValueCodec.size;
    const list = [...entries];
    // All keys and values encoded into two buffers (one allocation each), validated before any write.
    const keys = Buffer.allocUnsafe(list.length * ks);
    const values = Buffer.allocUnsafe(list.length * vs);
    const desired = new Map<string, { key: Buffer; value: Buffer }>();
    list.forEach((e, i) => {
      const key = encodeRedirectable(e, keys, i * ks).subarray(i * ks, (i + 1) * ks);
      const id = key.toString('latin1');
      if (desired.has(id)) {
        throw new DatapathError('ECNET_BAD_INPUT', `service ${e.ip}:${e.port}/${e.protocol} is listed twice`);
      }
      desired.set(id, { key, value: serviceValueCodec.encode(e, values, i * vs).subarray(i * vs, (i + 1) * vs) });
    });
    const cur = map.entries();
    const current = new Map<string, { key: Buffer; value: Buffer }>();
    for (let i = 0; i < cur.count; i++) {
      const key = cur.keys.subarray(i * ks, (i + 1) * ks);
      current.set(key.toString('latin1'), { key, value: cur.values.subarray(i * vs, (i + 1) * vs) });
    }
    const removed = [...current].filter(([id]) => !desired.has(id)).map(([, e]) => e);
    const upserts: { key: Buffer; value: Buffer; old: Buffer | undefined }[] = [];
    for (const [id, e] of desired) {
      const old = current.get(id)?.value;
      if (!old || !old.equals(e.value)) upserts.push({ ...e, old });
    }
    const added = upserts.filter((u) => !u.old).length;
    const capacity = map.info().maxEntries;
    if (current.size - removed.length + added > capacity) {
      throw new DatapathError(
        'ECNET_MAP_FULL',
        `${desired.size} services do not fit in ${MAP_NAMES.services} (capacity ${capacity}); nothing was changed`,
      );
    }
    try {
      if (removed.length) map.deleteBatch(Buffer.concat(removed.map((r) => r.key)), removed.length);
      if (upserts.length) {
        map.updateBatch(
          Buffer.concat(upserts.map((u) => u.key)),
          Buffer.concat(upserts.map((u) => u.value)),
          upserts.length,
          BPF_ANY,
        );
      }
    } catch (cause) {
      this.#count = undefined;
      const err = mapError(cause, `replace ${desired.size} services`, capacity);
      try {
        this.#restore(map, removed, upserts);
      } catch (restoreCause) {
        throw new DatapathError(
          'ECNET_MAP_UPDATE',
          `${err.message}; restoring the previous services also failed (${(restoreCause as Error).message}): the map may hold a mix of both`,
          { cause: new AggregateError([cause, restoreCause]) },
        );
      }
      throw err;
    }
    this.#count = desired.size;
    return { added, updated: upserts.length - added, removed: removed.length, unchanged: desired.size - upserts.length };
  }

  /**
   * Writes a change of the redirect set: `upserts` added or updated, `removes` deleted; the rest of the map is
   * not read (a reconcile of one service at 10,000 costs its own entries, not a dump of the map). The same
   * contract as replaceAll: validated and checked against the capacity before the first write, and a kernel
   * error part-way restores what was there before it is thrown.
   */
  apply(upserts: readonly ServiceEntry[], removes: readonly ServiceKey[]): ReplaceReport {
    const map = this.#map();
    const ks = serviceKeyCodec.size;
    const vs = serviceValueCodec.size;
    const ups = upserts.map((e) => ({ key: encodeRedirectable(e), value: serviceValueCodec.encode(e) }));
    const seen = new Set(ups.map((u) => u.key.toString('latin1')));
    if (seen.size !== ups.length) throw new DatapathError('ECNET_BAD_INPUT', 'a service is listed twice in one change');
    // Each key once (a key listed twice would be deleted twice, and counted twice).
    const gone = [...new Map(removes.map((k) => serviceKeyCodec.encode(k)).map((k) => [k.toString('latin1'), k] as const)).entries()].filter(([id]) => !seen.has(id)).map(([, k]) => k);
    // What is there now, for the count and for a restore.
    const removed = gone.flatMap((key) => {
      const value = map.lookup(key);
      return value ? [{ key, value: Buffer.from(value.subarray(0, vs)) }] : [];
    });
    const writes = ups.flatMap((u) => {
      const old = map.lookup(u.key)?.subarray(0, vs);
      return old && old.equals(u.value) ? [] : [{ ...u, old: old ? Buffer.from(old) : undefined }];
    });
    const added = writes.filter((w) => !w.old).length;
    const capacity = map.info().maxEntries;
    const count = this.#count;
    if (count !== undefined && count - removed.length + added > capacity) {
      throw new DatapathError('ECNET_MAP_FULL', `${added} more services do not fit in ${MAP_NAMES.services} (capacity ${capacity}); nothing was changed`);
    }
    try {
      if (removed.length) map.deleteBatch(Buffer.concat(removed.map((r) => r.key), removed.length * ks), removed.length);
      if (writes.length) {
        map.updateBatch(Buffer.concat(writes.map((w) => w.key), writes.length * ks), Buffer.concat(writes.map((w) => w.value), writes.length * vs), writes.length, BPF_ANY);
      }
    } catch (cause) {
      this.#count = undefined;
      const err = mapError(cause, `change ${writes.length + removed.length} services`, capacity);
      try {
        this.#restore(map, removed, writes);
      } catch (restoreCause) {
        throw new DatapathError('ECNET_MAP_UPDATE', `${err.message}; restoring the previous services also failed (${(restoreCause as Error).message}): the map may hold a mix of both`, {
          cause: new AggregateError([cause, restoreCause]),
        });
      }
      throw err;
    }
    if (count !== undefined) this.#count = count - removed.length + added;
    return { added, updated: writes.length - added, removed: removed.length, unchanged: ups.length - writes.length };
  }

  #restore(
    map: NativeMap,
    removed: { key: Buffer; value: Buffer }[],
    upserts: { key: Buffer; old: Buffer | undefined }[],
  ): void {
    for (const u of upserts) {
      if (u.old) map.update(u.key, u.old, BPF_ANY);
      else map.delete(u.key);
    }
    for (const r of removed) map.update(r.key, r.value, BPF_ANY);
  }
}

function mapError(cause: unknown, what: string, capacity: number): DatapathError {
  if (cause instanceof BpfError && cause.errnoName === 'E2BIG') {
    return new DatapathError('ECNET_MAP_FULL', `${what}: ${MAP_NAMES.services} is full (capacity ${capacity})`, { cause });
  }
  if (cause instanceof DatapathError) return cause;
  return new DatapathError('ECNET_MAP_UPDATE', `${what} failed: ${(cause as Error).message}`, { cause });
}

/** Encodes a service key the programs can redirect; UDP is refused until sendmsg/recvmsg hooks exist. */
function encodeRedirectable(key: ServiceKey, out?: Buffer, offset?: number): Buffer {
  if (key.protocol === 'udp') {
    throw new DatapathError('ECNET_UNSUPPORTED', `${key.ip}:${key.port}/udp: UDP services are not redirected yet (TCP only)`);
  }
  return serviceKeyCodec.encode(key, out, offset);
}

function decodeAll<K, V>(map: NativeMap, kc: Codec<K>, vc: Codec<V>): [K, V][] {
  const { keys, values, count } = map.entries();
  const out: [K, V][] = [];
  for (let i = 0; i < count; i++) out.push([kc.decode(keys, i * kc.size), vc.decode(values, i * vc.size)]);
  return out;
}

