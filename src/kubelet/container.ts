// What the kubelet makes of a container of a manifest: its environment (plain values, downward API fields,
// ConfigMap and Secret keys, `$(VAR)` expansion in order), its arguments (expanded against that environment),
// the host path behind each mount, and the URL of each httpGet probe. `ecnet local` and the deployment-shape
// tests start ecnet's components through this, so they run with what daemonset/ says, not with a copy of it.
// Pure.
import { EcnetError } from '../errors.js';

/** The parts of a pod template and a container that are read. */
export interface ContainerSpec {
  name: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  ports?: { name?: string; containerPort: number; protocol?: string }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  securityContext?: SecurityContext;
}

export interface SecurityContext {
  runAsUser?: number;
  runAsGroup?: number;
  /** Pod level: the group volumes' files belong to. */
  fsGroup?: number;
  /** Pod level: namespaced sysctls set in the pod's network namespace before its containers start. */
  sysctls?: { name: string; value: string }[];
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    fieldRef?: { fieldPath: string };
    configMapKeyRef?: { name: string; key: string; optional?: boolean };
    secretKeyRef?: { name: string; key: string; optional?: boolean };
  };
}

export interface Probe {
  httpGet?: { host?: string; port: number | string; path?: string; scheme?: string };
  tcpSocket?: { host?: string; port: number | string };
  periodSeconds?: number;
  failureThreshold?: number;
  timeoutSeconds?: number;
}

export interface PodSpec {
  hostNetwork?: boolean;
  securityContext?: SecurityContext;
  containers: ContainerSpec[];
  volumes?: { name: string; hostPath?: { path: string }; secret?: { secretName: string; optional?: boolean; defaultMode?: number } }[];
}

/** What the API server and the node know of a pod: the downward API's fields. */
export interface PodFacts {
  name: string;
  namespace: string;
  nodeName: string;
  hostIP: string;
  /** Every address of the node (dual stack: one per family); default [hostIP]. */
  hostIPs?: string[];
  /** The pod's address; a hostNetwork pod has the node's. */
  podIP: string;
  podIPs?: string[];
  serviceAccountName?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export class KubeletError extends EcnetError<'ECNET_KUBELET'> {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ECNET_KUBELET', message, options);
  }
}

/** The downward API's value of `fieldPath` (as the kubelet supports it for env). */
export function fieldValue(path: string, pod: PodFacts): string {
  const labelOrAnnotation = /^metadata\.(labels|annotations)\['([^']+)'\]$/.exec(path);
  if (labelOrAnnotation) return (labelOrAnnotation[1] === 'labels' ? pod.labels : pod.annotations)?.[labelOrAnnotation[2]!] ?? '';
  switch (path) {
    case 'metadata.name':
      return pod.name;
    case 'metadata.namespace':
      return pod.namespace;
    case 'spec.nodeName':
      return pod.nodeName;
    case 'spec.serviceAccountName':
      return pod.serviceAccountName ?? 'default';
    case 'status.hostIP':
      return pod.hostIP;
    case 'status.hostIPs':
      return (pod.hostIPs ?? [pod.hostIP]).join(',');
    case 'status.podIP':
      return pod.podIP;
    case 'status.podIPs':
      return (pod.podIPs ?? [pod.podIP]).join(',');
    default:
      throw new KubeletError(`unsupported fieldRef ${JSON.stringify(path)}`);
  }
}

/**
 * `$(VAR)` references replaced by the variable's value when it is defined, left as written when not;
 * `$$` is a literal `$` (so `$$(VAR)` stays `$(VAR)`), as the kubelet expands them.
 */
export function expand(text: string, vars: ReadonlyMap<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (whole, name: string | undefined) => {
    if (name === undefined) return '$';
    return vars.has(name) ? vars.get(name)! : whole;
  });
}

export type KeyedData = Record<string, Record<string, string>>;

