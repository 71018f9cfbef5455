// The bodies of a create (POST) and a replace (PUT): what is left out of what the caller wants and what is kept
// of the live object (server-owned metadata, status, a Service's allocated addresses). Separate from the
// requests because it is the one place that knows which fields the API server owns.
import { isRecord } from '../util/objects.js';
import type { Json } from './kube-api.js';
import { apiVersionOf, type KindRef, type KubeObject } from './source.js';

/** Fields of metadata the server owns: never sent on create, always taken from the live object on update. */
const SERVER_OWNED_METADATA = [
  'resourceVersion',
  'uid',
  'creationTimestamp',
  'generation',
  'managedFields',
  'selfLink',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
] as const;

/** Service fields the API server allocates or defaults once and rejects (or re-allocates) when a PUT omits them. */
const SERVICE_ALLOCATED = ['clusterIP', 'clusterIPs', 'ipFamilies', 'ipFamilyPolicy', 'healthCheckNodePort'] as const;

export function bodyForCreate(desired: KubeObject, kind: KindRef, namespace: string | undefined): KubeObject {
  const body = structuredClone(desired);
  const meta = body.metadata as unknown as Json;
  for (const f of SERVER_OWNED_METADATA) delete meta[f];
  if (namespace) meta.namespace = namespace;
  delete body.status;
  body.apiVersion = apiVersionOf(kind);
  body.kind = kind.kind;
  return body;
}

/**
 * The PUT body that replaces `current` with `desired`: desired's fields, current's server-owned metadata and
 * status; labels, annotations, finalizers and ownerReferences stay as they are when desired leaves them unset;
 * a Service keeps what the server allocated (clusterIP(s), ipFamilies, node ports) unless desired sets it.
 */
export function bodyForUpdate(desired: KubeObject, current: KubeObject, kind: KindRef): KubeObject {
  const body = bodyForCreate(desired, kind, current.metadata.namespace);
  const meta = body.metadata as unknown as Json;
  const live = current.metadata as unknown as Json;
  for (const f of ['labels', 'annotations', 'finalizers', 'ownerReferences']) {
    if (meta[f] === undefined && live[f] !== undefined) meta[f] = structuredClone(live[f]);
  }
  for (const f of SERVER_OWNED_METADATA) {
    if (f !== 'managedFields' && live[f] !== undefined) meta[f] = live[f];
  }
  if (current.status !== undefined) body.status = structuredClone(current.status);
  if (kind.group === '' && kind.kind === 'Service' && isRecord(body.spec) && isRecord(current.spec)) {
    keepServiceAllocations(body.spec, current.spec);
  }
  return body;
}

function keepServiceAllocations(spec: Json, live: Json): void {
  if (spec.type === 'ExternalName' || live.type === 'ExternalName') return;
  for (const f of SERVICE_ALLOCATED) {
    if (spec[f] === undefined && live[f] !== undefined) spec[f] = structuredClone(live[f]);
  }
  const nodePorts = (t: unknown) => t === 'NodePort' || t === 'LoadBalancer';
  if (!nodePorts(spec.type) || !nodePorts(live.type) || !Array.isArray(spec.ports) || !Array.isArray(live.ports)) return;
  const protocol = (p: Json) => (typeof p.protocol === 'string' ? p.protocol : 'TCP');
  for (const p of spec.ports) {
    if (!isRecord(p) || p.nodePort !== undefined) continue;
    const was = live.ports.find((q): q is Json => isRecord(q) && q.port === p.port && protocol(q) === protocol(p));
    if (was?.nodePort !== undefined) p.nodePort = was.nodePort;
  }
}
