// The node proxy's Prometheus families. Connections are counted per service (namespace, name) and target
// cluster (the local one for local endpoints), whoever set them up: JavaScript counts its own as they happen;
// what the native front and the kernel splicer did is read from their per-tag counters at each scrape (a tag
// is this module's index of a (service, cluster), given to the addon with each pair and each front choice).
// Labels stay bounded: services past the cap share `_other`, reasons are a fixed set, nothing is per pod or
// per connection.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { ClusterKey } from '../api/flomesh.js';
import { BucketHistogram, SETUP_BUCKETS_S } from '../metrics/histogram.js';
import type { FailureReason } from '../metrics/reasons.js';
import { type ServiceLabel, ServiceLabels, dropGone } from '../metrics/services.js';
import { type NativeTags, TagBook, TagCollected } from '../metrics/tags.js';

/** Why a client's connection was reset before any upstream: no route, not redirected, over a limit, … */
export type RejectReason = 'no_route' | 'not_redirected' | 'limited' | 'no_target' | 'all_failed';

export interface ProxyMetricsOptions {
  registry: Registry;
  localCluster: ClusterKey;
  /** Distinct services labelled at most (default 5,000); the rest share `_other`. */
  serviceCap?: number;
  /** The services (`namespace/name`) routes name now: the series of others are removed at the next scrape. */
  liveServices?: () => Set<string>;
  onOverflow?: (cap: number) => void;
}

export class ProxyMetrics extends TagCollected {
  readonly labels: ServiceLabels;
  readonly #book = new TagBook<{ namespace: string; service: string; cluster: ClusterKey }>((k) => `${k.namespace}/${k.service}\u0000${k.cluster}`);
  readonly #collectors: (() => void)[] = [];
  readonly accepted: Counter;
  readonly rejected: Counter<'namespace' | 'service' | 'reason'>;
  readonly opened: Counter<'namespace' | 'service' | 'cluster'>;
  readonly failed: Counter<'namespace' | 'service' | 'cluster' | 'reason'>;
  readonly retries: Counter<'namespace' | 'service'>;
  readonly bytes: Counter<'namespace' | 'service' | 'cluster' | 'direction'>;
  readonly active: Gauge<'namespace' | 'service' | 'cluster'>;
  readonly setup: BucketHistogram<'cluster'>;
  readonly targetHealthy: Gauge<'namespace' | 'service' | 'cluster'>;
  readonly gatewayUp: Gauge<'cluster'>;

  constructor(readonly o: ProxyMetricsOptions) {
    super();
    const registers = [o.registry];
    this.labels = new ServiceLabels(o.serviceCap, o.onOverflow);
    const collect = () => this.collectTags();
    this.accepted = new Counter({ name: 'ecnet_proxy_connections_accepted_total', help: 'Connections the node proxy accepted', registers });
    this.rejected = new Counter({ name: 'ecnet_proxy_connections_rejected_total', help: 'Connections reset before any upstream, by reason (service labels empty when no route named one)', labelNames: ['namespace', 'service', 'reason'], registers });
    this.opened = new Counter({ name: 'ecnet_proxy_connections_opened_total', help: 'Connections established to an upstream, per service and target cluster (the local cluster: local endpoints)', labelNames: ['namespace', 'service', 'cluster'], registers, collect });
    this.failed = new Counter({ name: 'ecnet_proxy_connection_attempts_failed_total', help: 'Attempts to reach a target that failed, by reason (the next candidate is tried after each)', labelNames: ['namespace', 'service', 'cluster', 'reason'], registers });
    this.retries = new Counter({ name: 'ecnet_proxy_retries_total', help: 'Attempts after the first for one connection', labelNames: ['namespace', 'service'], registers });
    this.bytes = new Counter({ name: 'ecnet_proxy_bytes_total', help: 'Bytes carried, sent (client to upstream) and received, including the kernel splicer\'s', labelNames: ['namespace', 'service', 'cluster', 'direction'], registers });
    this.active = new Gauge({ name: 'ecnet_proxy_connections_active', help: 'Connections open now, per service and target cluster', labelNames: ['namespace', 'service', 'cluster'], registers });
    this.setup = new BucketHistogram('ecnet_proxy_connection_setup_seconds', 'Time from accepting a connection to its established upstream (a tunnel\'s 200, or a local connect), per target cluster', ['cluster'], SETUP_BUCKETS_S, o.registry);
    // Read, not counted: both from the same source (the health book), each at its own scrape.
    const health = () => this.#collectors.forEach((c) => c());
    this.targetHealthy = new Gauge({ name: 'ecnet_proxy_target_healthy', help: '1 when the proxy may send a service\'s connections to a cluster (not ejected, its gateway reachable, the service ready there), else 0', labelNames: ['namespace', 'service', 'cluster'], registers, collect: health });
    this.gatewayUp = new Gauge({ name: 'ecnet_proxy_gateway_up', help: '1 when the last active check reached a cluster\'s gateway, else 0', labelNames: ['cluster'], registers, collect: health });
  }

