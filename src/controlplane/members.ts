// One member cluster as the control-plane cluster sees it: the source its Cluster resource points to, the informers the
// controller reads there, and what it last knew of the member's exports (kept while the member is unreachable).
import type { Service } from '../api/core.js';
import type { Cluster, ClusterKey, ServiceExport, ServiceImport } from '../api/flomesh.js';
import type { Logger } from '../logger.js';
import { Backoff } from '../util/backoff.js';
import type { Clock } from '../util/time.js';
import { type Informer, Kinds, type KubeObject, type Source, type WatchEvent } from '../sources/source.js';
import { canonical } from './conditions.js';

/** Opens the source of a member from its Cluster resource (kubeconfig, Secret, or a local directory). */
export type MemberConnector = (cluster: Cluster) => Promise<Source>;

export const clusterKeyOf = (c: Cluster): ClusterKey => `${c.spec.region}/${c.spec.zone}/${c.spec.group}/${c.metadata.name}`;

/** The part of a Cluster that decides where its source is; a change reconnects. */
export const credentialsOf = (c: Cluster): string => canonical({ kubeconfig: c.spec.kubeconfig, ref: c.spec.kubeconfigSecretRef });

export type MemberState = 'connecting' | 'ready' | 'unreachable' | 'failed';

export class Member {
  readonly name: string;
  cluster: Cluster;
  readonly credentials: string;
  source: Source | undefined;
  exports: Informer<ServiceExport> | undefined;
  services: Informer<Service> | undefined;
  imports: Informer<ServiceImport> | undefined;
  /** Why connecting failed (bad kubeconfig, missing Secret …). */
  connectError: Error | undefined;
  /** Since when (clock ms) the member has not been readable; undefined while it is. */
  unreachableSince: number | undefined;
  /** Exports and services as of the last time the member was fully readable. */
  lastKnown: { exports: ServiceExport[]; services: Service[] } | undefined;
  readonly createdAt: number;
  #closed = false;
  #retry: unknown;
  #clock: Clock | undefined;
  readonly #backoff = new Backoff({ initialMs: 500, maxMs: 30_000, jitter: 0.3 });

  constructor(cluster: Cluster, now: number, credentials: string = credentialsOf(cluster)) {
    this.name = cluster.metadata.name;
    this.cluster = cluster;
    this.credentials = credentials;
    this.createdAt = now;
  }

  /**
   * Connects and starts the informers; `onChange` runs on every event and health change. A failure (a Secret
   * not there yet, an API server down) is retried with backoff until it works or the member is closed.
   */
  async connect(connector: MemberConnector, onChange: (e?: WatchEvent) => void, log: Logger, clock: Clock): Promise<void> {
    this.#clock = clock;
    try {
      const source = await connector(this.cluster);
      if (this.#closed) return void source.destroy();
      this.connectError = undefined;
      this.source = source;
      const onHealth = (err: Error | undefined) => {
        if (err) log.warn({ member: this.name, err }, 'member unreachable; keeping its last known exports');
        else log.info({ member: this.name }, 'member reachable');
        onChange();
      };
      const opts = { onEvent: (e: WatchEvent) => onChange(e), onHealth };
      this.exports = source.informer<ServiceExport>(Kinds.ServiceExport, opts);
      this.services = source.informer<Service>(Kinds.Service, opts);
      this.imports = source.informer<ServiceImport>(Kinds.ServiceImport, opts);
      for (const i of [this.exports, this.services, this.imports]) i.synced.then(() => onChange(), () => undefined);
    } catch (err) {
      this.connectError = err as Error;
      const delay = this.#backoff.next();
      log.warn({ member: this.name, err, retryMs: delay }, 'cannot connect to member');
      if (!this.#closed) {
        this.#retry = clock.setTimeout(() => void this.connect(connector, onChange, log, clock), delay);
        (this.#retry as { unref?: () => void }).unref?.();
      }
      onChange();
    }
  }

  #informers(): Informer<KubeObject>[] {
    const all = [this.exports, this.services, this.imports] as (Informer<KubeObject> | undefined)[];
    return all.filter((i): i is Informer<KubeObject> => i !== undefined);
  }

  /** Every informer has its first list and is connected now. */
  get readable(): boolean {
    const all = this.#informers();
    return all.length === 3 && all.every((i) => i.isSynced && i.healthy);
  }

  get state(): MemberState {
    if (this.connectError) return 'failed';
    if (this.readable) return 'ready';
    return this.#informers().some((i) => i.isSynced) ? 'unreachable' : 'connecting';
  }

  get lastError(): Error | undefined {
    return this.connectError ?? this.#informers().find((i) => i.lastError)?.lastError;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#clock?.clearTimeout(this.#retry);
    for (const i of this.#informers()) i.close();
    this.source?.destroy();
  }
}
