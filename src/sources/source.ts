// The one interface every component reads and writes resources through. Two implementations: kubernetes
// (client-node informers against an API server) and local (a directory of YAML per cluster). Nothing above this
// interface knows which one it runs on.
import { CONTROLLER_NAME } from '../defaults.js';
import type { ObjectMeta } from '../api/flomesh.js';
import { EcnetError } from '../errors.js';

/** Any Kubernetes object, as the API serves it. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec?: unknown;
  status?: unknown;
}

/** A kind as the API server addresses it. `group` is '' for the core group. */
export interface KindRef {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
}

export const apiVersionOf = (k: KindRef): string => (k.group ? `${k.group}/${k.version}` : k.version);

const kind = (group: string, version: string, k: string, plural: string, namespaced = true): KindRef => ({
  group,
  version,
  kind: k,
  plural,
  namespaced,
});

/** The kinds ecnet reads or writes. */
export const Kinds = {
  Cluster: kind('flomesh.io', 'v1alpha1', 'Cluster', 'clusters', false),
  ServiceExport: kind('flomesh.io', 'v1alpha1', 'ServiceExport', 'serviceexports'),
  ServiceImport: kind('flomesh.io', 'v1alpha1', 'ServiceImport', 'serviceimports'),
  GlobalTrafficPolicy: kind('flomesh.io', 'v1alpha1', 'GlobalTrafficPolicy', 'globaltrafficpolicies'),
  /** The MCS API (KEP-1645): same kind names as flomesh.io's, another group. */
  McsServiceExport: kind('multicluster.x-k8s.io', 'v1alpha1', 'ServiceExport', 'serviceexports'),
  McsServiceImport: kind('multicluster.x-k8s.io', 'v1alpha1', 'ServiceImport', 'serviceimports'),
  Namespace: kind('', 'v1', 'Namespace', 'namespaces', false),
  Service: kind('', 'v1', 'Service', 'services'),
  Secret: kind('', 'v1', 'Secret', 'secrets'),
  Pod: kind('', 'v1', 'Pod', 'pods'),
  Event: kind('', 'v1', 'Event', 'events'),
  EndpointSlice: kind('discovery.k8s.io', 'v1', 'EndpointSlice', 'endpointslices'),
} as const satisfies Record<string, KindRef>;
export type KindName = keyof typeof Kinds;

/** `namespace/name`, or `name` for cluster-scoped objects: the key of an object within its kind. */
export const objectKey = (o: { metadata: { name: string; namespace?: string } }): string =>
  o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;

