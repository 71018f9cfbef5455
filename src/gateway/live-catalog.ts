// The gateway's catalog kept in sync with its cluster: Services, their EndpointSlices and ServiceExports (of
// flomesh.io and of the MCS API, multicluster.x-k8s.io: the latter has no spec and exports to every member).
import { networkInterfaces } from 'node:os';
import { normalizeIp } from '../net/address.js';
import { componentLogger } from '../logger.js';
import type { Service } from '../api/core.js';
import { isClusterMachinery } from '../api/protected.js';
import type { ServiceExport } from '../api/flomesh.js';
import type { McsServiceExport } from '../api/mcs.js';
import type { EndpointSlice } from '../api/core.js';
import { SliceIndex, localEndpoints, slicesByService } from '../endpoints/slices.js';
import { type Informer, Kinds, type Source, type WatchEvent, keyParts, notServed, objectKey } from '../sources/source.js';
import { SourceError } from '../sources/source.js';
import { type Catalog, type CatalogReadiness, type LocalService, hasIngress } from './catalog.js';

/** One service's catalog entry from its resources (pure); undefined when it is not a service here. */
export function localService(service: Service | undefined, slices: EndpointSlice[], exp: ServiceExport | undefined, denied?: ReadonlySet<string>, mcs?: McsServiceExport): LocalService | undefined {
  if (!service) return undefined;
  const namespace = service.metadata.namespace ?? 'default';
  // The cluster's own machinery (the API server, kube-system) is never reachable through the gateway,
  // whatever export someone with rights in `default` writes.
  if (isClusterMachinery(namespace, service.metadata.name)) return undefined;
  const at = exportedAt(exp, mcs);
  return {
    namespace,
    name: service.metadata.name,
    ports: localEndpoints(service, slices, denied),
    export: exportOf(exp, mcs),
    ...(at ? { exportedAt: at } : {}),
    // An MCS export opens the service to every member, not to ingress callers: a flomesh.io export to some
    // clusters only keeps its ingress rules closed.
    ...(hasTargets(exp) ? { ingressClosed: true as const } : {}),
  };
}

/**
 * The export a gateway serves: the flomesh.io one's spec; an MCS export alone exports every port to every member
 * (no spec); both, the flomesh.io spec without `targetClusters`, as the controller aggregates them (an MCS export
 * sends the service to every member), its port rules and serviceAccountName still holding.
 */
function exportOf(exp: ServiceExport | undefined, mcs: McsServiceExport | undefined): ServiceExport['spec'] | undefined {
  if (!exp) return mcs ? ({} as ServiceExport['spec']) : undefined;
  const spec = (exp.spec ?? {}) as ServiceExport['spec'];
  if (!mcs) return spec;
  const { targetClusters: _everyMember, ...rest } = spec as ServiceExport['spec'] & { targetClusters?: unknown };
  return rest as ServiceExport['spec'];
}

const hasTargets = (exp: ServiceExport | undefined): boolean => {
  const t = (exp?.spec as { targetClusters?: unknown } | undefined)?.targetClusters;
  return Array.isArray(t) && t.length > 0;
};

/** The older of the two exports' creation times. */
function exportedAt(exp: ServiceExport | undefined, mcs: McsServiceExport | undefined): string | undefined {
  const times = [exp?.metadata.creationTimestamp, mcs?.metadata.creationTimestamp].filter((t): t is string => Boolean(t)).sort();
  return times[0];
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
  /** MCS ServiceExports; a cluster without their CRD (404) is served without them. */
  #mcs: Informer<McsServiceExport> | undefined;
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
      // A cluster without the MCS CRDs is healthy without them.
      if (!err || (err instanceof SourceError && err.code === 'ECNET_SOURCE_NOT_FOUND')) return void this.#brokenSince.delete(kind);
      if (!this.#brokenSince.has(kind)) this.#brokenSince.set(kind, { at: this.#now(), err });
    };
    this.#informers = [
      source.informer<Service>(Kinds.Service, { onEvent: changed, onHealth: health(Kinds.Service.kind) }),
      source.informer<EndpointSlice & { apiVersion: string }>(Kinds.EndpointSlice, { onEvent: sliceChanged, onHealth: health(Kinds.EndpointSlice.kind) }),
      source.informer<ServiceExport>(Kinds.ServiceExport, { onEvent: changed, onHealth: health(Kinds.ServiceExport.kind) }),
    ];
    const mcs = (this.#mcs = source.informer<McsServiceExport>(Kinds.McsServiceExport, { onEvent: changed, onHealth: health(`${Kinds.McsServiceExport.group}/${Kinds.McsServiceExport.kind}`) }));
    await Promise.all(this.#informers.map((i) => i.synced));
    // The MCS exports too, unless the cluster does not serve them (they are then added whenever it does).
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => notServed(mcs) && done(), 100);
      const done = () => {
        clearInterval(poll);
        resolve();
      };
      mcs.synced.then(done, done);
    });
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
        entry = localService(services.get(name, ns), this.#slices.of(k), exports.get(name, ns), this.#own, this.#mcs?.get(name, ns));
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
    this.#mcs?.close();
  }
}
