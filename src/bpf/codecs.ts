// Typed codecs of the map keys and values. Each mirrors a struct of bpf/lib/ecnet.h, byte for byte;
// test/datapath.test.ts compares every `size` here with the loaded maps and with the addon's sizeof().
import { endianness } from 'node:os';
import {
  type Endpoint,
  type Protocol,
  checkPort,
  protocolNumbers,
  readAddress,
  writeAddress,
  AddressError,
} from '../net/address.js';
import { DatapathError } from './errors.js';

const LE = endianness() === 'LE';
/** A __u32 of a map struct, in the host's byte order. */
export const readU32 = (b: Buffer, o: number): number => (LE ? b.readUInt32LE(o) : b.readUInt32BE(o));
export const writeU32 = (b: Buffer, v: number, o: number): void => {
  if (LE) b.writeUInt32LE(v, o);
  else b.writeUInt32BE(v, o);
};
const readU64 = (b: Buffer, o: number): bigint => (LE ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o));
const writeU64 = (b: Buffer, v: bigint, o: number): void => {
  if (LE) b.writeBigUInt64LE(v, o);
  else b.writeBigUInt64BE(v, o);
};

export interface Codec<T> {
  /** The C struct this mirrors. */
  readonly struct: string;
  readonly size: number;
  encode(value: T, out?: Buffer, offset?: number): Buffer;
  decode(buf: Buffer, offset?: number): T;
}

const protocolNames = new Map<number, Protocol>([
  [6, 'tcp'],
  [17, 'udp'],
]);
function protocolName(n: number): Protocol | `proto-${number}` {
  return protocolNames.get(n) ?? `proto-${n}`;
}

/** A service address: the key of ecnet_services. */
export interface ServiceKey extends Endpoint {
  protocol: Protocol;
}

/** mirrors struct ecnet_svc_key (bpf/lib/ecnet.h) */
export const serviceKeyCodec: Codec<ServiceKey> = {
  struct: 'ecnet_svc_key',
  size: 20,
  encode(k, out = Buffer.alloc(20), o = 0) {
    writeAddress(k.ip, out, o);
    out.writeUInt16BE(checkPort(k.port), o + 16);
    const proto = protocolNumbers[k.protocol];
    if (proto === undefined) throw new AddressError(`unknown protocol ${String(k.protocol)}`);
    out[o + 18] = proto;
    out[o + 19] = 0;
    return out;
  },
  decode(b, o = 0) {
    return { ip: readAddress(b, o), port: b.readUInt16BE(o + 16), protocol: protocolName(b[o + 18]!) as Protocol };
  },
};

export const SVC_F_DISABLED = 1;

/** What the datapath knows of a service. */
export interface ServiceValue {
  /** Chosen by the agent; reaches the proxy with each redirected connection. */
  id: number;
  /** Listed but not redirected. */
  disabled: boolean;
}

/** mirrors struct ecnet_svc_value (bpf/lib/ecnet.h) */
export const serviceValueCodec: Codec<ServiceValue> = {
  struct: 'ecnet_svc_value',
  size: 8,
  encode(v, out = Buffer.alloc(8), o = 0) {
    if (!Number.isInteger(v.id) || v.id < 0 || v.id > 0xffffffff) {
      throw new DatapathError('ECNET_BAD_INPUT', `service id must be an integer in 0..2^32-1, got ${v.id}`);
    }
    writeU32(out, v.id, o);
    writeU32(out, v.disabled ? SVC_F_DISABLED : 0, o + 4);
    return out;
  },
  decode(b, o = 0) {
    return { id: readU32(b, o), disabled: (readU32(b, o + 4) & SVC_F_DISABLED) !== 0 };
  },
};

/** The original destination of a redirected connection. */
export interface OriginalDestination extends ServiceKey {
  serviceId: number;
  /** The client used an AF_INET6 socket. */
  v6Socket: boolean;
}

/** mirrors struct ecnet_origdst (bpf/lib/ecnet.h) */
export const origDstCodec: Codec<OriginalDestination> = {
  struct: 'ecnet_origdst',
  size: 24,
  encode(d, out = Buffer.alloc(24), o = 0) {
    serviceKeyCodec.encode(d, out, o);
    out[o + 19] = d.v6Socket ? 1 : 0;
    writeU32(out, d.serviceId, o + 20);
    return out;
  },
  decode(b, o = 0) {
    return {
      ip: readAddress(b, o),
      port: b.readUInt16BE(o + 16),
      protocol: protocolName(b[o + 18]!) as Protocol,
      v6Socket: (b[o + 19]! & 1) !== 0,
      serviceId: readU32(b, o + 20),
    };
  },
};

/** A redirected connection as the proxy sees it: client = remote end, proxy = local end. */
export interface ConnectionKey {
  client: Endpoint;
  proxy: Endpoint;
}

/** mirrors struct ecnet_conn_key (bpf/lib/ecnet.h) */
export const connKeyCodec: Codec<ConnectionKey> = {
  struct: 'ecnet_conn_key',
  size: 36,
  encode(k, out = Buffer.alloc(36), o = 0) {
    writeAddress(k.client.ip, out, o);
    writeAddress(k.proxy.ip, out, o + 16);
    out.writeUInt16BE(checkPort(k.client.port), o + 32);
    out.writeUInt16BE(checkPort(k.proxy.port), o + 34);
    return out;
  },
  decode(b, o = 0) {
    return {
      client: { ip: readAddress(b, o), port: b.readUInt16BE(o + 32) },
      proxy: { ip: readAddress(b, o + 16), port: b.readUInt16BE(o + 34) },
    };
  },
};

