// IP addresses and ports: parsed, checked and canonical, and as 16 bytes (IPv4 mapped, ::ffff:a.b.c.d), the
// form the datapath's maps, the connection limits and the endpoint checks all compare. Pure, no I/O.
import { isIPv6 } from 'node:net';
import { EcnetError } from '../errors.js';

/** An address or port that does not parse, or is not one ecnet can use. */
export class AddressError extends EcnetError<'ECNET_BAD_ADDRESS'> {
  constructor(message: string) {
    super('ECNET_BAD_ADDRESS', message);
  }
}

export type Protocol = 'tcp' | 'udp';
export const protocolNumbers: Record<Protocol, number> = { tcp: 6, udp: 17 };

/** A transport address: normalized IP text, port 1..65535. */
export interface Endpoint {
  ip: string;
  port: number;
}

function bad(message: string): AddressError {
  return new AddressError(message);
}

/**
 * Dotted-quad fast path (runs twice per accepted connection in the proxy): parses and writes in one pass,
 * with the rules of net.isIPv4 (0..255, no leading zeros). False, having written nothing, if `ip` is not one.
 */
function writeIPv4(ip: string, out: Buffer, offset: number): boolean {
  const n = ip.length;
  if (n < 7 || n > 15) return false;
  let part = 0;
  let value = 0;
  let digits = 0;
  const octets = [0, 0, 0, 0];
  for (let i = 0; i <= n; i++) {
    const c = i < n ? ip.charCodeAt(i) : 46; // a final '.' closes the last octet
    if (c === 46) {
      if (digits === 0 || part > 3) return false;
      octets[part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 1 && value === 0) return false; // leading zero
      value = value * 10 + (c - 48);
      if (value > 255) return false;
      digits++;
    } else {
      return false;
    }
  }
  if (part !== 4) return false;
  out.fill(0, offset, offset + 10);
  out[offset + 10] = 0xff;
  out[offset + 11] = 0xff;
  for (let i = 0; i < 4; i++) out[offset + 12 + i] = octets[i]!;
  return true;
}

/** Writes `ip` (IPv4 or IPv6 text) as 16 bytes into `out` at `offset`. Throws ECNET_BAD_ADDRESS. */
export function writeAddress(ip: string, out: Buffer, offset: number): void {
  if (writeIPv4(ip, out, offset)) return;
  // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
  if (ip.startsWith('::ffff:') && writeIPv4(ip.slice(7), out, offset)) return;
  // Node reports IPv6 peers with a zone sometimes ("fe80::1%eth0"); the zone is not part of the address.
  const text = ip.includes('%') ? ip.slice(0, ip.indexOf('%')) : ip;
  if (!isIPv6(text)) throw bad(`not an IP address: ${JSON.stringify(ip)}`);
  let head = text;
  let tail = '';
  const gap = text.indexOf('::');
  if (gap >= 0) {
    head = text.slice(0, gap);
    tail = text.slice(gap + 2);
  }
  const words = (s: string): number[] => {
    if (s === '') return [];
    const out: number[] = [];
    for (const part of s.split(':')) {
      if (part.includes('.')) {
        const b = part.split('.').map(Number);
        out.push((b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!);
      } else {
        out.push(parseInt(part, 16));
      }
    }
    return out;
  };
  const h = words(head);
  const t = words(tail);
  const all = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  for (let i = 0; i < 8; i++) out.writeUInt16BE(all[i]!, offset + 2 * i);
}

/** Reads 16 address bytes: IPv4-mapped become dotted IPv4, others RFC 5952 IPv6 text. */
export function readAddress(buf: Buffer, offset: number): string {
  let mapped = buf[offset + 10] === 0xff && buf[offset + 11] === 0xff;
  for (let i = 0; mapped && i < 10; i++) if (buf[offset + i] !== 0) mapped = false;
  if (mapped) return `${buf[offset + 12]}.${buf[offset + 13]}.${buf[offset + 14]}.${buf[offset + 15]}`;
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(buf.readUInt16BE(offset + 2 * i));
  // Longest run (of at least two) of zero words becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]): string => a.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(w);
  return `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
}

/** The 16 bytes of an address (IPv4 as ::ffff:a.b.c.d). Throws ECNET_BAD_ADDRESS. */
export function ipBytes(ip: string): Buffer {
  const b = Buffer.alloc(16);
  writeAddress(ip, b, 0);
  return b;
}

/** Normalizes IP text ("::ffff:10.0.0.1" → "10.0.0.1", "0:0::1" → "::1"). Throws ECNET_BAD_ADDRESS. */
export function normalizeIp(ip: string): string {
  return readAddress(ipBytes(ip), 0);
}

/** A port number 1..65535, else ECNET_BAD_ADDRESS. */
export function checkPort(port: number, what = 'port'): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw bad(`${what} must be an integer in 1..65535, got ${String(port)}`);
  }
  return port;
}

/** Parses "IP:PORT" or "[IPv6]:PORT". Throws ECNET_BAD_ADDRESS with the reason. */
export function parseEndpoint(text: string): Endpoint {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (!m) throw bad(`expected IP:PORT or [IPv6]:PORT, got ${JSON.stringify(text)}`);
  const ip = normalizeIp(m[1]!);
  return { ip, port: checkPort(Number(m[2]), `port of ${text}`) };
}

/** Parses "IP:PORT[/tcp|/udp]" (default tcp). */
export function parseServiceAddress(text: string): Endpoint & { protocol: Protocol } {
  const slash = text.lastIndexOf('/');
  const proto = slash >= 0 ? text.slice(slash + 1).toLowerCase() : 'tcp';
  if (proto !== 'tcp' && proto !== 'udp') {
    throw bad(`protocol must be tcp or udp, got ${JSON.stringify(text.slice(slash + 1))}`);
  }
  return { ...parseEndpoint(slash >= 0 ? text.slice(0, slash) : text), protocol: proto };
}

/** "10.0.0.1:80", "[fd00::1]:80". */
export function formatEndpoint(e: Endpoint): string {
  return e.ip.includes(':') ? `[${e.ip}]:${e.port}` : `${e.ip}:${e.port}`;
}
