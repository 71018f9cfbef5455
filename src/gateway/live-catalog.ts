// The gateway's catalog kept in sync with its cluster: Services, their EndpointSlices and ServiceExports.
import { networkInterfaces } from 'node:os';
import { normalizeIp } from '../net/address.js';
import { componentLogger } from '../logger.js';
import type { Service } from '../api/core.js';
import { isClusterMachinery } from '../api/protected.js';
import type { ServiceExport } from '../api/flomesh.js';
import type { EndpointSlice } from '../api/core.js';
import { SliceIndex, localEndpoints, slicesByService } from '../endpoints/slices.js';
import { type Informer, Kinds, type Source, type WatchEvent, keyParts, objectKey } from '../sources/source.js';
import { type Catalog, type CatalogReadiness, type LocalService, hasIngress } from './catalog.js';

/** One service's catalog entry from its resources (pure); undefined when it is not a service here. */
export function localService(service: Service | undefined, slices: EndpointSlice[], exp: ServiceExport | undefined, denied?: ReadonlySet<string>): LocalService | undefined {
  if (!service) return undefined;
  const namespace = service.metadata.namespace ?? 'default';
  // The cluster's own machinery (the API server, kube-system) is never reachable through the gateway,
  // whatever export someone with rights in `default` writes.
  if (isClusterMachinery(namespace, service.metadata.name)) return undefined;
  return {
    namespace,
    name: service.metadata.name,
    ports: localEndpoints(service, slices, denied),
    export: exp ? ((exp.spec ?? {}) as ServiceExport['spec']) : undefined,
    ...(exp?.metadata.creationTimestamp ? { exportedAt: exp.metadata.creationTimestamp } : {}),
  };
}