/** What sockops recorded for a connection: where it was going, and when. */
export interface RecordedDestination {
  dst: OriginalDestination;
  /** bpf_ktime_get_ns() when recorded: the kernel's CLOCK_MONOTONIC, in ns. */
  recordedNs: bigint;
}

/** mirrors struct ecnet_conn_dst (bpf/lib/ecnet.h): an ecnet_origdst, then a __u64 timestamp */
export const connDstCodec: Codec<RecordedDestination> & { recordedNs(b: Buffer, offset?: number): bigint } = {
  struct: 'ecnet_conn_dst',
  size: 32,
  encode(v, out = Buffer.alloc(32), o = 0) {
    origDstCodec.encode(v.dst, out, o);
    writeU64(out, v.recordedNs, o + 24);
    return out;
  },
  decode(b, o = 0) {
    return { dst: origDstCodec.decode(b, o), recordedNs: readU64(b, o + 24) };
  },
  /** The timestamp alone, without decoding the addresses (a sweep reads every record). */
  recordedNs(b, o = 0) {
    return readU64(b, o + 24);
  },
};

/** Key of ecnet_sock_dst: the socket cookie (__u64), as a bigint. */
export const cookieCodec: Codec<bigint> = {
  struct: '__u64',
  size: 8,
  encode(c, out = Buffer.alloc(8), o = 0) {
    writeU64(out, c, o);
    return out;
  },
  decode(b, o = 0) {
    return readU64(b, o);
  },
};

const isMapped = (b: Buffer): boolean => b[10] === 0xff && b[11] === 0xff && b.subarray(0, 10).every((x) => x === 0);

/** Load-time settings of the connect programs. */
export interface DatapathSettings {
  /** Where connections to services are sent: the node proxy (IPv4). */
  proxy: Endpoint;
  /** IPv6 address of the proxy (same port); absent: IPv6 services are not redirected. */
  proxyIp6?: string;
  /** Sockets whose SO_MARK has these bits are never redirected (the proxy's own upstreams). */
  proxyMark: number;
}

/** mirrors struct ecnet_config (bpf/lib/ecnet.h), the .rodata of sock_connect.bpf.o */
export const settingsCodec: Codec<DatapathSettings> = {
  struct: 'ecnet_config',
  size: 28,
  encode(s, out = Buffer.alloc(28), o = 0) {
    out.fill(0, o, o + 28);
    if (s.proxyIp6 !== undefined) writeAddress(s.proxyIp6, out, o);
    const v4 = Buffer.alloc(16);
    writeAddress(s.proxy.ip, v4, 0);
    if (!isMapped(v4)) throw new AddressError(`the proxy address must be IPv4, got ${s.proxy.ip}`);
    if (s.proxyIp6 !== undefined && (isMapped(out.subarray(o, o + 16)) || out.subarray(o, o + 16).every((x) => x === 0))) {
      throw new AddressError(`the IPv6 proxy address must be a unicast IPv6 address, got ${s.proxyIp6}`);
    }
    // Mark 0 switches the skip off in connect4/6: the proxy's own upstream connections would loop back to it.
    if (!Number.isInteger(s.proxyMark) || s.proxyMark < 1 || s.proxyMark > 0xffffffff) {
      throw new DatapathError('ECNET_BAD_INPUT', `the proxy mark must be an integer in 1..2^32-1, got ${s.proxyMark}`);
    }
    v4.copy(out, o + 16, 12, 16);
    out.writeUInt16BE(checkPort(s.proxy.port, 'proxy port'), o + 20);
    writeU32(out, s.proxyMark >>> 0, o + 24);
    return out;
  },
  decode(b, o = 0) {
    const v6 = b.subarray(o, o + 16);
    const v4 = Buffer.alloc(16);
    v4[10] = 0xff;
    v4[11] = 0xff;
    b.copy(v4, 12, o + 16, o + 20);
    return {
      proxy: { ip: readAddress(v4, 0), port: b.readUInt16BE(o + 20) },
      ...(v6.every((x) => x === 0) ? {} : { proxyIp6: readAddress(b, o) }),
      proxyMark: readU32(b, o + 24),
    };
  },
};

/** Names of the ecnet_stats counters, in the order of enum ecnet_stat (bpf/lib/ecnet.h). */
export const statNames = [
  'redirected',
  'skipped_mark',
  'skipped_no_v6',
  'sock_dst_failed',
  'conn_recorded',
  'conn_dst_failed',
  'peer_restored',
] as const;
export type StatName = (typeof statNames)[number];

/** Sums one per-CPU __u64 value (as the kernel returns it: one 8-byte slot per possible CPU). */
export function sumPerCpu(buf: Buffer): bigint {
  let total = 0n;
  for (let o = 0; o + 8 <= buf.length; o += 8) total += LE ? buf.readBigUInt64LE(o) : buf.readBigUInt64BE(o);
  return total;
}

/** A u32 array-map key. */
export function u32Key(i: number): Buffer {
  const b = Buffer.alloc(4);
  writeU32(b, i, 0);
  return b;
}
