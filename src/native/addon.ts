// The raw surface of the native addon (native/), declared once: the BPF objects and maps (src/bpf/) and the
// kernel splicer (kernel-splice.ts) are its only users. src/native/ is the one native boundary: this addon and
// the plain libc calls made through ffi-rs (libc.ts, sockets.ts).
// Every failing call throws a BpfError (see errors.ts): { code: 'ECNET_BPF', errno, errnoName, op }.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../paths.js';
import { BpfError } from './errors.js';

/** One program of an opened object (owned by its NativeObject). */
export interface NativeProgramInfo {
  name: string;
  /** ELF section, e.g. "cgroup/connect4". */
  section: string;
  /** Kernel attach type name as libbpf spells it, e.g. "cgroup_inet4_connect". */
  attachType: string;
}

/** A libbpf bpf_object: open, adjust, load, attach; closing frees programs and the object's map fds. */
export interface NativeObject {
  /** Programs in the object (valid before and after load). */
  programs(): NativeProgramInfo[];
  /** Maps in the object: internal ones (".rodata") included. */
  maps(): { name: string; keySize: number; valueSize: number; maxEntries: number; type: number }[];
  /** Before load: capacity of a map. */
  setMaxEntries(map: string, maxEntries: number): void;
  /** Before load: initial value of a map, e.g. ".rodata" (size must match exactly). */
  setInitialValue(map: string, value: Buffer): void;
  /** Load and verify every program, creating or reusing pinned maps. Throws with the verifier log in `message`. */
  load(): void;
  /** After load: kernel info of a program. */
  programInfo(name: string): NativeProgInfo;
  /** After load: attach a program to a cgroup (directory fd opened by the addon) as a bpf_link. */
  attachCgroup(program: string, cgroupPath: string): NativeLink;
  /** After load: atomically replace the program of an existing link with this object's program. */
  updateLink(link: NativeLink, program: string): void;
  /** Frees the object (idempotent). Pinned maps and pinned links stay in the kernel. */
  close(): void;
}

export interface NativeProgInfo {
  id: number;
  name: string;
  /** 8-byte program tag, hex: equal tags mean equal instructions. */
  tag: string;
  type: number;
  mapIds: number[];
}

export interface NativeLinkInfo {
  id: number;
  progId: number;
  type: number;
  /** For cgroup links. */
  cgroupId: number;
  attachType: number;
}

/** A bpf_link (owns its fd / struct bpf_link). */
export interface NativeLink {
  info(): NativeLinkInfo;
  pin(path: string): void;
  unpin(): void;
  /** Detaches the program from its hook now (BPF_LINK_DETACH), even if pinned elsewhere. */
  detach(): void;
  /** Frees the handle (idempotent). A pinned link stays attached. */
  close(): void;
}

export interface NativeMapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** A map fd (owned). Keys and values are raw bytes of the structs in bpf/lib/ecnet.h. */
export interface NativeMap {
  info(): NativeMapInfo;
  /** Per-CPU maps return valueSize rounded up to 8, times the number of possible CPUs. */
  lookup(key: Buffer): Buffer | null;
  update(key: Buffer, value: Buffer, flags: number): void;
  /** false when the key was absent. */
  delete(key: Buffer): boolean;
  /** Lookup + delete, atomic where the kernel has it (hash maps since Linux 5.14), else in two steps; null when absent. */
  lookupAndDelete(key: Buffer): Buffer | null;
  /** Every entry; uses BPF_MAP_LOOKUP_BATCH where the kernel has it, get_next_key otherwise. */
  entries(): { keys: Buffer; values: Buffer; count: number };
  /** keys/values are `count` fixed-size records concatenated. Returns how many were applied before an error (throws on error with `applied` set). */
  updateBatch(keys: Buffer, values: Buffer, count: number, flags: number): number;
  deleteBatch(keys: Buffer, count: number): number;
  /** The open descriptor (still owned by the map): for the front, which keeps a dup. */
  fd(): number;
  close(): void;
}

/**
 * Moves the bytes of TCP socket pairs both ways in the kernel (splice through pipes) on a thread of its own.
 * `add` dups both descriptors (the caller closes its own right after) and returns the pair's id; every pair
 * ends exactly once, reported to the constructor's callback: errno 0 when both directions reached their end,
 * ETIMEDOUT after `idleMs` without a byte, ECANCELED on abort() or close(), else the socket error.
 */
