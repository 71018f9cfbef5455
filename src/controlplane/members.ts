// One member cluster as the control-plane cluster sees it: the source its Cluster resource points to, the informers the
// controller reads there, and what it last knew of the member's exports (kept while the member is unreachable).
// It reads both APIs: flomesh.io, and the MCS API (multicluster.x-k8s.io), whose CRDs a member may not have: a
// member whose API server does not serve them (404) is read without them, and picks them up once they are there.
// And the EndpointSlices it wrote for MCS imports (by label selector): those only, and not needed to be readable.
import type { EndpointSlice, Secret, Service } from '../api/core.js';
import type { Cluster, ClusterKey, ServiceExport, ServiceImport } from '../api/flomesh.js';
import type { McsServiceExport, McsServiceImport } from '../api/mcs.js';
import type { Logger } from '../logger.js';
import { Backoff } from '../util/backoff.js';
import { type Clock, rfc3339 as iso } from '../util/time.js';
import { type Informer, Kinds, type KubeObject, type Source, SourceError, type WatchEvent, objectKey } from '../sources/source.js';
import { type ConditionInput, canonical } from './conditions.js';
import { MCS_SLICE_SELECTOR, isManagedSlice, mcsSliceName } from './member-plan.js';

/** Opens the source of a member from its Cluster resource (kubeconfig, Secret, or a local directory). */
export type MemberConnector = (cluster: Cluster) => Promise<Source>;

export const clusterKeyOf = (c: Cluster): ClusterKey => `${c.spec.region}/${c.spec.zone}/${c.spec.group}/${c.metadata.name}`;

/** The part of a Cluster that decides where its source is; a change reconnects. */
export const credentialsOf = (c: Cluster): string => canonical({ kubeconfig: c.spec.kubeconfig, ref: c.spec.kubeconfigSecretRef });

/** A Cluster as the API server would default it (its spec may be absent: the CRD does not require one). */
export function withDefaults(c: Cluster): Cluster {
  const spec = (typeof c.spec === 'object' && c.spec !== null ? c.spec : {}) as Partial<Cluster['spec']>;
  return { ...c, spec: { ...spec, region: spec.region ?? 'default', zone: spec.zone ?? 'default', group: spec.group ?? 'default', gatewayPort: spec.gatewayPort ?? 80 } };
}

/** An informer's objects: all of them, or those of the services (`namespace/name`) in scope, in scope order. */
export function cachedIn<T extends KubeObject>(inf: Informer<T>, scope: Set<string> | undefined): T[] {
  if (!scope) return inf.list();
  const out: T[] = [];
  for (const key of scope) {
    const [ns, name] = key.split('/') as [string, string];
    const o = name === undefined ? undefined : inf.get(name, ns);
    if (o) out.push(o);
  }
  return out;
}

/** A member's exports (of both APIs) and Services. */
export interface MemberObjects {
  exports: ServiceExport[];
  services: Service[];
  mcsExports: McsServiceExport[];
}

import { notServed } from '../sources/source.js';

export { notServed };

export type MemberState = 'connecting' | 'ready' | 'unreachable' | 'failed';

