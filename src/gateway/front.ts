// The gateway's native front (native/src/front.h): a CONNECT for an exported service with ready endpoints is
// read, connected, answered and spliced on the splicer's thread, from a table this module keeps in step with
// the catalog (every authority decide() answers 200 for a caller that proves no cluster: plain tunnels). Any
// other request — /healthz, ingress, a refusal, anything malformed or slow — and a CONNECT whose endpoints all
// failed there come back as a socket with nothing read from it, for the HTTP server to judge as always.
import { type Socket, isIP } from 'node:net';
import type { Endpoint } from '../api/core.js';
import type { NativeFrontEntry } from '../native/addon.js';
import type { KernelSplicer } from '../native/kernel-splice.js';
import { Front } from '../tunnel/front.js';
import { formatAuthority } from '../tunnel/protocol.js';
import { type Catalog, type LocalService, decide } from './catalog.js';

/** A catalog that tells which services changed (namespace/name; undefined: any of them). */
export interface ChangingCatalog extends Catalog {
  subscribe(onChange: (keys: string[] | undefined) => void): () => void;
}

/**
 * What the HTTP server is to do with a connection the front handed over: serve it as any other, within what is
 * left of its head's time (`ageMs` of it went in the front); or answer 408 (its head did not complete in time;
 * what came of it was read). A CONNECT whose endpoints all failed in the front is served again: the catalog
 * may have new ones by now (a rollout).
 */
export type GatewayVerdict = { serve: true; ageMs: number } | { serve: false; timeout: true };

export interface GatewayFrontSettings {
  idleMs: number;
  connectMs: number;
  headerMs: number;
  maxTotal: number;
  maxPerSource: number;
}

export class GatewayFront extends Front {
  readonly #catalog: Catalog;
  /** The authorities in the table, by service (namespace/name). */
  readonly #pushed = new Map<string, string[]>();
  readonly #unsubscribe: () => void;
  /** Whether an endpoint of a service port (`namespace/name:port`) is ejected: left out of the table. */
  readonly #isOut: (group: string, e: Endpoint) => boolean;
  readonly #tagOf: (namespace: string, name: string) => number;

  constructor(
    splicer: KernelSplicer,
    listeners: number[],
    catalog: ChangingCatalog,
    settings: GatewayFrontSettings,
    on: {
      handed(socket: Socket, free: () => void, verdict: GatewayVerdict): void;
      succeeded(n: number): void;
      /** An endpoint that failed to connect in the front (also when the next one answered): `tag` is its entry's report index. */
      endpointFailed?(tag: number, ip: string, port: number, errno: number): void;
    },
    isOut: (group: string, e: Endpoint) => boolean = () => false,
    /** The report index of a service's entries: its metrics tag (the front counts its pairs by it). */
    tagOf: (namespace: string, name: string) => number = () => 0,
  ) {
    super(splicer, { gateway: true, listeners, ...settings }, (handed, successes, failures) => {
      for (const [, n] of successes) on.succeeded(n);
      if (on.endpointFailed) for (const [tag, ip, port, errno] of failures) on.endpointFailed(tag, ip, port, errno);
      for (const { socket, free, h } of handed) on.handed(socket, free, h.status === 408 ? { serve: false, timeout: true } : { serve: true, ageMs: h.ageMs });
    });
    this.#catalog = catalog;
    this.#isOut = isOut;
    this.#tagOf = tagOf;
    this.#unsubscribe = catalog.subscribe((keys) => this.#sync(keys));
    this.#sync(undefined);
  }

  close(): void {
    this.#unsubscribe();
  }

  /** The entries of these services (namespace/name; undefined: all) again: their ejected endpoints changed. */
  refresh(keys: string[] | undefined): void {
    this.#sync(keys);
  }

  /** The table entries of `keys` (undefined: the whole catalog, replacing the table). */
  #sync(keys: string[] | undefined): void {
    const entries: NativeFrontEntry[] = [];
    if (keys === undefined) {
      this.#pushed.clear();
      for (const svc of this.#catalog.all()) entries.push(...this.#entries(svc));
      this.splicer.frontRoutes(entries, true);
      return;
    }
    for (const key of keys) {
      for (const authority of this.#pushed.get(key) ?? []) entries.push({ key: authority, choices: null });
      this.#pushed.delete(key);
      const [namespace = '', name = ''] = key.split('/');
      const svc = this.#catalog.get(namespace, name);
      if (svc) entries.push(...this.#entries(svc));
    }
    if (entries.length) this.splicer.frontRoutes(entries, false);
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
      // Ejected endpoints are left out; all of them ejected, all stay (tried rather than none).
      const group = `${svc.namespace}/${svc.name}:${port}`;
      const inPlay = d.endpoints.filter((e) => !this.#isOut(group, e));
      const addrs = (inPlay.length ? inPlay : d.endpoints).map((e) => ({ ip: e.ip, port: e.port }));
      out.push({ key: authority, choices: [{ report: this.#tagOf(svc.namespace, svc.name), weight: 1, addrs }] });
    }
    if (authorities.length) this.#pushed.set(`${svc.namespace}/${svc.name}`, authorities);
    return out;
  }
}
