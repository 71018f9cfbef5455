// The redirect set: the imported services' ClusterIP:port/proto in ecnet_services, programmed as a diff.
import {
  type Codec,
  type ServiceKey,
  type ServiceValue,
  SVC_F_DISABLED,
  readU32,
  serviceKeyCodec,
  serviceValueCodec,
  writeU32,
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

/** Options of replaceAll. */
export interface ReplaceOptions {
  /**
   * Diff against what the map really holds (one dump of it) instead of what this table last wrote: repairs
   * entries that someone else (an operator's `ecnet bpf service`, another process) wrote or removed.
   */
  verify?: boolean;
}

const BPF_ANY = 0;
const KS = serviceKeyCodec.size;
const VS = serviceValueCodec.size;

/** A key's identity in the shadow: a number for the usual IPv4 TCP/UDP key, else its 20 bytes as latin1 text. */
type KeyId = number | string;

/** One key of the shadow: its id, its value (the two __u32 of struct ecnet_svc_value), and the last replaceAll that listed it. */
interface Slot {
  readonly key: KeyId;
  id: number;
  flags: number;
  seen: number;
}

/** The flags of a slot made for a key the map does not hold yet (no __u32 equals it, so it is always written). */
const UNWRITTEN = -1;

/** What one write changes, and what those entries held before it (for a restore). */
interface Change {
  /** Keys to delete, concatenated, and the values they held. */
  delKeys: Buffer;
  delOld: Buffer;
  delCount: number;
  /** Keys and values to write, concatenated; upOld holds what each key held where upHad[i] is 1. */
  upKeys: Buffer;
  upValues: Buffer;
  upCount: number;
  upOld: Buffer;
  upHad: Uint8Array;
}

/** Lookups and programming of the redirect set (the ecnet_services map). */
export class ServiceTable {
  readonly #map: () => NativeMap;
  /**
   * What this table last wrote to the map (key id → value), so that replaceAll diffs against it and does not
   * dump the map each time: at 10,000 services the dump and its decoding cost far more than a 1% change.
   * Undefined when not known: before the first replaceAll, after any failed write, and on any sign that the
   * map disagrees with it (a delete or an apply finding otherwise). It cannot see writes made behind the
   * table's back, and no cheap kernel call gives a hash map's entry count to compare with, so a caller that
   * must repair those asks for it: replaceAll(entries, { verify: true }) dumps the map, diffs against it and
   * rebuilds the shadow. The agent does so at start, after a failed write and at its periodic resync.
   */
  #shadow: Map<KeyId, Slot> | undefined;
  /** The map the shadow describes (the getter returns one map for the life of a Datapath; if ever another, the shadow is void). */
  #shadowOf: NativeMap | undefined;
  /** Counts replaceAll calls: a slot whose `seen` is not the current one was not listed (removed). */
  #epoch = 0;
  /**
   * Address text → its bytes as a key id part: the IPv4 address as a number, or 16 latin1 characters. A pure
   * function of the text, memoised, so that replaceAll does not parse 10,000 unchanged addresses each time.
   */
  readonly #addresses = new Map<string, number | string>();

  /** `map` returns the services map (and throws once its owner is closed). */
  constructor(map: () => NativeMap) {
    this.#map = map;
  }

  get capacity(): number {
    return this.#map().info().maxEntries;
  }

  /** Redirects `key` (adds or updates). ECNET_MAP_FULL when the map is full. */
  set(key: ServiceKey, value: ServiceValue): void {
    const map = this.#map();
    const k = encodeRedirectable(key);
    const v = serviceValueCodec.encode(value);
    const shadow = this.#known(map);
    try {
      map.update(k, v, BPF_ANY);
    } catch (cause) {
      this.#forget();
      throw mapError(cause, `add service ${key.ip}:${key.port}/${key.protocol}`, this.capacity);
    }
    if (shadow) {
      const id = keyId(k, 0);
      shadow.set(id, slotOf(id, v, 0));
    }
  }

  /** Stops redirecting `key`; false if it was not there. */
  delete(key: ServiceKey): boolean {
    const map = this.#map();
    const k = serviceKeyCodec.encode(key);
    const shadow = this.#known(map);
    let existed: boolean;
    try {
      existed = map.delete(k);
    } catch (cause) {
      this.#forget();
      throw mapError(cause, `delete service ${key.ip}:${key.port}/${key.protocol}`, this.capacity);
    }
    // The shadow thought otherwise: someone else writes the map, so nothing in it is to be trusted.
    if (shadow && shadow.delete(keyId(k, 0)) !== existed) this.#forget();
    return existed;
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
   * part-way restores the previous content before it is thrown. The difference is taken against what this
   * table last wrote, or against a dump of the map when that is not known or `verify` is set.
   */
  replaceAll(entries: Iterable<ServiceEntry>, options?: ReplaceOptions): ReplaceReport {
    const map = this.#map();
    const list = Array.isArray(entries) ? (entries as readonly ServiceEntry[]) : [...entries];
    const n = list.length;
    let shadow = options?.verify === true ? undefined : this.#known(map);
    if (!shadow) {
      shadow = readShadow(map);
      this.#shadow = shadow;
      this.#shadowOf = map;
    }
    const addresses = this.#addresses;
    if (addresses.size > 2 * n + 1024) addresses.clear(); // bounded by what is listed, not by all ever seen
    const epoch = ++this.#epoch;
    const { ups, slots, added } = diffEntries(list, shadow, addresses, epoch);
    // Removed: what the shadow holds that was not listed (no walk when every entry of it was).
    const removed: Slot[] = [];
    if (n - added < shadow.size) {
      shadow.forEach((slot) => {
        if (slot.seen !== epoch) removed.push(slot);
      });
    }
    const capacity = map.info().maxEntries;
    if (shadow.size - removed.length + added > capacity) {
      throw new DatapathError('ECNET_MAP_FULL', `${n} services do not fit in ${MAP_NAMES.services} (capacity ${capacity}); nothing was changed`);
    }
    const change = emptyChange(removed.length, ups.length);
    for (let j = 0; j < removed.length; j++) {
      keyBytes(removed[j]!.key, change.delKeys, j * KS);
      putSlot(change.delOld, j * VS, removed[j]!);
    }
    for (let j = 0; j < ups.length; j++) {
      const e = list[ups[j]!]!;
      const slot = slots[j]!;
      keyBytes(slot.key, change.upKeys, j * KS);
      writeU32(change.upValues, e.id, j * VS);
      writeU32(change.upValues, e.disabled ? SVC_F_DISABLED : 0, j * VS + 4);
      if (slot.flags !== UNWRITTEN) {
        change.upHad[j] = 1;
        putSlot(change.upOld, j * VS, slot);
      }
    }
    this.#write(map, change, `replace ${n} services`, capacity);
    for (const slot of removed) shadow.delete(slot.key);
    for (let j = 0; j < ups.length; j++) {
      const e = list[ups[j]!]!;
      const slot = slots[j]!;
      if (slot.flags === UNWRITTEN) shadow.set(slot.key, slot);
      slot.id = e.id;
      slot.flags = e.disabled ? SVC_F_DISABLED : 0;
    }
    return { added, updated: ups.length - added, removed: removed.length, unchanged: n - ups.length };
  }

  /**
   * Writes a change of the redirect set: `upserts` added or updated, `removes` deleted; the rest of the map is
   * not read (a reconcile of one service at 10,000 costs its own entries, not a dump of the map). The same
   * contract as replaceAll: validated and checked against the capacity before the first write, and a kernel
   * error part-way restores what was there before it is thrown.
   */
  apply(upserts: readonly ServiceEntry[], removes: readonly ServiceKey[]): ReplaceReport {
    const map = this.#map();
    let shadow = this.#known(map);
    const ups = upserts.map((e) => {
      const key = encodeRedirectable(e);
      return { key, id: keyId(key, 0), value: serviceValueCodec.encode(e) };
    });
    const seen = new Set(ups.map((u) => u.id));
    if (seen.size !== ups.length) throw new DatapathError('ECNET_BAD_INPUT', 'a service is listed twice in one change');
    // Each key once (a key listed twice would be deleted twice, and counted twice), and not one written here.
    const gone = new Map<KeyId, Buffer>();
    for (const k of removes) {
      const key = serviceKeyCodec.encode(k);
      const id = keyId(key, 0);
      if (!seen.has(id)) gone.set(id, key);
    }
    // What is there now, read from the map for these keys only: for the count and for a restore. Where it is
    // not what the shadow says, the shadow is wrong, and so no longer used (nor the capacity check on it).
    const held = (id: KeyId, key: Buffer): Buffer | undefined => {
      const v = map.lookup(key);
      const value = v ? Buffer.from(v.subarray(0, VS)) : undefined;
      const slot = shadow?.get(id);
      if (shadow && (slot ? !value || slot.id !== readU32(value, 0) || slot.flags !== readU32(value, 4) : value)) {
        this.#forget();
        shadow = undefined;
      }
      return value;
    };
    const removed = [...gone].flatMap(([id, key]) => {
      const value = held(id, key);
      return value ? [{ id, key, value }] : [];
    });
    const writes = ups.flatMap((u) => {
      const old = held(u.id, u.key);
      return old && old.equals(u.value) ? [] : [{ ...u, old }];
    });
    const added = writes.filter((w) => !w.old).length;
    const capacity = map.info().maxEntries;
    if (shadow && shadow.size - removed.length + added > capacity) {
      throw new DatapathError('ECNET_MAP_FULL', `${added} more services do not fit in ${MAP_NAMES.services} (capacity ${capacity}); nothing was changed`);
    }
    const change = emptyChange(removed.length, writes.length);
    removed.forEach((r, j) => {
      r.key.copy(change.delKeys, j * KS);
      r.value.copy(change.delOld, j * VS);
    });
    writes.forEach((w, j) => {
      w.key.copy(change.upKeys, j * KS);
      w.value.copy(change.upValues, j * VS);
      if (w.old) {
        change.upHad[j] = 1;
        w.old.copy(change.upOld, j * VS);
      }
    });
    this.#write(map, change, `change ${writes.length + removed.length} services`, capacity);
    if (shadow) {
      for (const r of removed) shadow.delete(r.id);
      for (const w of writes) shadow.set(w.id, slotOf(w.id, w.value, 0));
    }
    return { added, updated: writes.length - added, removed: removed.length, unchanged: ups.length - writes.length };
  }

  /** The shadow, if it is known and describes `map`. */
  #known(map: NativeMap): Map<KeyId, Slot> | undefined {
    return this.#shadowOf === map ? this.#shadow : undefined;
  }

  #forget(): void {
    this.#shadow = undefined;
    this.#shadowOf = undefined;
  }

  /** Deletes, then writes; on a kernel error puts back what was there (the shadow is void either way) and throws. */
  #write(map: NativeMap, c: Change, what: string, capacity: number): void {
    try {
      if (c.delCount) map.deleteBatch(c.delKeys, c.delCount);
      if (c.upCount) map.updateBatch(c.upKeys, c.upValues, c.upCount, BPF_ANY);
    } catch (cause) {
      this.#forget();
      const err = mapError(cause, what, capacity);
      try {
        for (let j = 0; j < c.upCount; j++) {
          const key = c.upKeys.subarray(j * KS, (j + 1) * KS);
          if (c.upHad[j]) map.update(key, c.upOld.subarray(j * VS, (j + 1) * VS), BPF_ANY);
          else map.delete(key);
        }
        for (let j = 0; j < c.delCount; j++) map.update(c.delKeys.subarray(j * KS, (j + 1) * KS), c.delOld.subarray(j * VS, (j + 1) * VS), BPF_ANY);
      } catch (restoreCause) {
        throw new DatapathError(
          'ECNET_MAP_UPDATE',
          `${err.message}; restoring the previous services also failed (${(restoreCause as Error).message}): the map may hold a mix of both`,
          { cause: new AggregateError([cause, restoreCause]) },
        );
      }
      throw err;
    }
  }
}

