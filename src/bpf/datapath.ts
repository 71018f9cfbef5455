// The datapath as the rest of ecnet sees it: which services are redirected, where a redirected
// connection was going, and what is loaded. Holds map fds only; programs live on as pinned links.
import { existsSync, readdirSync } from 'node:fs';
import { release } from 'node:os';
import type { Logger } from 'pino';
import {
  type ConnectionKey,
  type DatapathSettings,
  type OriginalDestination,
  type StatName,
  connDstCodec,
  connKeyCodec,
  cookieCodec,
  origDstCodec,
  serviceKeyCodec,
  serviceValueCodec,
  statNames,
  sumPerCpu,
  u32Key,
} from './codecs.js';
import { DatapathError } from './errors.js';
import { ktimeNs } from './ktime.js';
import { ServiceTable } from './services.js';
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
import { type NativeBinding, type NativeMap, loadNative } from '../native/addon.js';
import { defaults } from '../defaults.js';

/** Where to pin, where to attach, what to load, and with which settings (the loader's options). */
export type DatapathOptions = InstallOptions;

/** Anything with the four addresses of an accepted connection, such as a net.Socket. */
export interface AcceptedConnection {
  remoteAddress?: string | undefined;
  remotePort?: number | undefined;
  localAddress?: string | undefined;
  localPort?: number | undefined;
}

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

/** What a sweep of ecnet_conn_dst did. */
export interface SweepResult {
  /** Records older than the bound, deleted. */
  swept: number;
  /** Younger records, left for the proxy. */
  kept: number;
}

// One key buffer for every lookup: JS is single-threaded and the addon copies the key before returning.
const connKey = Buffer.alloc(connKeyCodec.size);

const NS_PER_MS = 1_000_000n;
/** Records made (bpf_ktime_get_ns) before this are older than `maxAgeMs` at `now`. */
const staleBefore = (now: bigint, maxAgeMs: number): bigint => now - BigInt(maxAgeMs) * NS_PER_MS;

