// The gateway's Prometheus families. Tunnels are counted per exported service (namespace, name); a CONNECT
// for anything the catalog does not hold is counted with empty service labels, so a caller making up names
// cannot make up series. What the native front and the kernel splicer did is read from their per-tag counters
// at each scrape (a tag per service, as the proxy's per service and cluster).
import { Counter, Gauge, type Registry } from 'prom-client';
import { BucketHistogram, SETUP_BUCKETS_S } from '../metrics/histogram.js';
import type { FailureReason } from '../metrics/reasons.js';
import { type ServiceLabel, ServiceLabels, dropGone } from '../metrics/services.js';
import { type NativeTags, TagBook, TagCollected } from '../metrics/tags.js';

export interface GatewayMetricsOptions {
  registry: Registry;
  serviceCap?: number;
  onOverflow?: (cap: number) => void;
  /** The exported services (`namespace/name`) now: others' series are removed at the next scrape. */
  liveServices?: () => Set<string>;
}

const NONE = { namespace: '', service: '' };

/** A gateway's tags: one per service (`namespace/name`). */
export const serviceTags = () => new TagBook<{ namespace: string; service: string }>((k) => `${k.namespace}/${k.service}`);

export class GatewayMetrics extends TagCollected {
  readonly labels: ServiceLabels;
  /** The tags of the services (the gateway's front uses them as its report indices). */
  readonly tags = serviceTags();
  readonly #collectors: (() => void)[] = [];
  readonly opened: Counter<'namespace' | 'service'>;
  readonly refused: Counter<'namespace' | 'service' | 'reason'>;
  readonly active: Gauge<'namespace' | 'service'>;
  readonly bytes: Counter<'namespace' | 'service' | 'direction'>;
  readonly setup: BucketHistogram<never>;
  readonly endpointFailures: Counter<'namespace' | 'service' | 'reason'>;
  readonly endpoints: Gauge<'namespace' | 'service' | 'state'>;
  readonly serviceReady: Gauge<'namespace' | 'service'>;
  readonly catalogSynced: Gauge;
  readonly catalogServices: Gauge;
  readonly limited: Counter;
  readonly ingress: Counter<'namespace' | 'service'>;

  constructor(readonly o: GatewayMetricsOptions) {
    super();
    const registers = [o.registry];
    this.labels = new ServiceLabels(o.serviceCap, o.onOverflow);
    const collect = () => this.collectTags();
    const read = () => this.#collectors.forEach((c) => c());
    this.opened = new Counter({ name: 'ecnet_gateway_tunnels_opened_total', help: 'Tunnels established to an endpoint, per exported service', labelNames: ['namespace', 'service'], registers, collect });
    this.refused = new Counter({ name: 'ecnet_gateway_tunnels_refused_total', help: 'CONNECTs answered with an error, by reason (service labels empty for a service the catalog does not hold)', labelNames: ['namespace', 'service', 'reason'], registers });
    this.active = new Gauge({ name: 'ecnet_gateway_tunnels_active', help: 'Tunnels open now, per exported service', labelNames: ['namespace', 'service'], registers });
    this.bytes = new Counter({ name: 'ecnet_gateway_bytes_total', help: "Bytes carried, sent (tunnel to endpoint) and received, including the kernel splicer's", labelNames: ['namespace', 'service', 'direction'], registers });
    this.setup = new BucketHistogram('ecnet_gateway_tunnel_setup_seconds', 'Time from a tunnel\'s CONNECT to its 200 (an endpoint connected)', [], SETUP_BUCKETS_S, o.registry);
    this.endpointFailures = new Counter({ name: 'ecnet_gateway_endpoint_failures_total', help: 'Connects to an endpoint that failed (the next endpoint is tried), by reason', labelNames: ['namespace', 'service', 'reason'], registers });
    this.endpoints = new Gauge({ name: 'ecnet_gateway_endpoints', help: 'Ready endpoints of each exported service, by state (serving, or ejected after failed connects)', labelNames: ['namespace', 'service', 'state'], registers, collect: read });
    this.serviceReady = new Gauge({ name: 'ecnet_gateway_service_ready', help: '1 when an exported service has a ready endpoint that is not ejected, else 0', labelNames: ['namespace', 'service'], registers, collect: read });
    this.catalogSynced = new Gauge({ name: 'ecnet_gateway_catalog_synced', help: '1 once the catalog (exports, services, endpoint slices) is synced and its watches are healthy, else 0', registers, collect: read });
    this.catalogServices = new Gauge({ name: 'ecnet_gateway_catalog_services', help: 'Exported services in the catalog', registers, collect: read });
    this.limited = new Counter({ name: 'ecnet_gateway_connections_limited_total', help: 'Connections reset at once: a connection limit was reached (total, or the source\'s)', registers });
    this.ingress = new Counter({ name: 'ecnet_gateway_ingress_requests_total', help: 'HTTP requests served by ServiceExport ingress rules, per service', labelNames: ['namespace', 'service'], registers });
  }

