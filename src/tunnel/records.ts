// Sealed records: how an authenticated TLS tunnel moves its bytes without Node's TLS streams. After the TLS 1.3
// handshake (both clusters proven, in Node) and the CONNECT exchange, the proxy asks for records in a header and
// the gateway agrees in its 200; from then on the TCP stream carries records that the addon's splicer thread
// seals and opens (native/src/records.h), keyed from the TLS session's exporter (RFC 8446 §7.5), so the keys are
// bound to the handshake that authenticated both ends. Node's TLS layer sends nothing more on that stream.
// docs/contracts.md, "Sealed records", has the wire format.
import type { TLSSocket } from 'node:tls';

/** The CONNECT header that asks for records, and the answer's header that agrees (value: RECORDS_VERSION). */
export const RECORDS_HEADER = 'ecnet-records';
export const RECORDS_VERSION = 'aes-128-gcm-v1';
const EXPORTER_LABEL = 'EXPORTER-ecnet-records-v1';

/** One end's keys for a sealed pair, as the splicer takes them. */
export interface RecordSeal {
  send: Buffer;
  recv: Buffer;
  /** The gateway's end: it sends nothing until the proxy's first record arrived. */
  server: boolean;
  /** Records per key before both ends ratchet it forward (tests make it small). */
  rekeyRecords?: number;
  /** The plaintext side had already ended when the pair was handed over (set by the splicer's caller). */
  aEnded?: boolean;
}

/** This end's record keys, from the TLS session of `socket` (client: the proxy; server: the gateway). */
export function recordSeal(socket: TLSSocket, server: boolean): RecordSeal {
  const m = socket.exportKeyingMaterial(64, EXPORTER_LABEL, Buffer.from(RECORDS_VERSION));
  const toServer = Buffer.from(m.subarray(0, 32));
  const toClient = Buffer.from(m.subarray(32, 64));
  return server ? { send: toClient, recv: toServer, server } : { send: toServer, recv: toClient, server };
}

/** Tunnel sockets whose gateway agreed to records (set by the tunnel client, taken by the splicer). */
export const sealedTunnels = new WeakMap<object, RecordSeal>();