/** The container's environment, in order: each value may refer to the variables defined before it. */
export function resolveEnv(c: ContainerSpec, pod: PodFacts, data: { configMaps?: KeyedData; secrets?: KeyedData } = {}): Map<string, string> {
  const vars = new Map<string, string>();
  for (const e of c.env ?? []) {
    const from = e.valueFrom;
    let value: string | undefined;
    if (!from) value = expand(e.value ?? '', vars);
    else if (from.fieldRef) value = fieldValue(from.fieldRef.fieldPath, pod);
    else {
      const ref = from.configMapKeyRef ?? from.secretKeyRef;
      const what = from.configMapKeyRef ? 'configmap' : 'secret';
      const store = from.configMapKeyRef ? data.configMaps : data.secrets;
      if (!ref) throw new KubeletError(`env ${e.name}: unsupported valueFrom`);
      value = store?.[ref.name]?.[ref.key];
      if (value === undefined && !ref.optional) {
        // The kubelet refuses to start the container (CreateContainerConfigError).
        throw new KubeletError(`env ${e.name}: ${what} ${JSON.stringify(ref.name)} has no key ${JSON.stringify(ref.key)}`);
      }
    }
    if (value !== undefined) vars.set(e.name, value);
  }
  return vars;
}

/** Container path → host path, for each mount of a hostPath volume. */
export function hostMounts(pod: PodSpec, c: ContainerSpec): { mountPath: string; hostPath: string }[] {
  const out: { mountPath: string; hostPath: string }[] = [];
  for (const m of c.volumeMounts ?? []) {
    const v = (pod.volumes ?? []).find((x) => x.name === m.name);
    if (v?.hostPath) out.push({ mountPath: m.mountPath.replace(/\/+$/, ''), hostPath: v.hostPath.path.replace(/\/+$/, '') });
  }
  // Longest first, so a nested mount wins over its parent.
  return out.sort((a, b) => b.mountPath.length - a.mountPath.length);
}

/** Container path → Secret name, for each mount of a Secret volume. */
export function secretMounts(pod: PodSpec, c: ContainerSpec): { mountPath: string; secretName: string }[] {
  const out: { mountPath: string; secretName: string }[] = [];
  for (const m of c.volumeMounts ?? []) {
    const v = (pod.volumes ?? []).find((x) => x.name === m.name);
    if (v?.secret) out.push({ mountPath: m.mountPath.replace(/\/+$/, ''), secretName: v.secret.secretName });
  }
  return out;
}

/** A container path as the host sees it (through the hostPath mounts), or undefined if none covers it. */
export function onHost(path: string, mounts: { mountPath: string; hostPath: string }[]): string | undefined {
  for (const m of mounts) {
    if (path === m.mountPath) return m.hostPath;
    if (path.startsWith(`${m.mountPath}/`)) return m.hostPath + path.slice(m.mountPath.length);
  }
  return undefined;
}

/** The container's command line (command + args), expanded against its environment. */
export function resolveArgs(c: ContainerSpec, env: ReadonlyMap<string, string>): string[] {
  return [...(c.command ?? []), ...(c.args ?? [])].map((a) => expand(a, env));
}

/** A probe's URL as the kubelet would request it (host: the pod's IP unless the probe names one). */
export function probeUrl(p: Probe, c: ContainerSpec, pod: PodFacts): string | undefined {
  const g = p.httpGet;
  if (!g) return undefined;
  const port = typeof g.port === 'number' ? g.port : c.ports?.find((x) => x.name === g.port)?.containerPort;
  if (port === undefined) throw new KubeletError(`probe port ${JSON.stringify(g.port)} names no port of container ${c.name}`);
  const host = g.host ?? pod.podIP;
  return `${(g.scheme ?? 'HTTP').toLowerCase()}://${host.includes(':') ? `[${host}]` : host}:${port}${g.path ?? '/'}`;
}

/** The user and group the container runs as (the container's securityContext over the pod's; root when unset). */
export function runAs(pod: PodSpec, c: ContainerSpec): { uid: number; gid: number } {
  const uid = c.securityContext?.runAsUser ?? pod.securityContext?.runAsUser ?? 0;
  const gid = c.securityContext?.runAsGroup ?? pod.securityContext?.runAsGroup ?? 0;
  return { uid, gid };
}