  tag(namespace: string, service: string): number {
    return this.tags.tag({ namespace, service });
  }



  addNative(source: NativeTags): void {
    this.tags.addNative(source);
  }

  /** Work before each scrape (gauges that are read: endpoints, readiness, the catalog). */
  onCollect(fn: () => void): void {
    this.#collectors.push(fn);
  }

  /** The read gauges from the catalog and the ejections now (called at each scrape). */
  setServices(synced: boolean, services: Iterable<{ namespace: string; service: string; serving: number; ejected: number }>): void {
    this.catalogSynced.set(synced ? 1 : 0);
    this.endpoints.reset();
    this.serviceReady.reset();
    let n = 0;
    // Several services may share `_other`: it is ready when any of them is.
    const ready = new Map<ServiceLabel, number>();
    for (const s of services) {
      n++;
      const l = this.#service(s.namespace, s.service);
      this.endpoints.inc({ ...l, state: 'serving' }, s.serving);
      this.endpoints.inc({ ...l, state: 'ejected' }, s.ejected);
      ready.set(l, Math.max(ready.get(l) ?? 0, s.serving > 0 ? 1 : 0));
    }
    for (const [l, v] of ready) this.serviceReady.set(l, v);
    this.catalogServices.set(n);
  }

  #service(namespace: string, service: string): ServiceLabel {
    return this.labels.of(namespace, service);
  }

  /** A refusal; `known`: the catalog holds the service (else it is counted without service labels). */
  refusedOne(reason: FailureReason, target: { namespace: string; service: string } | undefined, known: boolean): void {
    this.refused.inc({ ...(target && known ? this.#service(target.namespace, target.service) : NONE), reason });
  }

  endpointFailed(target: { namespace: string; service: string }, reason: FailureReason): void {
    this.endpointFailures.inc({ ...this.#service(target.namespace, target.service), reason });
  }

  ingressOne(target: { namespace: string; service: string }): void {
    this.ingress.inc(this.#service(target.namespace, target.service));
  }

  /**
   * A tunnel JavaScript established after `setupS`: its tag (for the splicer) and what to call when it ends
   * (with a stream's bytes).
   */
  openedOne(target: { namespace: string; service: string }, setupS: number): { tag: number; ended: (bytes?: { up: number; down: number }) => void } {
    this.opened.inc(this.#service(target.namespace, target.service));
    this.setup.observe({}, setupS);
    const tag = this.tag(target.namespace, target.service);
    const closed = this.tags.opened(tag);
    let ended = false;
    return { tag, ended: (bytes) => {
      if (ended) return;
      ended = true;
      closed();
      const s = this.#service(target.namespace, target.service);
      if (bytes?.up) this.bytes.inc({ ...s, direction: 'sent' }, bytes.up);
      if (bytes?.down) this.bytes.inc({ ...s, direction: 'received' }, bytes.down);
    } };
  }

  /** At each scrape: what the addon counted since the last one, the active gauges, and services gone. */
  protected collectTags(): void {
    const live = this.o.liveServices?.();
    const { active, gone } = this.tags.collect((t, d) => {
      const s = this.#service(t.namespace, t.service);
      if (d.up) this.bytes.inc({ ...s, direction: 'sent' }, d.up);
      if (d.down) this.bytes.inc({ ...s, direction: 'received' }, d.down);
      if (d.opened) {
        this.opened.inc(s, d.opened);
        this.setup.add({}, d.setupBuckets, d.setupSumUs / 1e6);
      }
    }, live);
    // Also services labelled without a tag of their own (only failures or rejections counted).
    const busy = new Set(active.filter(([, n]) => n > 0).map(([t]) => `${t.namespace}/${t.service}`));
    dropGone(this.labels, gone, live, busy, [this.opened, this.refused, this.active, this.bytes, this.endpointFailures, this.endpoints, this.serviceReady, this.ingress] as Counter<string>[]);
    this.active.reset();
    for (const [t, n] of active) this.active.set(this.#service(t.namespace, t.service), n);
  }
}
