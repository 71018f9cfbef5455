// The datapath as the rest of ecnet sees it: which services are redirected, where a redirected
// connection was going, and what is loaded. Holds map fds only; programs live on as pinned links.
import { existsSync, readdirSync } from 'node:fs';
import { release } from 'node:os';
import type { Logger } from 'pino';
import {
  type Codec,
  type ConnectionKey,
  type DatapathSettings,
  type OriginalDestination,
  type ServiceKey,
  type ServiceValue,
  type StatName,
  connKeyCodec,
  cookieCodec,
  origDstCodec,
  serviceKeyCodec,
  serviceValueCodec,
  statNames,
  sumPerCpu,
  u32Key,
} from './codecs.js';
import { BpfError, DatapathError } from './errors.js';
import { cgroupPathById, checkRoot } from './host.js';
import {
  type InstallOptions,
  type InstallReport,
  MAP_NAMES,
  type MapRole,
  attachedSettings,
  install,
  pinPaths,
  uninstall,
} from './loader.js';
import { type NativeBinding, type NativeMap, loadNative } from './native.js';

/** Where to pin, where to attach, what to load, and with which settings (the loader's options). */
export type DatapathOptions = InstallOptions;

/** Anything with the four addresses of an accepted connection, such as a net.Socket. */
export interface AcceptedConnection {
  remoteAddress?: string | undefined;
  remotePort?: number | undefined;
  localAddress?: string | undefined;
  localPort?: number | undefined;
}

export interface ServiceEntry extends ServiceKey, ServiceValue {}

export interface ReplaceReport {
  added: number;
  updated: number;
  removed: number;
  unchanged: number;
}

const BPF_ANY = 0;
const mapTypeNames: Record<number, string> = { 1: 'hash', 2: 'array', 5: 'percpu_hash', 6: 'percpu_array', 9: 'lru_hash' };
const attachTypeNames: Record<number, string> = {
  3: 'sock_ops',
  10: 'cgroup/connect4',
  11: 'cgroup/connect6',
  29: 'cgroup/getpeername4',
  30: 'cgroup/getpeername6',
  34: 'cgroup/sock_release',
};

export interface ProgramStatus {
  name: string;
  hook: string;
  pin: string;
  linkId: number;
  progId: number;
  tag: string;
  cgroupId: number;
  /** Path of the cgroup under the cgroup v2 mount, when found. */
  cgroup: string | undefined;
}

export interface MapStatus {
  name: string;
  pin: string;
  id: number;
  type: string;
  keySize: number;
  valueSize: number;
  entries: number;
  capacity: number;
}

export interface DatapathStatus {
  bpffs: string;
  kernel: string;
  libbpf: string;
  settings: DatapathSettings | undefined;
  programs: ProgramStatus[];
  maps: MapStatus[];
  stats: Record<StatName, number>;
}

/** One decoded map entry, for dumps. */
export interface DumpRow {
  key: unknown;
  value: unknown;
}

/** The entries of one map, decoded; `raw` keeps the bytes so a dump can be checked against bpftool. */
export interface MapDump {
  map: string;
  rows: DumpRow[];
  raw: { key: Buffer; value: Buffer }[];
}

/** Lookups and programming of the redirect set (the ecnet_services map). */
export class ServiceTable {
  readonly #dp: Datapath;
  constructor(dp: Datapath) {
    this.#dp = dp;
  }

  get capacity(): number {
    return this.#dp.map('services').info().maxEntries;
  }

  /** Redirects `key` (adds or updates). ECNET_MAP_FULL when the map is full. */
  set(key: ServiceKey, value: ServiceValue): void {
    const k = serviceKeyCodec.encode(key);
    const v = serviceValueCodec.encode(value);
    try {
      this.#dp.map('services').update(k, v, BPF_ANY);
    } catch (cause) {
      throw mapError(cause, `add service ${key.ip}:${key.port}/${key.protocol}`, this.capacity);
    }
  }

  /** Stops redirecting `key`; false if it was not there. */
  delete(key: ServiceKey): boolean {
    return this.#dp.map('services').delete(serviceKeyCodec.encode(key));
  }

  get(key: ServiceKey): ServiceValue | undefined {
    const v = this.#dp.map('services').lookup(serviceKeyCodec.encode(key));
    return v ? serviceValueCodec.decode(v) : undefined;
  }

