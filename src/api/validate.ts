// Validation of flomesh.io and multicluster.x-k8s.io (MCS API) resources: the schema, then what a schema cannot
// say (uniqueness, combinations).
// Never throws on user input: every problem comes back with its field path, and a valid document comes back
// with the defaults the API server would apply. Pure, no I/O.
import { isIP } from 'node:net';
import { API_VERSION, type FlomeshKind, type FlomeshResource, KINDS } from './flomesh.js';
import { MCS_API_VERSION, MCS_KINDS, type McsKind, type McsResource, isMcsApiVersion } from './mcs.js';
import { type Problem, normalize, validateSchema } from './schema.js';

/** `problems` are errors; `warnings` (unknown fields) do not make a document invalid. */
export type Validated =
  | { ok: true; resource: FlomeshResource | McsResource; problems: []; warnings: Problem[] }
  | { ok: false; problems: Problem[]; warnings: Problem[] };

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Whether a parsed document claims to be one of ours (apiVersion flomesh.io/v1alpha1 and a known kind). */
export function isFlomesh(doc: unknown): doc is { apiVersion: string; kind: FlomeshKind } {
  const d = doc as { apiVersion?: unknown; kind?: unknown } | null;
  return typeof d === 'object' && d !== null && d.apiVersion === API_VERSION && typeof d.kind === 'string' && d.kind in KINDS;
}

/**
 * Whether ecnet checks a document before taking it: any of flomesh.io or multicluster.x-k8s.io, whatever its
 * kind or version (an unknown one is refused, never passed over).
 */
export function isChecked(doc: unknown): boolean {
  const v = (doc as { apiVersion?: unknown } | null)?.apiVersion;
  return isFlomesh(doc) || (typeof v === 'string' && v.startsWith('flomesh.io/')) || isMcsApiVersion(v);
}

/** Checks a parsed document (from YAML or the API) as a flomesh.io or MCS API resource. */
export function validateResource(doc: unknown): Validated {
  const problems: Problem[] = [];
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    return { ok: false, problems: [{ path: '', message: 'must be an object with apiVersion, kind, metadata and spec' }], warnings: [] };
  }
  const d = doc as Record<string, unknown>;
  if (isMcsApiVersion(d.apiVersion)) return validateMcs(d);
  if (d.apiVersion !== API_VERSION) {
    problems.push({ path: 'apiVersion', message: `must be ${API_VERSION}, got ${JSON.stringify(d.apiVersion)}` });
  }
  if (typeof d.kind !== 'string' || !(d.kind in KINDS)) {
    problems.push({ path: 'kind', message: `must be one of ${Object.keys(KINDS).join(', ')}, got ${JSON.stringify(d.kind)}` });
    return { ok: false, problems, warnings: [] };
  }
  const info = KINDS[d.kind as FlomeshKind];
  const meta = d.metadata as Record<string, unknown> | undefined;
  const name = meta?.name;
  if (typeof name !== 'string' || name === '') {
    problems.push({ path: 'metadata.name', message: 'is required' });
  } else if (info.kind === 'Cluster' ? !DNS_LABEL.test(name) : name.length > 253 || !DNS_SUBDOMAIN.test(name)) {
    problems.push({
      path: 'metadata.name',
      message: `${JSON.stringify(name)} must be a DNS-1123 ${info.kind === 'Cluster' ? 'label' : 'subdomain'} (lower case letters, digits, '-')`,
    });
  }
  if (info.scope === 'Cluster' && meta?.namespace !== undefined) {
    problems.push({ path: 'metadata.namespace', message: `${info.kind} is cluster-scoped: it has no namespace` });
  }
  const spec = d.spec ?? {};
  const found = [...validateSchema(info.spec, spec, 'spec'), ...(d.status !== undefined ? validateSchema(info.status, d.status, 'status') : [])];
  const warnings = found.filter((p) => p.warning);
  problems.push(...found.filter((p) => !p.warning));
  if (!problems.length) problems.push(...semantics(info.kind, normalize(info.spec, spec) as Record<string, unknown>));
  if (problems.length) return { ok: false, problems, warnings };
  const resource = {
    ...d,
    spec: normalize(info.spec, spec),
    ...(d.status !== undefined ? { status: normalize(info.status, d.status) } : {}),
  } as unknown as FlomeshResource;
  return { ok: true, resource, problems: [], warnings };
}

const nameProblems = (meta: Record<string, unknown> | undefined): Problem[] => {
  const name = meta?.name;
  if (typeof name !== 'string' || name === '') return [{ path: 'metadata.name', message: 'is required' }];
  if (name.length > 253 || !DNS_SUBDOMAIN.test(name)) return [{ path: 'metadata.name', message: `${JSON.stringify(name)} must be a DNS-1123 subdomain (lower case letters, digits, '-')` }];
  return [];
};