export class Member {
  readonly name: string;
  cluster: Cluster;
  readonly credentials: string;
  source: Source | undefined;
  exports: Informer<ServiceExport> | undefined;
  services: Informer<Service> | undefined;
  imports: Informer<ServiceImport> | undefined;
  mcsExports: Informer<McsServiceExport> | undefined;
  mcsImports: Informer<McsServiceImport> | undefined;
  /** The EndpointSlices ecnet wrote for MCS imports (listed by MCS_SLICE_SELECTOR). */
  mcsSlices: Informer<EndpointSlice & { apiVersion: string }> | undefined;
  /**
   * Its identity Secret (the one object of that name, by field selector) when the controller issues identities:
   * what the identity check reads instead of a GET on every resync. Not part of being readable.
   */
  identity: Informer<Secret> | undefined;
  /** Why connecting failed (bad kubeconfig, missing Secret …). */
  connectError: Error | undefined;
  /** Since when (clock ms) the member has not been readable; undefined while it is. */
  unreachableSince: number | undefined;
  /** Exports and services as of the last time the member was fully readable. */
  lastKnown: MemberObjects | undefined;
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
  async connect(connector: MemberConnector, onChange: (e?: WatchEvent) => void, log: Logger, clock: Clock, identity?: { namespace: string; name: string }): Promise<void> {
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
      this.mcsExports = source.informer<McsServiceExport>(Kinds.McsServiceExport, opts);
      this.mcsImports = source.informer<McsServiceImport>(Kinds.McsServiceImport, opts);
      // Not part of being readable: without them (no RBAC for EndpointSlices) imports are written as before.
      const onSliceHealth = (err: Error | undefined) => {
        if (err) log.warn({ member: this.name, err }, "cannot read the member's EndpointSlices; the MCS imports' slices wait");
        onChange();
      };
      this.mcsSlices = source.informer<EndpointSlice & { apiVersion: string }>(Kinds.EndpointSlice, { onEvent: opts.onEvent, onHealth: onSliceHealth, labelSelector: MCS_SLICE_SELECTOR });
      if (identity) {
        // A change of it (deleted, replaced by someone) calls for a full pass: that is when identities are checked.
        this.identity = source.informer<Secret>(Kinds.Secret, { namespace: identity.namespace, fieldSelector: `metadata.name=${identity.name}`, onEvent: () => onChange(), onHealth: () => undefined });
      }
      for (const i of this.#informers()) i.synced.then(() => onChange(), () => undefined);
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

  /**
   * Its exports and Services, all or those of the services in scope: from the informers once both have listed
   * (their caches keep the last known state while it is unreachable), else what an earlier connection knew.
   */
  view(scope: Set<string> | undefined): MemberObjects | undefined {
    if (this.exports?.isSynced && this.services?.isSynced && this.#listedOrNotServed(this.mcsExports)) {
      return { exports: cachedIn(this.exports, scope), services: cachedIn(this.services, scope), mcsExports: this.mcsExportsIn(scope) };
    }
    if (!this.lastKnown || !scope) return this.lastKnown;
    const has = (o: KubeObject) => scope.has(objectKey(o));
    return { exports: this.lastKnown.exports.filter(has), services: this.lastKnown.services.filter(has), mcsExports: this.lastKnown.mcsExports.filter(has) };
  }

  /** Its MCS exports (none while the kind is not served). */
  mcsExportsIn(scope: Set<string> | undefined): McsServiceExport[] {
    return this.mcsExports?.isSynced && !notServed(this.mcsExports) ? cachedIn(this.mcsExports, scope) : [];
  }

  /** Its MCS imports (none while the kind is not served). */
  mcsImportsIn(scope: Set<string> | undefined): McsServiceImport[] {
    return this.mcsImports?.isSynced && !notServed(this.mcsImports) ? cachedIn(this.mcsImports, scope) : [];
  }

  /**
   * The EndpointSlices ecnet wrote for the MCS imports of the services in scope (all: undefined scope); undefined
   * until they are listed (or if they cannot be: no RBAC for them), and then none is written or deleted there.
   */
  mcsSlicesIn(scope: Set<string> | undefined): EndpointSlice[] | undefined {
    const i = this.mcsSlices;
    if (!i?.isSynced) return undefined;
    if (!scope) return i.list().filter(isManagedSlice);
    const out: EndpointSlice[] = [];
    for (const key of scope) {
      const [ns, name] = key.split('/') as [string, string | undefined];
      const o = name === undefined ? undefined : i.get(mcsSliceName(name), ns);
      if (o && isManagedSlice(o)) out.push(o);
    }
    return out;
  }

  /** Whether MCS ServiceImports can be written there (its API server serves the kind). */
  get servesMcsImports(): boolean {
    return this.mcsImports !== undefined && !notServed(this.mcsImports);
  }

  #listedOrNotServed(i: Informer<KubeObject> | undefined): boolean {
    return i !== undefined && (i.isSynced || notServed(i));
  }

  #informers(): Informer<KubeObject>[] {
    const all = [this.exports, this.services, this.imports, this.mcsExports, this.mcsImports, this.mcsSlices] as (Informer<KubeObject> | undefined)[];
    return all.filter((i): i is Informer<KubeObject> => i !== undefined);
  }

  /** The identity Secret as its informer holds it (null: there is none), or undefined when that is not known. */
  heldIdentity(name: string, namespace: string): Secret | null | undefined {
    const i = this.identity;
    if (!i?.isSynced || !i.healthy) return undefined;
    return i.get(name, namespace) ?? null;
  }

  /** Every informer has its first list and is connected now (the MCS API's: or its kind is not served there). */
  get readable(): boolean {
    const core = [this.exports, this.services, this.imports];
    const mcs = [this.mcsExports, this.mcsImports];
    return core.every((i) => i?.isSynced && i.healthy) && mcs.every((i) => i !== undefined && ((i.isSynced && i.healthy) || notServed(i)));
  }

  get state(): MemberState {
    if (this.connectError) return 'failed';
    if (this.readable) return 'ready';
    return this.#informers().some((i) => i.isSynced) ? 'unreachable' : 'connecting';
  }

  get lastError(): Error | undefined {
    return this.connectError ?? this.#informers().find((i) => i.lastError && !notServed(i))?.lastError;
  }

  /** The Managed condition of its Cluster: connected, connecting, failed, or unreachable since when (and for how long its exports stay). */
  managedCondition(nowMs: number, timeoutMs: number): ConditionInput {
    const state = this.state;
    const since = this.unreachableSince;
    if (state === 'ready') return { type: 'Managed', status: 'True', reason: 'Connected', message: `reading ${this.source?.description ?? 'member'}` };
    if (state === 'failed') {
      const unreachable = this.connectError instanceof SourceError && this.connectError.code === 'ECNET_SOURCE_UNREACHABLE';
      return { type: 'Managed', status: 'False', reason: unreachable ? 'Unreachable' : 'InvalidCredentials', message: `${this.connectError?.message ?? 'cannot connect'} (retrying)` };
    }
    if (state === 'connecting') return { type: 'Managed', status: 'False', reason: 'Connecting', message: `not read yet${this.lastError ? `: ${this.lastError.message}` : ''}` };
    const withdrawn = since !== undefined && nowMs - since >= timeoutMs;
    return {
      type: 'Managed',
      status: 'False',
      reason: withdrawn ? 'ExportsWithdrawn' : 'Unreachable',
      message: withdrawn
        ? `unreachable since ${iso(since)}; its exports were withdrawn after ${timeoutMs / 1000}s: ${this.lastError?.message ?? ''}`
        : `unreachable since ${iso(since ?? nowMs)}; its exports are kept until ${iso((since ?? nowMs) + timeoutMs)}: ${this.lastError?.message ?? ''}`,
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#clock?.clearTimeout(this.#retry);
    for (const i of this.#informers()) i.close();
    this.identity?.close();
    this.source?.destroy();
  }
}
