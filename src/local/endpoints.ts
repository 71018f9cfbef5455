// What Kubernetes' endpoints controller and DNS do, for a local cluster: the EndpointSlice of each Service
// from the running pods its selector matches, and the names pods resolve (a hosts file per pod). Pure.
import type { Service } from '../api/core.js';
import { type EndpointSlice, SERVICE_NAME_LABEL } from '../api/core.js';

/** A pod as `ecnet local run` records it. */
export interface LocalPod {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  /** Named ports, for Services whose targetPort names one (the gateway's `tunnel`). */
  spec?: { containers?: { name: string; ports?: { name?: string; containerPort: number }[] }[] };
  status?: { podIP?: string; phase?: string };
}

export const PID_ANNOTATION = 'ecnet.io/pid';
export const NETNS_ANNOTATION = 'ecnet.io/netns';
export const SLICE_SUFFIX = '-local';

const matches = (selector: Record<string, string> | undefined, labels: Record<string, string> | undefined) =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

/** A named container port of the pods (the pods of one workload share their ports). */
const namedPort = (pods: LocalPod[], name: string): number | undefined =>
  pods.flatMap((p) => p.spec?.containers ?? []).flatMap((c) => c.ports ?? []).find((x) => x.name === name)?.containerPort;

/** Labels Kubernetes' EndpointSlice controller does not copy from a Service to its slices (isReservedLabelKey). */
const RESERVED_SLICE_LABELS = new Set([SERVICE_NAME_LABEL, 'endpointslice.kubernetes.io/managed-by', 'service.kubernetes.io/headless']);
const copiedLabels = (labels: Record<string, string> | undefined): Record<string, string> =>
  Object.fromEntries(Object.entries(labels ?? {}).filter(([k]) => !RESERVED_SLICE_LABELS.has(k)));

/** The slice each selector Service should have; `alive` tells which pods run. */
export function desiredSlices(services: Service[], pods: LocalPod[], alive: (p: LocalPod) => boolean): EndpointSlice[] {
  const out: EndpointSlice[] = [];
  for (const s of services) {
    if (!s.spec.selector || !Object.keys(s.spec.selector).length) continue;
    const ns = s.metadata.namespace ?? 'default';
    const members = pods.filter((p) => (p.metadata.namespace ?? 'default') === ns && p.status?.podIP && matches(s.spec.selector, p.metadata.labels));
    out.push({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      // As Kubernetes' EndpointSlice controller does: the Service's labels but its reserved ones (a Service
      // labelled managed-by ecnet-controller must not pass its slices off as ecnet's), then the service-name label.
      metadata: { name: `${s.metadata.name}${SLICE_SUFFIX}`, namespace: ns, labels: { ...copiedLabels(s.metadata.labels), [SERVICE_NAME_LABEL]: s.metadata.name } },
      addressType: 'IPv4',
      endpoints: members.map((p) => ({ addresses: [p.status!.podIP!], conditions: { ready: alive(p) } })),
      ports: (s.spec.ports ?? []).map((p) => ({
        ...(p.name ? { name: p.name } : {}),
        port: typeof p.targetPort === 'number' ? p.targetPort : typeof p.targetPort === 'string' ? (namedPort(members, p.targetPort) ?? p.port) : p.port,
        protocol: p.protocol ?? 'TCP',
      })),
    });
  }
  return out;
}

/** A pod's /etc/hosts: itself, and every Service of its cluster by its short and full names. */
export function hostsText(pod: LocalPod, services: Service[]): string {
  const lines = ['127.0.0.1 localhost'];
  if (pod.status?.podIP) lines.push(`${pod.status.podIP} ${pod.metadata.name}`);
  for (const s of services) {
    const ip = s.spec.clusterIP;
    if (!ip || ip === 'None') continue;
    const n = `${s.metadata.name}.${s.metadata.namespace ?? 'default'}`;
    lines.push(`${ip} ${n} ${n}.svc ${n}.svc.cluster.local ${n}.svc.clusterset.local`);
  }
  return `${lines.join('\n')}\n`;
}
