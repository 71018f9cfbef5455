// The gateway's catalog kept in sync with its cluster: Services, their EndpointSlices and ServiceExports,
// rebuilt (debounced) after each change and swapped whole, so a lookup always sees one consistent snapshot.
import { networkInterfaces } from 'node:os';
import { normalizeIp } from '../bpf/address.js';
import type { Service } from '../api/core.js';
import { isClusterMachinery } from '../api/protected.js';
import type { ServiceExport } from '../api/flomesh.js';
import { type EndpointSlice, localEndpoints, slicesByService } from '../agent/desired.js';
import { type Informer, Kinds, type Source } from '../sources/source.js';
import type { Catalog, LocalService } from './catalog.js';

/** A catalog from resources (pure). `denied`: addresses never dialled (the gateway's own). */
export function catalogFrom(services: Service[], slices: EndpointSlice[], exports: ServiceExport[], denied?: ReadonlySet<string>): Map<string, LocalService> {
  const exported = new Map(exports.map((e) => [`${e.metadata.namespace ?? 'default'}/${e.metadata.name}`, e]));
  const out = new Map<string, LocalService>();
  const index = slicesByService(slices);
  for (const s of services) {
    const namespace = s.metadata.namespace ?? 'default';
    // The cluster's own machinery (the API server, kube-system) is never reachable through the gateway,
    // whatever export someone with rights in `default` writes.
    if (isClusterMachinery(namespace, s.metadata.name)) continue;
    const key = `${namespace}/${s.metadata.name}`;
    const e = exported.get(key);
    out.set(key, {
      namespace,
      name: s.metadata.name,
      ports: localEndpoints(s, index, denied),
      export: e ? ((e.spec ?? {}) as ServiceExport['spec']) : undefined,
      ...(e?.metadata.creationTimestamp ? { exportedAt: e.metadata.creationTimestamp } : {}),
    });
  }
  return out;
}

export class LiveCatalog implements Catalog {
  #services = new Map<string, LocalService>();
  #informers: [Informer<Service>, Informer<EndpointSlice & { apiVersion: string }>, Informer<ServiceExport>] | undefined;
  #timer: NodeJS.Timeout | undefined;
  // The gateway's own addresses (its pod's, or the node's for a hostNetwork one): an EndpointSlice naming one
  // would let a tunnel from outside reach what listens on the gateway's host (a kubelet, a local admin port).
  // Canonical once here, so that each endpoint's check is one lookup.
  readonly #own = new Set(Object.values(networkInterfaces()).flatMap((a) => (a ?? []).flatMap((x) => { try { return [normalizeIp(x.address)]; } catch { return []; } })));

  /** Starts watching; resolves once the first catalog is built. */
  async start(source: Source, debounceMs = 20): Promise<void> {
    const rebuild = () => {
      if (this.#timer) return;
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#rebuild();
      }, debounceMs);
    };
    const opts = { onEvent: rebuild };
    this.#informers = [
      source.informer<Service>(Kinds.Service, opts),
      source.informer<EndpointSlice & { apiVersion: string }>(Kinds.EndpointSlice, opts),
      source.informer<ServiceExport>(Kinds.ServiceExport, opts),
    ];
    await Promise.all(this.#informers.map((i) => i.synced));
    this.#rebuild();
  }

  #rebuild(): void {
    if (!this.#informers) return;
    const [services, slices, exports] = this.#informers;
    this.#services = catalogFrom(services.list(), slices.list(), exports.list(), this.#own);
  }

  get(namespace: string, name: string): LocalService | undefined {
    return this.#services.get(`${namespace}/${name}`);
  }

  all(): Iterable<LocalService> {
    return this.#services.values();
  }

  close(): void {
    clearTimeout(this.#timer);
    for (const i of this.#informers ?? []) i.close();
  }
}
