// The gateway's native front (native/src/front.h): a CONNECT for an exported service with ready endpoints is
// read, connected, answered and spliced on the splicer's thread, from a table this module keeps in step with
// the catalog (every authority decide() answers 200 for a caller that proves no cluster: plain tunnels). Any
// other request — /healthz, ingress, a refusal, anything malformed or slow — and a CONNECT whose endpoints all
// failed there come back as a socket with nothing read from it, for the HTTP server to judge as always.
import { isIP, Socket, type SocketConstructorOpts } from 'node:net';
import type { NativeFrontEntry, NativeFrontHanded } from '../native/addon.js';
import type { KernelSplicer } from '../native/kernel-splice.js';
import { closeFd } from '../native/libc.js';
import { formatAuthority } from '../tunnel/protocol.js';
import { type Catalog, type LocalService, decide } from './catalog.js';

/** A catalog that tells which services changed (namespace/name; undefined: any of them). */
export interface ChangingCatalog extends Catalog {
  subscribe(onChange: (keys: string[] | undefined) => void): () => void;
}

export interface GatewayFrontSettings {
  idleMs: number;
  connectMs: number;
  headerMs: number;
  maxTotal: number;
  maxPerSource: number;
}

export class GatewayFront {
  readonly #splicer: KernelSplicer;
  readonly #catalog: Catalog;
  /** The authorities in the table, by service (namespace/name). */
  readonly #pushed = new Map<string, string[]>();
  readonly #unsubscribe: () => void;

  constructor(
    splicer: KernelSplicer,
    listeners: number[],
    catalog: ChangingCatalog,
    settings: GatewayFrontSettings,
    on: { handed(socket: Socket, free: () => void): void; succeeded(n: number): void },
  ) {
    this.#splicer = splicer;
    this.#catalog = catalog;
    splicer.startFront({ gateway: true, listeners, ...settings }, (handed, successes) => {
      for (const [, n] of successes) on.succeeded(n);
      for (const h of handed) {
        const socket = this.#socketOf(h);
        if (socket) on.handed(socket, () => this.release(h.source));
      }
    });
    this.#unsubscribe = catalog.subscribe((keys) => this.#sync(keys));
    this.#sync(undefined);
  }

  pause(stop: boolean): void {
    this.#splicer.frontPause(stop);
  }

  close(): void {
    this.#unsubscribe();
  }

  /** Frees the front's slot of a connection it handed over (once: the caller guards it). */
  release(source: Buffer): void {
    this.#splicer.frontRelease(source);
  }

  #socketOf(h: NativeFrontHanded): Socket | undefined {
    let socket: Socket;
    try {
      socket = new Socket({ fd: h.fd, readable: true, writable: true, allowHalfOpen: true, pauseOnCreate: true } as SocketConstructorOpts);
    } catch {
      closeFd(h.fd);
      this.#splicer.frontRelease(h.source);
      return undefined;
    }
    return socket;
  }

  /** The table entries of `keys` (undefined: the whole catalog, replacing the table). */
  #sync(keys: string[] | undefined): void {
    const entries: NativeFrontEntry[] = [];
    if (keys === undefined) {
      this.#pushed.clear();
      for (const svc of this.#catalog.all()) entries.push(...this.#entries(svc));
      this.#splicer.frontRoutes(entries, true);
      return;
    }
    for (const key of keys) {
      for (const authority of this.#pushed.get(key) ?? []) entries.push({ key: authority, choices: null });
      this.#pushed.delete(key);
      const [namespace = '', name = ''] = key.split('/');
      const svc = this.#catalog.get(namespace, name);
      if (svc) entries.push(...this.#entries(svc));
    }
    if (entries.length) this.#splicer.frontRoutes(entries, false);
  }

  #entries(svc: LocalService): NativeFrontEntry[] {
    const out: NativeFrontEntry[] = [];
    const authorities: string[] = [];
    for (const port of svc.ports.keys()) {
      const target = { service: svc.name, namespace: svc.namespace, port };
      const d = decide(this.#catalog, target);
      if (d.status !== 200 || !('endpoints' in d) || !d.endpoints.every((e) => isIP(e.ip))) continue;
      const authority = formatAuthority(target);
      authorities.push(authority);
      out.push({ key: authority, choices: [{ report: 0, weight: 1, addrs: d.endpoints.map((e) => ({ ip: e.ip, port: e.port })) }] });
    }
    if (authorities.length) this.#pushed.set(`${svc.namespace}/${svc.name}`, authorities);
    return out;
  }
}