/** An MCS API document: a ServiceExport (no spec; one given is pruned, with a warning, as the API server would) or a ServiceImport. */
function validateMcs(d: Record<string, unknown>): Validated {
  const problems: Problem[] = [];
  if (d.apiVersion !== MCS_API_VERSION) problems.push({ path: 'apiVersion', message: `must be ${MCS_API_VERSION}, got ${JSON.stringify(d.apiVersion)}` });
  if (typeof d.kind !== 'string' || !(d.kind in MCS_KINDS)) {
    problems.push({ path: 'kind', message: `must be one of ${Object.keys(MCS_KINDS).join(', ')}, got ${JSON.stringify(d.kind)}` });
    return { ok: false, problems, warnings: [] };
  }
  const info = MCS_KINDS[d.kind as McsKind];
  problems.push(...nameProblems(d.metadata as Record<string, unknown> | undefined));
  const warnings: Problem[] = [];
  if (!info.spec && d.spec !== undefined) warnings.push({ path: 'spec', message: `${info.kind} of ${MCS_API_VERSION} has no spec; dropped`, warning: true });
  const spec = info.spec ? (d.spec ?? {}) : undefined;
  const found = [...(info.spec ? validateSchema(info.spec, spec, 'spec') : []), ...(d.status !== undefined ? validateSchema(info.status, d.status, 'status') : [])];
  warnings.push(...found.filter((p) => p.warning));
  problems.push(...found.filter((p) => !p.warning));
  if (!problems.length && info.spec) problems.push(...portProblems((normalize(info.spec, spec) as { ports: { name?: string; protocol: string; port: number }[] }).ports));
  if (problems.length) return { ok: false, problems, warnings };
  const { spec: _dropped, ...rest } = d;
  const resource = {
    ...rest,
    ...(info.spec ? { spec: normalize(info.spec, spec) } : {}),
    ...(d.status !== undefined ? { status: normalize(info.status, d.status) } : {}),
  } as unknown as McsResource;
  return { ok: true, resource, problems: [], warnings };
}

/** Ports as a Service's must be: no name twice, no (port, protocol) twice. */
const portProblems = (ports: { name?: string; protocol: string; port: number }[]): Problem[] => [
  ...duplicates(ports.filter((p) => p.name), (p) => JSON.stringify(p.name), (i) => `spec.ports[${i}].name`, 'port name'),
  ...duplicates(ports, (p) => `${p.port}/${p.protocol}`, (i) => `spec.ports[${i}]`, 'port'),
];

function duplicates<T>(items: T[], key: (t: T) => string, path: (i: number) => string, what: string): Problem[] {
  const seen = new Map<string, number>();
  const out: Problem[] = [];
  items.forEach((item, i) => {
    const k = key(item);
    const first = seen.get(k);
    if (first === undefined) seen.set(k, i);
    else out.push({ path: path(i), message: `${what} ${k} is already at index ${first}` });
  });
  return out;
}

function semantics(kind: FlomeshKind, spec: Record<string, unknown>): Problem[] {
  switch (kind) {
    case 'Cluster': {
      const s = spec as { gatewayHost?: string; kubeconfig?: string; kubeconfigSecretRef?: unknown };
      const out: Problem[] = [];
      if (s.kubeconfig && s.kubeconfigSecretRef) {
        out.push({ path: 'spec.kubeconfigSecretRef', message: 'set either kubeconfig or kubeconfigSecretRef, not both' });
      }
      const host = s.gatewayHost;
      if (host && !isIP(host) && !DNS_SUBDOMAIN.test(host.toLowerCase())) {
        out.push({ path: 'spec.gatewayHost', message: `${JSON.stringify(host)} is neither an IP address nor a DNS name` });
      }
      return out;
    }
    case 'ServiceExport': {
      const s = spec as { rules?: { portNumber?: number; path?: string }[]; pathRewrite?: { from?: string } };
      const out = duplicates(s.rules ?? [], (r) => `${r.portNumber ?? '*'} ${r.path ?? '/'}`, (i) => `spec.rules[${i}]`, 'rule (port, path)');
      if (s.pathRewrite?.from !== undefined && s.pathRewrite.from !== '' && !s.pathRewrite.from.startsWith('/')) {
        out.push({ path: 'spec.pathRewrite.from', message: 'must start with /' });
      }
      return out;
    }
    case 'ServiceImport':
      return portProblems((spec as { ports: { name?: string; protocol: string; port: number }[] }).ports);
    case 'GlobalTrafficPolicy': {
      const s = spec as { lbType: string; targets?: { clusterKey: string }[] };
      const targets = s.targets ?? [];
      const out = duplicates(targets, (t) => t.clusterKey, (i) => `spec.targets[${i}].clusterKey`, 'cluster');
      if (s.lbType === 'Locality' && targets.length > 1) {
        out.push({ path: 'spec.targets', message: 'Locality takes at most one target (the cluster to keep traffic in)' });
      }
      return out;
    }
  }
}