  list(): ServiceEntry[] {
    return decodeAll(this.#dp.map('services'), serviceKeyCodec, serviceValueCodec).map(([k, v]) => ({ ...k, ...v }));
  }

  /**
   * Makes the map hold exactly `entries`, writing only the difference. All-or-nothing for the caller:
   * every entry is validated and the capacity checked before the first write, and a kernel error
   * part-way restores the previous content before it is thrown.
   */
  replaceAll(entries: Iterable<ServiceEntry>): ReplaceReport {
    const map = this.#dp.map('services');
    const ks = serviceKeyCodec.size;
    const vs = serviceValueCodec.size;
    const list = [...entries];
    // All keys and values encoded into two buffers (one allocation each), validated before any write.
    const keys = Buffer.allocUnsafe(list.length * ks);
    const values = Buffer.allocUnsafe(list.length * vs);
    const desired = new Map<string, { key: Buffer; value: Buffer }>();
    list.forEach((e, i) => {
      const key = serviceKeyCodec.encode(e, keys, i * ks).subarray(i * ks, (i + 1) * ks);
      const id = key.toString('latin1');
      if (desired.has(id)) {
        throw new DatapathError('ECNET_BAD_ADDRESS', `service ${e.ip}:${e.port}/${e.protocol} is listed twice`);
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
      this.#restore(map, removed, upserts);
      throw mapError(cause, `replace ${desired.size} services`, capacity);
    }
    return { added, updated: upserts.length - added, removed: removed.length, unchanged: desired.size - upserts.length };
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

function decodeAll<K, V>(map: NativeMap, kc: Codec<K>, vc: Codec<V>): [K, V][] {
  const { keys, values, count } = map.entries();
  const out: [K, V][] = [];
  for (let i = 0; i < count; i++) out.push([kc.decode(keys, i * kc.size), vc.decode(values, i * vc.size)]);
  return out;
}

function connectionKey(c: AcceptedConnection): ConnectionKey {
  if (!c.remoteAddress || !c.remotePort || !c.localAddress || !c.localPort) {
    throw new DatapathError('ECNET_BAD_ADDRESS', 'the connection has no addresses (already closed?)');
  }
  return { client: { ip: c.remoteAddress, port: c.remotePort }, proxy: { ip: c.localAddress, port: c.localPort } };
}

export class Datapath {
  readonly bpffs: string;
  readonly services: ServiceTable;
  /** What the load did (undefined when the datapath was opened from existing pins). */
  readonly installed: InstallReport | undefined;
  readonly #native: NativeBinding;
  readonly #maps = new Map<MapRole, NativeMap>();
  readonly #logger: Logger | undefined;
  #closed = false;

  private constructor(bpffs: string, installed: InstallReport | undefined, logger: Logger | undefined) {
    this.bpffs = bpffs;
    this.installed = installed;
    this.#logger = logger;
    this.#native = loadNative();
    this.services = new ServiceTable(this);
    try {
      for (const role of Object.keys(MAP_NAMES) as MapRole[]) {
        this.#maps.set(role, this.#native.openPinnedMap(pinPaths(bpffs).map(MAP_NAMES[role])));
      }
    } catch (cause) {
      this.close();
      throw new DatapathError('ECNET_NOT_LOADED', `the datapath at ${bpffs} is incomplete; run \`ecnet bpf load\` again`, { cause });
    }
  }

  /** Loads (or reuses) the programs and maps and attaches them once; then opens the maps. Idempotent. */
  static open(opts: DatapathOptions): Datapath {
    const report = install(opts);
    return new Datapath(opts.bpffs, report, opts.logger);
  }

  /** Opens the maps of an already loaded datapath (the CLI, a proxy that does not own the load). */
  static openPinned(bpffs: string, logger?: Logger): Datapath {
    checkRoot();
    if (!Datapath.isLoaded(bpffs)) {
      throw new DatapathError('ECNET_NOT_LOADED', `no ecnet datapath is loaded at ${bpffs} (run \`ecnet bpf load --proxy IP:PORT\`)`);
    }
    return new Datapath(bpffs, undefined, logger);
  }

  /** Whether pins of a loaded datapath exist under `bpffs`. */
  static isLoaded(bpffs: string): boolean {
    return existsSync(pinPaths(bpffs).map(MAP_NAMES.services));
  }

  /** Detaches all programs and removes all pins under `bpffs`. */
  static uninstall(bpffs: string, logger?: Logger): ReturnType<typeof uninstall> {
    return uninstall(bpffs, logger);
  }

  /** The raw map of a role (src/bpf/ internal use). */
  map(role: MapRole): NativeMap {
    if (this.#closed) throw new DatapathError('ECNET_CLOSED', 'the datapath handle is closed');
    const m = this.#maps.get(role);
    if (!m) throw new DatapathError('ECNET_NOT_LOADED', `map ${MAP_NAMES[role]} is not open`);
    return m;
  }

  /** Where a connection accepted by the proxy was originally going; undefined if it was not redirected. */
  originalDestination(conn: AcceptedConnection): OriginalDestination | undefined {
    const v = this.map('connections').lookup(connKeyCodec.encode(connectionKey(conn)));
    return v ? origDstCodec.decode(v) : undefined;
  }

  /**
   * Like originalDestination, and removes the entry (one atomic syscall): what the proxy calls once per
   * accepted connection, so that the map only holds connections not yet accepted.
   */
  takeOriginalDestination(conn: AcceptedConnection): OriginalDestination | undefined {
    const v = this.map('connections').lookupAndDelete(connKeyCodec.encode(connectionKey(conn)));
    return v ? origDstCodec.decode(v) : undefined;
  }

  /** The summed per-CPU counters of the programs. */
  stats(): Record<StatName, number> {
    const map = this.map('stats');
    const out = {} as Record<StatName, number>;
    statNames.forEach((name, i) => {
      const v = map.lookup(u32Key(i));
      out[name] = v ? Number(sumPerCpu(v)) : 0;
    });
    return out;
  }

  /** Every entry of one map (by pinned name), decoded. */
  dump(mapName: string): MapDump {
    const role = (Object.keys(MAP_NAMES) as MapRole[]).find((r) => MAP_NAMES[r] === mapName);
    if (!role) {
      throw new DatapathError('ECNET_BAD_ADDRESS', `unknown map ${JSON.stringify(mapName)}; maps: ${Object.values(MAP_NAMES).join(', ')}`);
    }
    const map = this.map(role);
    const info = map.info();
    const { keys, values, count } = map.entries();
    const vs = values.length / Math.max(count, 1);
    const raw: { key: Buffer; value: Buffer }[] = [];
    for (let i = 0; i < count; i++) {
      raw.push({ key: keys.subarray(i * info.keySize, (i + 1) * info.keySize), value: values.subarray(i * vs, (i + 1) * vs) });
    }
    const decoders: Record<MapRole, (k: Buffer, v: Buffer) => DumpRow> = {
      services: (k, v) => ({ key: serviceKeyCodec.decode(k), value: serviceValueCodec.decode(v) }),
      sockets: (k, v) => ({ key: { cookie: cookieCodec.decode(k).toString() }, value: origDstCodec.decode(v) }),
      connections: (k, v) => ({ key: connKeyCodec.decode(k), value: origDstCodec.decode(v) }),
      stats: (k, v) => ({ key: { counter: statNames[k.readUInt32LE(0)] ?? k.readUInt32LE(0) }, value: { total: Number(sumPerCpu(v)) } }),
    };
    return { map: mapName, rows: raw.map((r) => decoders[role](r.key, r.value)), raw };
  }

  status(): DatapathStatus {
    const native = this.#native;
    const programs: ProgramStatus[] = [];
    const linksDir = pinPaths(this.bpffs).links;
    let settings: DatapathSettings | undefined;
    for (const name of existsSync(linksDir) ? readdirSync(linksDir).sort() : []) {
      const pin = pinPaths(this.bpffs).link(name);
      const link = native.openPinnedLink(pin);
      try {
        const info = link.info();
        const prog = native.programInfoById(info.progId);
        settings ??= attachedSettings(native, info.progId);
        programs.push({
          name,
          hook: attachTypeNames[info.attachType] ?? `attach-type-${info.attachType}`,
          pin,
          linkId: info.id,
          progId: prog.id,
          tag: prog.tag,
          cgroupId: info.cgroupId,
          cgroup: cgroupPathById(info.cgroupId),
        });
      } finally {
        link.close();
      }
    }
    const maps: MapStatus[] = (Object.keys(MAP_NAMES) as MapRole[]).map((role) => {
      const m = this.map(role);
      const info = m.info();
      return {
        name: MAP_NAMES[role],
        pin: pinPaths(this.bpffs).map(MAP_NAMES[role]),
        id: info.id,
        type: mapTypeNames[info.type] ?? String(info.type),
        keySize: info.keySize,
        valueSize: info.valueSize,
        entries: m.entries().count,
        capacity: info.maxEntries,
      };
    });
    return { bpffs: this.bpffs, kernel: release(), libbpf: native.libbpfVersion(), settings, programs, maps, stats: this.stats() };
  }

  /** Drops this handle's map fds; programs stay attached and maps pinned. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const m of this.#maps.values()) m.close();
    this.#maps.clear();
  }

  /** Same as close(): there is nothing to drain; logs why the handle is being dropped. */
  destroy(err?: Error): void {
    if (err && !this.#closed) this.#logger?.error({ err }, 'datapath handle destroyed');
    this.close();
  }

  /** Closes this handle, then detaches and unpins everything. */
  uninstall(): ReturnType<typeof uninstall> {
    this.close();
    return uninstall(this.bpffs, this.#logger);
  }
}
