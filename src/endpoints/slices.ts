// A Service's ready endpoints, from its EndpointSlices: per service port, resolved through the slices' port
// names, dialable addresses only. SliceIndex keeps the slices by service as events arrive, so that what one
// change costs is that service's slices, not the cluster's. Pure.
import { type Endpoint, type EndpointSlice, SERVICE_NAME_LABEL, type Service } from '../api/core.js';
import { dialable } from './dialable.js';

/** EndpointSlices by `namespace/service-name` (their label): one pass, so a rebuild is not services × slices. */
export function slicesByService(slices: EndpointSlice[]): Map<string, EndpointSlice[]> {
  const out = new Map<string, EndpointSlice[]>();
  for (const s of slices) {
    const name = s.metadata.labels?.[SERVICE_NAME_LABEL];
    if (name === undefined) continue;
    const k = `${s.metadata.namespace ?? 'default'}/${name}`;
    const list = out.get(k);
    if (list) list.push(s);
    else out.set(k, [s]);
  }
  return out;
}

/**
 * Ready endpoints of a local Service, per service port (resolving the target port through the slices' port
 * names). `slices`: all of them, or the index of slicesByService.
 */
export function localEndpoints(service: Service | undefined, slices: EndpointSlice[] | Map<string, EndpointSlice[]>, denied?: ReadonlySet<string>): Map<number, Endpoint[]> {
  const out = new Map<number, Endpoint[]>();
  if (!service) return out;
  const candidates = Array.isArray(slices) ? slices : (slices.get(`${service.metadata.namespace ?? 'default'}/${service.metadata.name}`) ?? []);
  // In slice name order: the endpoints do not depend on the order the slices were seen in.
  const mine = candidates
    .filter((s) => s.metadata.labels?.[SERVICE_NAME_LABEL] === service.metadata.name && s.metadata.namespace === service.metadata.namespace && (s.addressType === undefined || s.addressType === 'IPv4' || s.addressType === 'IPv6'))
    .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  for (const sp of service.spec.ports ?? []) {
    if ((sp.protocol ?? 'TCP') !== 'TCP') continue;
    const eps: Endpoint[] = [];
    for (const slice of mine) {
      const p = (slice.ports ?? []).find((x) => (x.name ?? '') === (sp.name ?? '') && (x.protocol ?? 'TCP') === 'TCP');
      if (!p || !Number.isInteger(p.port) || p.port! < 1 || p.port! > 65535) continue;
      for (const e of slice.endpoints ?? []) {
        if (e.conditions?.ready === false) continue;
        for (const ip of Array.isArray(e.addresses) ? e.addresses : []) if (dialable(ip, denied)) eps.push({ ip, port: p.port! });
      }
    }
    out.set(sp.port, eps);
  }
  return out;
}

const sliceKey = (s: EndpointSlice): string => `${s.metadata.namespace ?? 'default'}/${s.metadata.name}`;
/** `namespace/name` of the Service a slice belongs to (its kubernetes.io/service-name label), if it names one. */
export const ownerOf = (s: EndpointSlice): string | undefined => {
  const name = s.metadata.labels?.[SERVICE_NAME_LABEL];
  return name === undefined ? undefined : `${s.metadata.namespace ?? 'default'}/${name}`;
};

/** EndpointSlices by `namespace/service-name`, kept up to date one event at a time. */
export class SliceIndex {
  readonly #byService = new Map<string, Map<string, EndpointSlice>>();
  /** slice → the service it was filed under (its label may change, or be gone by its deletion). */
  readonly #owner = new Map<string, string>();

  /** Files a slice that was added or updated; returns the services whose slices changed. */
  set(slice: EndpointSlice): string[] {
    const touched = this.delete(slice);
    const owner = ownerOf(slice);
    if (owner === undefined) return touched;
    const k = sliceKey(slice);
    let m = this.#byService.get(owner);
    if (!m) this.#byService.set(owner, (m = new Map()));
    m.set(k, slice);
    this.#owner.set(k, owner);
    return touched.includes(owner) ? touched : [...touched, owner];
  }

  /** Forgets a slice; returns the service it was filed under, if any. */
  delete(slice: EndpointSlice): string[] {
    const k = sliceKey(slice);
    const owner = this.#owner.get(k);
    if (owner === undefined) return [];
    this.#owner.delete(k);
    const m = this.#byService.get(owner);
    m?.delete(k);
    if (m?.size === 0) this.#byService.delete(owner);
    return [owner];
  }

  /** The slices of `namespace/name`. */
  of(service: string): EndpointSlice[] {
    const m = this.#byService.get(service);
    return m ? [...m.values()] : [];
  }
}
