// Connection limits of the node proxy and the gateway: at most `total` open at once, and at most `perSource`
// from one source address (a pod at the proxy, a node's proxy at the gateway), so one client cannot exhaust
// the descriptors and memory that every other client shares. Over a limit a connection is reset at once.
import { type Socket, isIPv4 } from 'node:net';
import { ipBytes, readAddress } from '../net/address.js';

export interface ConnectionLimits {
  /** Open connections at most (default 16,384). */
  total: number;
  /** Open connections from one source at most (default 1,024): an IPv4 address, or an IPv6 /64. */
  perSource: number;
}

// Sixteen sources at their limit before the total is: a few hostile pods cannot take the whole node.
export const defaultLimits: ConnectionLimits = { total: 16_384, perSource: 1_024 };

/** The source a connection counts against: its IPv4 address, or its IPv6 /64 (one host holds a whole /64). */
export function sourceOf(address: string | undefined): string {
  let b: Buffer;
  try {
    b = ipBytes(address ?? '');
  } catch {
    return address ?? '';
  }
  const canonical = readAddress(b, 0);
  if (isIPv4(canonical)) return canonical;
  b.fill(0, 8);
  return `${readAddress(b, 0)}/64`;
}

/** The counts behind the limits; `admit` takes a slot and frees it when the socket closes. */
export class ConnectionLimiter {
  readonly #limits: ConnectionLimits;
  readonly #bySource = new Map<string, number>();
  readonly #release = new WeakMap<object, () => void>();
  #open = 0;
  /** Connections refused because a limit was reached. */
  refused = 0;

  constructor(limits: Partial<ConnectionLimits> = {}) {
    this.#limits = { ...defaultLimits, ...limits };
  }

  get limits(): ConnectionLimits {
    return this.#limits;
  }

  get open(): number {
    return this.#open;
  }

  /** Admits `socket`, or resets it at once and returns false (the components count those). */
  admitOrReset(socket: Socket): boolean {
    if (this.admit(socket)) return true;
    socket.on('error', () => undefined);
    socket.resetAndDestroy();
    return false;
  }

  /** Whether `socket` may stay; if so its slot is freed when it closes. */
  admit(socket: { remoteAddress?: string | undefined; once(event: 'close', cb: () => void): unknown }): boolean {
    const source = sourceOf(socket.remoteAddress);
    const mine = this.#bySource.get(source) ?? 0;
    if (this.#open >= this.#limits.total || mine >= this.#limits.perSource) {
      this.refused++;
      return false;
    }
    this.#open++;
    this.#bySource.set(source, mine + 1);
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      this.#open--;
      const n = (this.#bySource.get(source) ?? 1) - 1;
      if (n > 0) this.#bySource.set(source, n);
      else this.#bySource.delete(source);
    };
    this.#release.set(socket, release);
    socket.once('close', release);
    return true;
  }

  /**
   * A socket whose slot another counter holds (the native front's): `free` runs once, when it closes or is
   * released here (a pair handed to the kernel splicer loses its 'close' listeners; its end calls release()).
   */
  hold(socket: { once(event: 'close', cb: () => void): unknown }, free: () => void): void {
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      free();
    };
    this.#release.set(socket, release);
    socket.once('close', release);
  }

  /**
   * Detaches the slot of an admitted socket from its 'close' (a TLS socket handed to the splicer closes its TCP
   * socket at the hand-over, long before the tunnel ends) and returns what frees it; a no-op for others.
   */
  detach(socket: Socket): () => void {
    const release = this.#release.get(socket);
    if (!release) return () => undefined;
    socket.off('close', release);
    return release;
  }

  /**
   * Frees the slot of an admitted socket now (idempotent). A pair handed to the kernel splicer loses its
   * sockets' listeners at the hand-over, so its end frees the slot through this, not through 'close'.
   */
  release(socket: object): void {
    this.#release.get(socket)?.();
  }
}