export interface NativeSplicer {
  /**
   * With `seal`, fdB is a tunnel carrying sealed records (src/tunnel/records.ts) that the thread seals and opens.
   * With `tag` (an integer 0..2^20; undefined, null or -1: none), every byte the pair moves is added to the tag's
   * `up` (client → upstream) or `down` counter as it moves; `swapped`: A is the upstream, B the client.
   */
  add(fdA: number, fdB: number, idleMs: number, pendingAtoB?: Buffer | null, pendingBtoA?: Buffer | null, seal?: { send: Buffer; recv: Buffer; server: boolean; rekeyRecords?: number; aEnded?: boolean } | null, tag?: number | null, swapped?: boolean): number;
  abort(id: number): void;
  stats(): { pairs: number; pipes: number };
  /**
   * Every tag's counters, cumulative since the splicer opened: TAG_STATS_STRIDE numbers per tag, tag by tag, for
   * tags 0 up to the highest one seen (given to add, adopt or the front's table): [up, down, opened, failed,
   * setupSumUs, then the SETUP_BUCKETS_US buckets and +Inf] (see kernel-splice.ts). `up`/`down` are bytes of every
   * tagged pair, live; the rest only the front's pairs: `opened` spliced, `failed` attempts (each endpoint),
   * and the setup time from accept to spliced pair in µs (bucket counts not cumulative, and their sum).
   */
  tagStats(): Float64Array;
  /** Zeroes these tags' counters (not their active gauge): JavaScript reuses tags it freed. */
  tagReset(tags: number[]): void;
  /** Whether pairs hold the event loop open (as the sockets they came from did). */
  keepAlive(on: boolean): void;
  /** Ends every pair (ECANCELED) and stops the thread; idempotent. */
  close(): void;
  /** Takes every pair off the thread, unreported: their state and descriptors (still owned by the splicer). */
  detach(): NativeDetachedPair[];
  /** Closes detached pairs' descriptors (another process holds its own copies now). */
  release(ids: number[]): void;
  /** Puts detached pairs back on the thread (a hand-over that did not happen). */
  restore(ids: number[]): void;
  /**
   * Takes a pair another process detached; dups `fds` (the caller closes its own); returns its id here. With
   * `parked`, it is not pumped until start(ids); drop(ids) lets it go (its sockets stay the other process's).
   * `tag` is this process's (state.tag was the other's and is not used); `swapped` defaults to state.swapped.
   */
  adopt(state: NativePairState, fds: number[], parked?: boolean, tag?: number | null, swapped?: boolean): number;
  start(ids: number[]): void;
  drop(ids: number[]): void;
  /**
   * The front (native/src/front.h): accepts on `listeners` (dup'd) on the splicer's thread from now on. Its pairs
   * are tagged with their choice's report index. `failures` (gateway mode only): each endpoint that failed to
   * connect, also when a later one answered (at most 1,024 a batch; frontStats().failuresDropped counts more).
   */
  frontStart(options: NativeFrontOptions, report: NativeFrontReport): void;
  /** Updates the front's table; with `all`, the entries are the whole table. A null `choices` removes a key. */
  frontRoutes(entries: NativeFrontEntry[], all: boolean): void;
  /** Stops (true) or resumes (false) accepting; with `close`, stops for good and closes the listening sockets. */
  frontPause(stop: boolean, close?: boolean): void;
  /** Frees the slot of a connection the front handed to JavaScript, once it is closed. */
  frontRelease(source: Buffer): void;
  frontStats(): NativeFrontStats;
}

export interface NativeFrontOptions {
  /** Gateway mode: CONNECT heads are peeked and served from the table; else proxy mode (the connection map). */
  gateway?: boolean;
  listeners: number[];
  /** Proxy mode: the datapath's connection map's descriptor (dup'd) and its value size. */
  connMap?: number;
  connValueSize?: number;
  /** Proxy mode: an entry recorded longer ago than this is not used (needs a timestamp in the value). */
  staleMs?: number;
  /** This process's CLOCK_MONOTONIC minus bpf_ktime_get_ns()'s, in ns (non-zero in a time namespace). */
  clockOffsetNs?: number;
  /** SO_MARK of upstream connections. */
  mark?: number;
  idleMs?: number;
  /** A gateway's answer to a CONNECT, from the connect on. */
  setupMs?: number;
  /** A direct connection (a local endpoint, a gateway's endpoint). */
  connectMs?: number;
  /** Gateway mode: a request head. */
  headerMs?: number;
  maxTotal?: number;
  maxPerSource?: number;
}

/** One batch from the front: connections handed to JavaScript, successes per report index, endpoint failures. */
export type NativeFrontReport = (handed: NativeFrontHanded[], successes: [number, number][], failures: NativeEndpointFailure[]) => void;

/** Gateway mode: an endpoint connect that failed in the front: [report index, ip, port, errno]. */
export type NativeEndpointFailure = [report: number, ip: string, port: number, errno: number];

export interface NativeFrontChoice {
  /**
   * Index (0..2^20) reported with successes and failures, and the tag of the pairs spliced with this choice
   * (JavaScript's per service and cluster; a local choice may have one too); -1: none.
   */
  report: number;
  weight: number;
  addrs: { ip: string; port: number }[];
  /** Sent first; then a 200 answer is awaited (a gateway's CONNECT). */
  head?: Buffer;
}