/** The namespace and name of a namespaced object's key (`namespace/name`). */
export function keyParts(key: string): { namespace: string; name: string } {
  const slash = key.indexOf('/');
  return { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

export type WatchEventType = 'added' | 'updated' | 'deleted';
export interface WatchEvent<T extends KubeObject = KubeObject> {
  type: WatchEventType;
  object: T;
}

/**
 * A cache of one kind, kept in sync by list + watch. After `synced` resolves, `list()` is the source's state as of
 * the last event delivered. A broken watch keeps the cache (last known state) and restarts with backoff; `healthy`
 * says whether it is currently connected and `lastError` why not.
 */
export interface Informer<T extends KubeObject = KubeObject> {
  readonly kind: KindRef;
  /** Resolves once the first full list has been delivered; rejects only if the informer is closed before. */
  readonly synced: Promise<void>;
  readonly isSynced: boolean;
  readonly healthy: boolean;
  readonly lastError: Error | undefined;
  list(namespace?: string): T[];
  get(name: string, namespace?: string): T | undefined;
  /** Stops watching; idempotent. */
  close(): void;
}

export interface InformerOptions<T extends KubeObject> {
  /** Called for every change after the object reached the cache (also for the initial list, as `added`). */
  onEvent?: (event: WatchEvent<T>) => void;
  /** Called when the watch breaks (the informer restarts by itself) and when it recovers (undefined). */
  onHealth?: (error: Error | undefined) => void;
  namespace?: string;
  labelSelector?: string;
  /** `spec.nodeName=NAME` (what the agent asks of Pods; the local source knows no other field selector). */
  fieldSelector?: string;
}

export interface EventNote {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

/**
 * What must hold for a write to go ahead, so a controller never overwrites or deletes an object it did not
 * see: `absent` (create only), or `uid` (the very object it saw, not one created since under the same name).
 * A write whose precondition fails rejects with ECNET_SOURCE_CONFLICT.
 */
export type Precondition = { absent: true } | { uid: string };

export interface ApplyOptions {
  /** Who writes (kubernetes: fieldManager; local: logged). */
  manager: string;
  precondition?: Precondition;
  /**
   * What the caller last saw (an informer's copy): `null` for none, so the create is sent without a read first;
   * an object, so the replace is sent against its resourceVersion without a read first. A write that finds
   * the server moved on (409, or 404 on a replace) reads and tries again as without it. Sources without
   * requests to save ignore it.
   */
  seen?: KubeObject | null;
}

/**
 * Where resources come from. `apply` creates or replaces an object's spec, labels and annotations (never its
 * status); `writeStatus` replaces only the status, retrying on write conflicts. Failures reject with SourceError.
 */
export interface Source {
  /** For logs and errors: `kubernetes https://…` or `local /var/lib/ecnet/cluster-1`. */
  readonly description: string;
  informer<T extends KubeObject = KubeObject>(kind: KindRef, options?: InformerOptions<T>): Informer<T>;
  list<T extends KubeObject = KubeObject>(kind: KindRef, namespace?: string): Promise<T[]>;
  get<T extends KubeObject = KubeObject>(kind: KindRef, name: string, namespace?: string): Promise<T | undefined>;
  apply<T extends KubeObject = KubeObject>(object: T, options: ApplyOptions): Promise<T>;
  /** True if it existed. With `uid`, only that object is deleted (else ECNET_SOURCE_CONFLICT). */
  delete(kind: KindRef, name: string, namespace?: string, options?: { uid?: string }): Promise<boolean>;
  /**
   * Sets (a string) or removes (null) labels of an object and changes nothing else (a JSON merge patch): the one
   * write ecnet makes on objects it does not own. False if there is no such object.
   */
  label(kind: KindRef, name: string, namespace: string | undefined, labels: Record<string, string | null>): Promise<boolean>;
  /** `seen`: the object as last seen (its resourceVersion), to write without reading it first. */
  writeStatus(kind: KindRef, name: string, namespace: string | undefined, status: unknown, seen?: KubeObject): Promise<void>;
  /** Records a Kubernetes Event about `object` (best effort: never rejects). */
  event(object: KubeObject, note: EventNote): Promise<void>;
  /** Drains: stops informers, waits for writes in flight. Idempotent. */
  close(): Promise<void>;
  /** Aborts at once. Idempotent. */
  destroy(err?: Error): void;
}

export type SourceErrorCode =
  | 'ECNET_SOURCE_UNREACHABLE'
  | 'ECNET_SOURCE_CONFLICT'
  | 'ECNET_SOURCE_INVALID'
  | 'ECNET_SOURCE_NOT_FOUND'
  | 'ECNET_SOURCE_FORBIDDEN'
  | 'ECNET_SOURCE_CLOSED'
  | 'ECNET_SOURCE_IO';

export class SourceError extends EcnetError<SourceErrorCode> {
  /** HTTP status for the kubernetes source, when there was one. */
  readonly status: number | undefined;
  constructor(code: SourceErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(code, message, options);
    this.status = options?.status;
  }
}

/** Labels ecnet puts on what it creates; it never updates or deletes an object without them. */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = CONTROLLER_NAME;

/** The API server does not serve the kind (its CRD is not installed): the informer's list answers 404. */
export const notServed = (i: Informer<KubeObject> | undefined): boolean =>
  i !== undefined && !i.healthy && i.lastError instanceof SourceError && i.lastError.code === 'ECNET_SOURCE_NOT_FOUND';
