// Which endpoint addresses ecnet dials. An EndpointSlice is written by whoever may write one in its namespace
// (or by a member cluster, through an export): its addresses must not open a way to what only a node reaches.
import { isIP, isIPv4 } from 'node:net';
import { ipBytes, readAddress } from '../net/address.js';

/**
 * Whether an EndpointSlice address may be dialled: an IP address (never a name, which would be resolved), and
 * not loopback, unspecified or link-local (a metadata service), nor one of `denied` (canonical addresses, the
 * dialling node's own):
 * an endpoint anyone can write must not open a way to what only the node itself should reach.
 */
export function dialable(ip: unknown, denied: ReadonlySet<string> = new Set()): ip is string {
  // A zone (fe80::1%eth0) or anything but a plain address: no. Then the bytes and their canonical text, so that
  // no spelling of an address (::ffff:7f00:1, 0:0:0:0:0:0:0:1) slips past the checks below.
  if (typeof ip !== 'string' || ip.includes('%') || !isIP(ip)) return false;
  let b: Buffer;
  try {
    b = ipBytes(ip);
  } catch {
    return false;
  }
  const canonical = readAddress(b, 0);
  if (denied.has(canonical)) return false;
  // IPv4: not loopback (127/8), "this network" (0/8), link-local (169.254/16), multicast (224/4), reserved and
  // broadcast (240/4).
  if (isIPv4(canonical)) return b[12] !== 127 && b[12] !== 0 && !(b[12] === 169 && b[13] === 254) && b[12]! < 224;
  const w0 = b.readUInt16BE(0);
  if (b.subarray(0, 12).every((x) => x === 0)) return false; // ::/96: ::, ::1, and the old IPv4-compatible forms
  if (w0 === 0x64 && b.readUInt16BE(2) === 0xff9b) return false; // NAT64: any IPv4 address, through the node's NAT64
  if ((w0 & 0xffc0) === 0xfe80 || (w0 & 0xff00) === 0xff00) return false; // link-local, multicast
  return canonical !== 'fd00:ec2::254'; // a cloud's IPv6 metadata address
}