/**
 * One pass over the entries: validates each and looks its key up in the shadow, marking the slot it finds
 * with `epoch`. Returns the entries to write (index, and the slot: the shadow's, or a new one whose flags are
 * UNWRITTEN) and how many keys are new; nothing of the others is encoded into bytes. A function of its own,
 * so that it stays optimised whatever the caller's code does.
 */
function diffEntries(list: readonly ServiceEntry[], shadow: Map<KeyId, Slot>, addresses: Map<string, number | string>, epoch: number) {
  const ups: number[] = [];
  const slots: Slot[] = [];
  const fresh = new Map<KeyId, Slot>(); // keys not in the shadow
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    const port = e.port;
    const value = e.id;
    // What the codecs would accept (tcp, port 1..65535, id a u32, an address parsed before); anything else
    // goes through them, to be refused with their error or to have its address learnt.
    let addr: number | string | undefined;
    if (e.protocol !== 'tcp' || (port | 0) !== port || port < 1 || port > 65535 || value >>> 0 !== value || (addr = addresses.get(e.ip)) === undefined) {
      addr = learn(e, addresses);
    }
    const id = typeof addr === 'number' ? addr * 0x20000 + port * 2 : addr + String.fromCharCode(port >>> 8, port & 0xff, 6, 0);
    const flags = e.disabled ? SVC_F_DISABLED : 0;
    // A new key gets its slot now, so that new and known keys run the same code: a first load into an empty
    // map then optimises what later calls run, rather than leave the known-key path without type feedback
    // (a deoptimisation costing ~10 ms in the first diff that meets one).
    let slot = shadow.get(id) ?? fresh.get(id);
    if (slot === undefined) {
      slot = { key: id, id: value, flags: UNWRITTEN, seen: 0 };
      fresh.set(id, slot);
    }
    if (slot.seen === epoch) throw listedTwice(e);
    slot.seen = epoch;
    if (slot.id !== value || slot.flags !== flags) {
      ups.push(i);
      slots.push(slot);
    }
  }
  return { ups, slots, added: fresh.size };
}