/** A catalog from resources (pure). `denied`: addresses never dialled (the gateway's own). */
export function catalogFrom(services: Service[], slices: EndpointSlice[], exports: ServiceExport[], denied?: ReadonlySet<string>): Map<string, LocalService> {
  const key = (o: { metadata: { namespace?: string; name: string } }) => `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
  const exported = new Map(exports.map((e) => [key(e), e]));
  const index = slicesByService(slices);
  const out = new Map<string, LocalService>();
  for (const s of services) {
    const entry = localService(s, index.get(key(s)) ?? [], exported.get(key(s)), denied);
    if (entry) out.set(key(s), entry);
  }
  return out;
}

/**
 * The catalog kept in sync with the cluster one service at a time: each event marks its `namespace/name`, and a
 * rebuild (debounced) recomputes those entries only, so a change costs its own service, not the cluster's
 * 10,000. A rebuild runs in one turn of the event loop: a lookup sees the catalog before it or after it.
 */
export interface LiveCatalogOptions {
  /**
   * A watch broken for longer than this makes the catalog unhealthy (readiness()): a blip of the API server
   * does not take every gateway replica out of its Service at once. Default 30 s.
   */
  unhealthyAfterMs?: number;
  now?: () => number;
}

export class LiveCatalog implements Catalog {
  readonly #services = new Map<string, LocalService>();
  /** The first full catalog is built (until then it is empty, and lookups find nothing). */
  #synced = false;
  /** Per informer (by kind), since when its watch is broken. */
  readonly #brokenSince = new Map<string, { at: number; err: Error }>();
  readonly #unhealthyAfterMs: number;
  readonly #now: () => number;

  constructor(options: LiveCatalogOptions = {}) {
    this.#unhealthyAfterMs = options.unhealthyAfterMs ?? 30_000;
    this.#now = options.now ?? Date.now;
  }
  readonly #ingress = new Map<string, LocalService>();
  readonly #slices = new SliceIndex();
  readonly #dirty = new Set<string>();
  #informers: [Informer<Service>, Informer<EndpointSlice & { apiVersion: string }>, Informer<ServiceExport>] | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #log = componentLogger('gateway-catalog');
  // The gateway's own addresses (its pod's, or the node's for a hostNetwork one): an EndpointSlice naming one
  // would let a tunnel from outside reach what listens on the gateway's host (a kubelet, a local admin port).
  // Canonical once here, so that each endpoint's check is one lookup.
  readonly #own = new Set(Object.values(networkInterfaces()).flatMap((a) => (a ?? []).flatMap((x) => { try { return [normalizeIp(x.address)]; } catch { return []; } })));

  /** Starts watching; resolves once the first catalog is built. */
  async start(source: Source, debounceMs = 20): Promise<void> {
    const schedule = () => {
      // Before the first full list nothing is built: a half-listed catalog would offer fewer endpoints than exist.
      if (this.#timer || !this.#informers || !this.#synced) return;
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#rebuild();
      }, debounceMs);
    };
    const changed = (e: WatchEvent) => {
      this.#dirty.add(objectKey(e.object));
      schedule();
    };
    const sliceChanged = (e: WatchEvent<EndpointSlice & { apiVersion: string }>) => {
      for (const k of e.type === 'deleted' ? this.#slices.delete(e.object) : this.#slices.set(e.object)) this.#dirty.add(k);
      schedule();
    };
    const health = (kind: string) => (err: Error | undefined) => {
      if (!err) return void this.#brokenSince.delete(kind);
      if (!this.#brokenSince.has(kind)) this.#brokenSince.set(kind, { at: this.#now(), err });
    };
    this.#informers = [
      source.informer<Service>(Kinds.Service, { onEvent: changed, onHealth: health(Kinds.Service.kind) }),
      source.informer<EndpointSlice & { apiVersion: string }>(Kinds.EndpointSlice, { onEvent: sliceChanged, onHealth: health(Kinds.EndpointSlice.kind) }),
      source.informer<ServiceExport>(Kinds.ServiceExport, { onEvent: changed, onHealth: health(Kinds.ServiceExport.kind) }),
    ];
    await Promise.all(this.#informers.map((i) => i.synced));
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#synced = true;
    this.#rebuild();
  }

  /** Synced once, and no watch broken for longer than unhealthyAfterMs (it keeps its last known state meanwhile). */
  readiness(): CatalogReadiness {
    if (!this.#synced) return { synced: false, healthy: false, reason: 'the catalog has not synced yet (Services, EndpointSlices, ServiceExports not listed once)' };
    const now = this.#now();
    for (const [kind, b] of this.#brokenSince) {
      if (now - b.at >= this.#unhealthyAfterMs) return { synced: true, healthy: false, reason: `the ${kind} watch is broken since ${Math.round((now - b.at) / 1000)} s: ${b.err.message}` };
    }
    return { synced: true, healthy: true };
  }

  readonly #listeners = new Set<(keys: string[] | undefined) => void>();

  /** Calls `onChange` with the services (namespace/name) each rebuild changed; returns the unsubscribe. */
  subscribe(onChange: (keys: string[] | undefined) => void): () => void {
    this.#listeners.add(onChange);
    return () => this.#listeners.delete(onChange);
  }

  #rebuild(): void {
    if (!this.#informers) return;
    const [services, , exports] = this.#informers;
    for (const k of this.#dirty) {
      const { namespace: ns, name } = keyParts(k);
      let entry: LocalService | undefined;
      try {
        entry = localService(services.get(name, ns), this.#slices.of(k), exports.get(name, ns), this.#own);
      } catch (err) {
        // A Service the API would not have taken (no spec, ports not a list): that service is not offered.
        this.#log.warn({ err, service: k }, 'service left out of the catalog');
      }
      if (entry) this.#services.set(k, entry);
      else this.#services.delete(k);
      if (entry && hasIngress(entry)) this.#ingress.set(k, entry);
      else this.#ingress.delete(k);
    }
    const keys = [...this.#dirty];
    this.#dirty.clear();
    if (keys.length) for (const l of this.#listeners) l(keys);
  }

  get(namespace: string, name: string): LocalService | undefined {
    return this.#services.get(`${namespace}/${name}`);
  }

  all(): Iterable<LocalService> {
    return this.#services.values();
  }

  withIngress(): Iterable<LocalService> {
    return this.#ingress.values();
  }

  close(): void {
    clearTimeout(this.#timer);
    for (const i of this.#informers ?? []) i.close();
  }
}