export interface NativeFrontEntry {
  /** Proxy: the 16-byte address (IPv4-mapped) and the port (big-endian); gateway: the CONNECT authority. */
  key: Buffer | string;
  choices: NativeFrontChoice[] | null;
}

/** A connection the front gives to JavaScript, which owns `fd` from then on. */
export interface NativeFrontHanded {
  fd: number;
  source: Buffer;
  /** Proxy: the connection map's value (ecnet_origdst). */
  destination?: Buffer;
  /** The choice that failed here (its report index), with the errno or the gateway's status. */
  failedReport?: number;
  errno?: number;
  status?: number;
  /** Milliseconds since the front accepted it: time budgets (a request head's) go on from there. */
  ageMs: number;
}

export interface NativeFrontStats {
  accepted: number;
  notRedirected: number;
  limited: number;
  spliced: number;
  handed: number;
  failures: number;
  /** Gateway: endpoint failures not reported (a batch held its 1,024 already). */
  failuresDropped: number;
  setups: number;
  open: number;
}

/** A pair's state between two processes (JSON-able apart from the Buffers). */
export interface NativePairState {
  idleMs: number;
  /** detach(): the pair's tag in the detaching process (-1: none): the adopting one translates it. */
  tag?: number;
  /** A is the upstream, B the client. */
  swapped?: boolean;
  dirs: NativeDirState[];
}
export interface NativeDirState {
  mode: 0 | 1 | 2;
  pending: Buffer;
  eof: boolean;
  shut: boolean;
  bytes: number;
  /** Bytes in the direction's pipe, whose two descriptors follow the pair's two sockets in `fds`. */
  inPipe: number;
  secret?: Buffer;
  seq?: number;
  rekey?: number;
  records?: Buffer;
  plain?: Buffer;
  opened?: number;
  openedSent?: number;
  held?: boolean;
  releases?: boolean;
  ended?: boolean;
  recordsOpened?: number;
}
export interface NativeDetachedPair extends NativePairState {
  id: number;
  /** The two sockets, then the pipes of the directions that have bytes in them. */
  fds: number[];
}

/** Descriptor passing over a unix stream socket (native/src/fdpass.cc); every call blocks at most its timeout. */
export interface NativeHandover {
  listen(path: string): number;
  /** A waiting connection's descriptor, or -1. */
  accept(fd: number): number;
  connect(path: string): number;
  send(fd: number, bytes: Buffer, fds: number[], timeoutMs: number): void;
  /** The next message, or null at the end of the stream. Descriptors received are the caller's to close. */
  recv(fd: number, timeoutMs: number): { bytes: Buffer; fds: number[] } | null;
  /** The uid of the process at the other end (SO_PEERCRED). */
  peerUid(fd: number): number;
  /** A duplicate of `fd` (close-on-exec), owned by the caller. */
  dup(fd: number): number;
  /** Whether a message (or the end) is there to read within `timeoutMs` (0: now). */
  readable(fd: number, timeoutMs: number): boolean;
  close(fd: number): void;
}

export type SpliceDoneCallback = (id: number, errno: number, aToB: number, bToA: number) => void;

export interface NativeBinding {
  Splicer: new (onDone: SpliceDoneCallback) => NativeSplicer;
  handover: NativeHandover;
  openObject(path: string, pinRoot: string): NativeObject;
  openPinnedMap(path: string): NativeMap;
  openMapById(id: number): NativeMap;
  openPinnedLink(path: string): NativeLink;
  programInfoById(id: number): NativeProgInfo;
  /** sizeof() of the structs in bpf/lib/ecnet.h as the C++ compiler sees them. */
  structSizes(): Record<'svc_key' | 'svc_value' | 'origdst' | 'conn_key' | 'conn_dst' | 'config', number>;
  /** Number of possible CPUs (libbpf_num_possible_cpus). */
  possibleCpus(): number;
  libbpfVersion(): string;
  /** Registers the class the addon throws: `new ErrorClass(message, { op, errno })`. Called once by loadNative. */
  setErrorClass(ctor: new (message: string, details: { op: string; errno: number }) => Error): void;
}

let cached: NativeBinding | undefined;

/** Loads build/native/ecnet_native.node (built by `npm run build:native`). */
export function loadNative(): NativeBinding {
  if (cached) return cached;
  const file = join(packageRoot, 'build', 'native', 'Release', 'ecnet_native.node');
  if (!existsSync(file)) {
    throw Object.assign(new Error(`native addon not built: ${file} is missing (run npm run build)`), {
      code: 'ECNET_NATIVE_MISSING',
    });
  }
  const binding = createRequire(import.meta.url)(file) as NativeBinding;
  binding.setErrorClass(BpfError);
  cached = binding;
  return binding;
}