// One scratch key and value for learn(): JS is single-threaded and nothing is kept of them.
const scratchKey = Buffer.alloc(KS);
const scratchValue = Buffer.alloc(VS);

/** An entry through the codecs, which throw what they refuse; its address's part of a key id, memoised. */
function learn(e: ServiceEntry, addresses: Map<string, number | string>): number | string {
  encodeRedirectable(e, scratchKey, 0);
  serviceValueCodec.encode(e, scratchValue, 0);
  const id = keyId(scratchKey, 0);
  const addr = typeof id === 'number' ? Math.floor(id / 0x20000) : id.slice(0, 16);
  addresses.set(e.ip, addr);
  return addr;
}

/** A change of `dels` deletes and `ups` writes, its buffers to be filled. */
function emptyChange(dels: number, ups: number): Change {
  return {
    delKeys: Buffer.allocUnsafe(dels * KS),
    delOld: Buffer.allocUnsafe(dels * VS),
    delCount: dels,
    upKeys: Buffer.allocUnsafe(ups * KS),
    upValues: Buffer.allocUnsafe(ups * VS),
    upCount: ups,
    upOld: Buffer.allocUnsafe(ups * VS),
    upHad: new Uint8Array(ups),
  };
}

/** The map's content as a shadow: one dump. */
function readShadow(map: NativeMap): Map<KeyId, Slot> {
  const { keys, values, count } = map.entries();
  const shadow = new Map<KeyId, Slot>();
  for (let i = 0; i < count; i++) {
    const id = keyId(keys, i * KS);
    shadow.set(id, slotOf(id, values, i * VS));
  }
  return shadow;
}