  /** The tag of (service, cluster): the index the addon counts its pairs and front choices by. */
  tag(namespace: string, service: string, cluster: ClusterKey): number {
    return this.#book.tag({ namespace, service, cluster });
  }


  /** Called with each tag freed (its service went away), before it is reused for another. */
  onTagFreed(fn: (tag: number) => void): void {
    this.#book.onFree(fn);
  }

  /** A tag's name across processes (a hand-over), and this process's tag of a name. */
  tagName(tag: number): string | undefined {
    const t = this.#book.info(tag);
    return t && JSON.stringify([t.namespace, t.service, t.cluster]);
  }

  tagOfName(name: string | undefined): number | undefined {
    try {
      const v = JSON.parse(name ?? 'null') as unknown;
      if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'string' && x.length <= 300)) return undefined;
      return this.tag(v[0] as string, v[1] as string, v[2] as string);
    } catch {
      return undefined;
    }
  }

  /** A source of the addon's per-tag counters (a splicer: each process's own), read at each scrape. */
  addNative(source: NativeTags): void {
    this.#book.addNative(source);
  }

  /** Work to do before each scrape (health gauges, which are read, not counted). */
  onCollect(fn: () => void): void {
    this.#collectors.push(fn);
  }

  /** The health gauges from what the health book says now (called at each scrape). */
  setHealth(targets: Iterable<{ namespace: string; service: string; cluster: ClusterKey; healthy: boolean }>, gateways: Iterable<{ cluster: ClusterKey; up: boolean }>): void {
    this.targetHealthy.reset();
    for (const t of targets) this.targetHealthy.set({ ...this.#service(t.namespace, t.service), cluster: t.cluster }, t.healthy ? 1 : 0);
    this.gatewayUp.reset();
    for (const g of gateways) this.gatewayUp.set({ cluster: g.cluster }, g.up ? 1 : 0);
  }

  #service(namespace: string, service: string): ServiceLabel {
    return this.labels.of(namespace, service);
  }

  rejectedOne(reason: RejectReason, route?: { namespace: string; service: string }): void {
    const s = route ? this.#service(route.namespace, route.service) : { namespace: '', service: '' };
    this.rejected.inc({ ...s, reason });
  }

  failedAttempt(route: { namespace: string; service: string }, cluster: ClusterKey, reason: FailureReason): void {
    this.failed.inc({ ...this.#service(route.namespace, route.service), cluster, reason });
  }

  retried(route: { namespace: string; service: string }): void {
    this.retries.inc(this.#service(route.namespace, route.service));
  }

  /**
   * An upstream established by JavaScript after `setupS` seconds: its tag (for the splicer) and what to call
   * when the pair ends (with a stream pair's bytes).
   */
  openedOne(route: { namespace: string; service: string }, cluster: ClusterKey, setupS: number): { tag: number; ended: (bytes?: { up: number; down: number }) => void } {
    this.opened.inc({ ...this.#service(route.namespace, route.service), cluster });
    this.setup.observe({ cluster }, setupS);
    const tag = this.tag(route.namespace, route.service, cluster);
    const closed = this.#book.opened(tag);
    let ended = false;
    return { tag, ended: (bytes) => {
      if (ended) return;
      ended = true;
      closed();
      // Stream pairs only: the kernel splicer's bytes are counted live, per tag.
      if (bytes?.up) this.bytes.inc({ ...this.#service(route.namespace, route.service), cluster, direction: 'sent' }, bytes.up);
      if (bytes?.down) this.bytes.inc({ ...this.#service(route.namespace, route.service), cluster, direction: 'received' }, bytes.down);
    } };
  }

  /** At each scrape: what the addon counted since the last one, the active gauges, and services gone. */
  protected collectTags(): void {
    const live = this.o.liveServices?.();
    const { active, gone } = this.#book.collect((t, d) => {
      const labels = { ...this.#service(t.namespace, t.service), cluster: t.cluster };
      if (d.up) this.bytes.inc({ ...labels, direction: 'sent' }, d.up);
      if (d.down) this.bytes.inc({ ...labels, direction: 'received' }, d.down);
      if (d.opened) {
        this.opened.inc(labels, d.opened);
        this.setup.add({ cluster: t.cluster }, d.setupBuckets, d.setupSumUs / 1e6);
      }
    }, live);
    // Also services labelled without a tag of their own (only failures or rejections counted).
    const busy = new Set(active.filter(([, n]) => n > 0).map(([t]) => `${t.namespace}/${t.service}`));
    dropGone(this.labels, gone, live, busy, [this.rejected, this.opened, this.failed, this.retries, this.bytes, this.active, this.targetHealthy] as Counter<string>[]);
    this.active.reset();
    for (const [t, n] of active) this.active.set({ ...this.#service(t.namespace, t.service), cluster: t.cluster }, n);
  }
}