/** The connection's key in connKey, or undefined when it has no addresses (reset before it was accepted). */
function connectionKey(c: AcceptedConnection): Buffer | undefined {
  if (!c.remoteAddress || !c.remotePort || !c.localAddress || !c.localPort) return undefined;
  const key: ConnectionKey = { client: { ip: c.remoteAddress, port: c.remotePort }, proxy: { ip: c.localAddress, port: c.localPort } };
  return connKeyCodec.encode(key, connKey, 0);
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
  #connLayoutChecked = false;
  /** Records of ecnet_conn_dst found too old: by the proxy's take (and deleted), and by sweeps. */
  readonly staleRecords = { taken: 0, swept: 0 };

  private constructor(bpffs: string, installed: InstallReport | undefined, logger: Logger | undefined) {
    this.bpffs = bpffs;
    this.installed = installed;
    this.#logger = logger;
    this.#native = loadNative();
    this.services = new ServiceTable(() => this.map('services'));
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

  /** Whether a loaded datapath is pinned under `bpffs`: its maps and at least one attached program. */
  static isLoaded(bpffs: string): boolean {
    const { links, map } = pinPaths(bpffs);
    return existsSync(map(MAP_NAMES.services)) && existsSync(links) && readdirSync(links).length > 0;
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

  /** ecnet_conn_dst, checked once to have this build's value layout (pins of an older build may not). */
  #connections(): NativeMap {
    const m = this.map('connections');
    if (!this.#connLayoutChecked) {
      const { valueSize } = m.info();
      if (valueSize !== connDstCodec.size) {
        throw new DatapathError(
          'ECNET_NOT_LOADED',
          `${MAP_NAMES.connections} at ${this.bpffs} holds ${valueSize}-byte values, this version ${connDstCodec.size}: it was loaded by another version (\`ecnet bpf load\` or the agent replaces it)`,
        );
      }
      this.#connLayoutChecked = true;
    }
    return m;
  }

  /**
   * Where a connection accepted by the proxy was originally going; undefined if it was not redirected, or if its
   * record is older than `maxAgeMs` (left in place: only a take or a sweep deletes).
   */
  originalDestination(conn: AcceptedConnection, maxAgeMs: number = defaults.connRecordMaxAgeMs): OriginalDestination | undefined {
    const key = connectionKey(conn);
    const v = key && this.#connections().lookup(key);
    if (!v) return undefined;
    const r = connDstCodec.decode(v);
    return r.recordedNs < staleBefore(ktimeNs(), maxAgeMs) ? undefined : r.dst;
  }

  /**
   * Like originalDestination, and removes the entry (one atomic syscall): what the proxy calls once per
   * accepted connection, so that the map only holds connections not yet accepted. Undefined also for a
   * connection the client reset before it was accepted (Node then knows no addresses; the sweep removes its
   * record), and for a record older than `maxAgeMs`: one no proxy took, which a later connection on the same
   * 4-tuple must not inherit. That one is deleted too, and counted in `staleRecords.taken`.
   */
  takeOriginalDestination(conn: AcceptedConnection, maxAgeMs: number = defaults.connRecordMaxAgeMs): OriginalDestination | undefined {
    const key = connectionKey(conn);
    const v = key && this.#connections().lookupAndDelete(key);
    if (!v) return undefined;
    const r = connDstCodec.decode(v);
    const now = ktimeNs();
    if (r.recordedNs >= staleBefore(now, maxAgeMs)) return r.dst;
    this.staleRecords.taken++;
    this.#logger?.debug({ client: `${conn.remoteAddress}:${conn.remotePort}`, ageMs: Number((now - r.recordedNs) / NS_PER_MS) }, 'stale original destination ignored');
    return undefined;
  }

  /**
   * Deletes the ecnet_conn_dst records older than `maxAgeMs`: connections no proxy took. One batch read, one
   * batch delete. A record the proxy takes meanwhile is simply not there to delete; one rewritten meanwhile for
   * a new connection on the same 4-tuple (within the milliseconds between the two calls) would be deleted too.
   */
  sweepConnections(maxAgeMs: number = defaults.connRecordMaxAgeMs): SweepResult {
    const map = this.#connections();
    const { keys, values, count } = map.entries();
    // Now is read after the entries: a record made during the read looks younger, never older.
    const cutoff = staleBefore(ktimeNs(), maxAgeMs);
    const ks = connKeyCodec.size;
    const vs = connDstCodec.size;
    const stale: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      if (connDstCodec.recordedNs(values, i * vs) < cutoff) stale.push(keys.subarray(i * ks, (i + 1) * ks));
    }
    const swept = stale.length ? map.deleteBatch(Buffer.concat(stale, stale.length * ks), stale.length) : 0;
    this.staleRecords.swept += swept;
    return { swept, kept: count - stale.length };
  }

  /** Each map's entries and capacity (a dump of each: for a scrape every few seconds, not a hot path). */
  fill(): { map: string; entries: number; capacity: number }[] {
    return (Object.keys(MAP_NAMES) as MapRole[]).map((role) => {
      const m = this.map(role);
      return { map: MAP_NAMES[role], entries: m.entries().count, capacity: m.info().maxEntries };
    });
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
      throw new DatapathError('ECNET_NOT_FOUND', `unknown map ${JSON.stringify(mapName)}; maps: ${Object.values(MAP_NAMES).join(', ')}`);
    }
    const map = this.map(role);
    const info = map.info();
    const { keys, values, count } = map.entries();
    const vs = values.length / Math.max(count, 1);
    const raw: { key: Buffer; value: Buffer }[] = [];
    for (let i = 0; i < count; i++) {
      raw.push({ key: keys.subarray(i * info.keySize, (i + 1) * info.keySize), value: values.subarray(i * vs, (i + 1) * vs) });
    }
    const now = role === 'connections' ? (this.#connections(), ktimeNs()) : 0n;
    const decoders: Record<MapRole, (k: Buffer, v: Buffer) => DumpRow> = {
      services: (k, v) => ({ key: serviceKeyCodec.decode(k), value: serviceValueCodec.decode(v) }),
      sockets: (k, v) => ({ key: { cookie: cookieCodec.decode(k).toString() }, value: origDstCodec.decode(v) }),
      connections: (k, v) => {
        const { dst, recordedNs } = connDstCodec.decode(v);
        return { key: connKeyCodec.decode(k), value: { dst, recordedNs, ageMs: Math.round(Number((now - recordedNs) / 100_000n)) / 10 } };
      },
      stats: (k, v) => ({ key: { counter: statNames[k.readUInt32LE(0)] ?? k.readUInt32LE(0) }, value: { total: Number(sumPerCpu(v)) } }),
    };
    return { map: mapName, rows: raw.map((r) => decoders[role](r.key, r.value)), raw };
  }

  status(): DatapathStatus {
    const native = this.#native;
    const programs: ProgramStatus[] = [];
    const linksDir = pinPaths(this.bpffs).links;
    let settings: DatapathSettings | undefined;
    const cgroups = new Map<number, string | undefined>(); // one walk of the cgroup tree per id
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
          cgroup: cgroups.has(info.cgroupId) ? cgroups.get(info.cgroupId) : cgroups.set(info.cgroupId, cgroupPathById(info.cgroupId)).get(info.cgroupId),
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