const slotOf = (key: KeyId, b: Buffer, o: number): Slot => ({ key, id: readU32(b, o), flags: readU32(b, o + 4), seen: 0 });

function putSlot(out: Buffer, o: number, s: Slot): void {
  writeU32(out, s.id, o);
  writeU32(out, s.flags, o + 4);
}

/**
 * The id of the key at `o`. The usual key (IPv4-mapped address, TCP or UDP, zero padding) packs into 49 bits,
 * address << 17 | port << 1 | udp: a number, cheaper to make and to hash than the string of its 20 bytes,
 * which is the id of every other key (IPv6, or odd bytes written by someone else).
 */
function keyId(b: Buffer, o: number): KeyId {
  const proto = b[o + 18]!;
  if (
    (b[o]! | b[o + 1]! | b[o + 2]! | b[o + 3]! | b[o + 4]! | b[o + 5]! | b[o + 6]! | b[o + 7]! | b[o + 8]! | b[o + 9]! | b[o + 19]!) === 0 &&
    b[o + 10] === 0xff &&
    b[o + 11] === 0xff &&
    (proto === 6 || proto === 17)
  ) {
    const ip = b[o + 12]! * 0x1000000 + ((b[o + 13]! << 16) | (b[o + 14]! << 8) | b[o + 15]!);
    return ip * 0x20000 + ((b[o + 16]! << 9) | (b[o + 17]! << 1) | (proto === 17 ? 1 : 0));
  }
  return b.toString('latin1', o, o + KS);
}

/** The key bytes of `id` (the inverse of keyId), written at `o`. */
function keyBytes(id: KeyId, out: Buffer, o: number): void {
  if (typeof id === 'string') {
    out.write(id, o, KS, 'latin1');
    return;
  }
  const low = id % 0x20000;
  for (let i = 0; i < 10; i++) out[o + i] = 0;
  out[o + 10] = 0xff;
  out[o + 11] = 0xff;
  out.writeUInt32BE((id - low) / 0x20000, o + 12);
  out.writeUInt16BE(low >>> 1, o + 16);
  out[o + 18] = low & 1 ? 17 : 6;
  out[o + 19] = 0;
}

function listedTwice(e: ServiceKey): DatapathError {
  return new DatapathError('ECNET_BAD_INPUT', `service ${e.ip}:${e.port}/${e.protocol} is listed twice`);
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
