// ClusterIP allocation for the local source, which plays the API server's part. The first choice is a hash of
// the Service's name, so two processes allocating at once for different Services rarely collide, and a Service
// deleted and created again tends to get its old address back. Pure: the caller says which addresses are taken.
import { SourceError } from './source.js';
import { fnv1a } from '../util/hash.js';

export interface Cidr {
  base: number;
  size: number;
  text: string;
}

export function parseCidr(text: string): Cidr {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text.trim());
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const bits = m ? Number(m[5]) : NaN;
  if (!m || octets.some((o) => o > 255) || bits < 8 || bits > 30) {
    throw new SourceError('ECNET_SOURCE_INVALID', `service range ${JSON.stringify(text)} must be an IPv4 CIDR from /8 to /30`);
  }
  const size = 2 ** (32 - bits);
  const addr = octets.reduce((a, o) => a * 256 + o, 0);
  return { base: addr - (addr % size), size, text };
}

/** Whether dotted-quad `ip` is in the range. */
export function cidrContains(cidr: Cidr, ip: string): boolean {
  const n = ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
  return n >= cidr.base && n < cidr.base + cidr.size;
}

const toIp = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

/** A free address of the range for `namespace/name` (never the network, the first host or the broadcast address). */
export function allocateClusterIP(cidr: Cidr, key: string, taken: ReadonlySet<string>): string {
  const usable = cidr.size - 3; // .0, .1 (kept for the API server in Kubernetes) and broadcast
  const start = fnv1a(key) % usable;
  for (let i = 0; i < usable; i++) {
    const ip = toIp(cidr.base + 2 + ((start + i) % usable));
    if (!taken.has(ip)) return ip;
  }
  throw new SourceError('ECNET_SOURCE_INVALID', `service range ${cidr.text} is full`);
}
