// Connection limits of the node proxy and the gateway: at most `total` open at once, and at most `perSource`
// from one source address (a pod at the proxy, a node's proxy at the gateway), so one client cannot exhaust
// the descriptors and memory that every other client shares. Over a limit a connection is reset at once.

export interface ConnectionLimits {
  /** Open connections at most (default 16,384). */
  total: number;
  /** Open connections from one source address at most (default 4,096). */
  perSource: number;
}

export const defaultLimits: ConnectionLimits = { total: 16_384, perSource: 4_096 };

/** The counts behind the limits; `admit` takes a slot and frees it when the socket closes. */
export class ConnectionLimiter {
  readonly #limits: ConnectionLimits;
  readonly #bySource = new Map<string, number>();
  #open = 0;
  /** Connections refused because a limit was reached. */
  refused = 0;

  constructor(limits: Partial<ConnectionLimits> = {}) {
    this.#limits = { ...defaultLimits, ...limits };
  }

  get open(): number {
    return this.#open;
  }

  /** Whether `socket` may stay; if so its slot is freed when it closes. */
  admit(socket: { remoteAddress?: string | undefined; once(event: 'close', cb: () => void): unknown }): boolean {
    const source = socket.remoteAddress ?? '';
    const mine = this.#bySource.get(source) ?? 0;
    if (this.#open >= this.#limits.total || mine >= this.#limits.perSource) {
      this.refused++;
      return false;
    }
    this.#open++;
    this.#bySource.set(source, mine + 1);
    socket.once('close', () => {
      this.#open--;
      const n = (this.#bySource.get(source) ?? 1) - 1;
      if (n > 0) this.#bySource.set(source, n);
      else this.#bySource.delete(source);
    });
    return true;
  }
}
