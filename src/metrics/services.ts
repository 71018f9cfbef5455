import type { Counter, Gauge } from 'prom-client';
// Service labels with a bound: a metric family labelled by service has one series per service (and target),
// and the services are what tenants export, so there could be any number of them. Past `cap` distinct
// services, the rest share one `_other` series; a service that goes away gives its place back (the caller
// removes its series). No label is ever per pod or per connection.
export interface ServiceLabel {
  namespace: string;
  service: string;
}

export const OTHER: ServiceLabel = Object.freeze({ namespace: '_other', service: '_other' });

export class ServiceLabels {
  readonly #known = new Map<string, ServiceLabel>();
  #overflowed = false;

  constructor(readonly cap = 5_000, private readonly onOverflow?: (cap: number) => void) {}

  /** The labels of `namespace/name`: its own while there is room, else the shared `_other`. */
  of(namespace: string, name: string): ServiceLabel {
    const key = `${namespace}/${name}`;
    const known = this.#known.get(key);
    if (known) return known;
    if (this.#known.size >= this.cap) {
      if (!this.#overflowed) this.onOverflow?.(this.cap);
      this.#overflowed = true;
      return OTHER;
    }
    const label = Object.freeze({ namespace, service: name });
    this.#known.set(key, label);
    return label;
  }

  /** Forgets a service; true when it had labels of its own (their series are the caller's to remove). */
  forget(namespace: string, name: string): boolean {
    return this.#known.delete(`${namespace}/${name}`);
  }

  /** The services labelled now. */
  keys(): IterableIterator<string> {
    return this.#known.keys();
  }

  get size(): number {
    return this.#known.size;
  }
}

/**
 * Services gone: not in `live` (no route or export names them) and with nothing open (`busy`). Added to `gone`
 * (which may already hold those whose tags were retired), they forget their labels and lose their series in
 * `families`.
 */
export function dropGone(labels: ServiceLabels, gone: Set<string>, live: Set<string> | undefined, busy: Set<string>, families: (Counter<string> | Gauge<string>)[]): void {
  if (live) for (const key of labels.keys()) if (!live.has(key) && !busy.has(key)) gone.add(key);
  if (!gone.size) return;
  for (const key of gone) {
    const at = key.indexOf('/');
    labels.forget(key.slice(0, at), key.slice(at + 1));
  }
  for (const f of families) removeServices(f, gone);
}

/** Removes every series of a prom-client metric whose service (`namespace/service` labels) is in `services`. */
export function removeServices(metric: Counter<string> | Gauge<string>, services: Set<string>): void {
  // prom-client's remove() needs the whole label set: they are in its hashMap (a test pins this down).
  const hashMap = (metric as unknown as { hashMap: Record<string, { labels: Record<string, string> }> }).hashMap;
  for (const { labels } of Object.values(hashMap ?? {})) {
    if (services.has(`${labels.namespace}/${labels.service}`)) metric.remove(labels);
  }
}
