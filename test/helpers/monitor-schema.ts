// The Prometheus Operator's PodMonitor and ServiceMonitor (monitoring.coreos.com/v1), checked by hand:
// kubernetes-models has no schema for them, and their CRDs are not in this repository. The fields the operator
// defines, by object (a subset of the newest ones is enough: daemonset/monitoring/ uses few); a field outside
// them, or of the wrong type, is a problem, as the API server's structural schema would refuse it.
type Json = Record<string, any>;

/** What PodMonitorSpec and ServiceMonitorSpec share. */
const SPEC = ['jobLabel', 'podTargetLabels', 'selector', 'selectorMechanism', 'namespaceSelector', 'sampleLimit', 'targetLimit', 'labelLimit', 'labelNameLengthLimit', 'labelValueLengthLimit', 'keepDroppedTargets', 'attachMetadata', 'scrapeProtocols', 'fallbackScrapeProtocol', 'scrapeClass', 'bodySizeLimit', 'scrapeNativeHistograms', 'nativeHistogramBucketLimit', 'nativeHistogramMinBucketFactor', 'scrapeClassicHistograms', 'convertClassicHistogramsToNHCB'];
/** What PodMetricsEndpoint and (the ServiceMonitor's) Endpoint share. */
const ENDPOINT = ['port', 'targetPort', 'path', 'scheme', 'params', 'interval', 'scrapeTimeout', 'honorLabels', 'honorTimestamps', 'trackTimestampsStaleness', 'metricRelabelings', 'relabelings', 'proxyUrl', 'noProxy', 'proxyFromEnvironment', 'proxyConnectHeader', 'followRedirects', 'enableHttp2', 'filterRunning', 'basicAuth', 'bearerTokenSecret', 'authorization', 'oauth2', 'tlsConfig'];
const RELABEL = new Set(['sourceLabels', 'separator', 'targetLabel', 'regex', 'modulus', 'replacement', 'action']);
const ACTIONS = new Set(['replace', 'keep', 'drop', 'hashmod', 'labelmap', 'labeldrop', 'labelkeep', 'lowercase', 'uppercase', 'keepequal', 'dropequal']);
const DURATION = /^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$/;

interface Shape {
  kind: 'PodMonitor' | 'ServiceMonitor';
  spec: Set<string>;
  /** The spec's list of endpoints. */
  endpoints: string;
  endpoint: Set<string>;
  /** Checks of one endpoint of this kind beyond the shared ones. */
  endpointProblems: (e: Json, where: string) => string[];
}

const isPort = (n: unknown) => Number.isInteger(n) && (n as number) > 0 && (n as number) < 65536;

export const POD_MONITOR: Shape = {
  kind: 'PodMonitor',
  spec: new Set([...SPEC, 'podMetricsEndpoints']),
  endpoints: 'podMetricsEndpoints',
  endpoint: new Set([...ENDPOINT, 'portNumber']),
  endpointProblems: (e, where) => [
    ...(e.port !== undefined && typeof e.port !== 'string' ? [`${where}.port: the name of a container port (a string)`] : []),
    ...(e.portNumber !== undefined && !isPort(e.portNumber) ? [`${where}.portNumber: 1..65535`] : []),
  ],
};

export const SERVICE_MONITOR: Shape = {
  kind: 'ServiceMonitor',
  spec: new Set([...SPEC, 'endpoints', 'targetLabels', 'serviceDiscoveryRole']),
  endpoints: 'endpoints',
  endpoint: new Set([...ENDPOINT, 'bearerTokenFile']),
  endpointProblems: (e, where) => [
    ...(e.port !== undefined && typeof e.port !== 'string' ? [`${where}.port: the name of a Service port (a string)`] : []),
    ...(e.targetPort !== undefined && !(isPort(e.targetPort) || (typeof e.targetPort === 'string' && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(e.targetPort))) ? [`${where}.targetPort: a port number or a port name`] : []),
    // The operator: "Mutually exclusive with targetPort".
    ...(e.port !== undefined && e.targetPort !== undefined ? [`${where}: port and targetPort are mutually exclusive`] : []),
  ],
};

export function monitorProblems(doc: Json, shape: Shape): string[] {
  const out: string[] = [];
  const unknown = (where: string, o: Json, known: Set<string>) => {
    for (const k of Object.keys(o ?? {})) if (!known.has(k)) out.push(`${where}.${k}: not a field of ${shape.kind}`);
  };
  if (doc.apiVersion !== 'monitoring.coreos.com/v1' || doc.kind !== shape.kind) return [`${doc.apiVersion} ${doc.kind} is not a ${shape.kind}`];
  if (typeof doc.metadata?.name !== 'string') out.push('metadata.name: required');
  const spec = doc.spec as Json | undefined;
  if (!spec) return [...out, 'spec: required'];
  unknown('spec', spec, shape.spec);
  if (typeof spec.selector !== 'object') out.push('spec.selector: required');
  for (const [k, v] of Object.entries((spec.selector?.matchLabels ?? {}) as Json)) if (typeof v !== 'string') out.push(`spec.selector.matchLabels.${k}: not a string`);
  if (spec.namespaceSelector && !Array.isArray(spec.namespaceSelector.matchNames) && spec.namespaceSelector.any !== true) out.push('spec.namespaceSelector: matchNames (a list) or any: true');
  const endpoints = spec[shape.endpoints] as unknown;
  if (!Array.isArray(endpoints)) return [...out, `spec.${shape.endpoints}: a list`];
  endpoints.forEach((e: Json, i: number) => {
    const where = `spec.${shape.endpoints}[${i}]`;
    unknown(where, e, shape.endpoint);
    out.push(...shape.endpointProblems(e, where));
    if (e.path !== undefined && (typeof e.path !== 'string' || !e.path.startsWith('/'))) out.push(`${where}.path: an absolute path`);
    if (e.honorLabels !== undefined && typeof e.honorLabels !== 'boolean') out.push(`${where}.honorLabels: a boolean`);
    for (const f of ['interval', 'scrapeTimeout']) if (e[f] !== undefined && !(typeof e[f] === 'string' && DURATION.test(e[f]))) out.push(`${where}.${f}: a Prometheus duration`);
    for (const f of ['relabelings', 'metricRelabelings']) {
      ((e[f] ?? []) as Json[]).forEach((r, j) => {
        unknown(`${where}.${f}[${j}]`, r, RELABEL);
        if (r.action !== undefined && !ACTIONS.has(String(r.action).toLowerCase())) out.push(`${where}.${f}[${j}].action: ${r.action}`);
        if (r.sourceLabels !== undefined && !(Array.isArray(r.sourceLabels) && r.sourceLabels.every((l: unknown) => typeof l === 'string' && /^[a-zA-Z_][a-zA-Z0-9_]*$/.test(l)))) out.push(`${where}.${f}[${j}].sourceLabels: label names`);
        const action = String(r.action ?? 'replace').toLowerCase();
        if ((action === 'replace' || action === 'hashmod') && typeof r.targetLabel !== 'string') out.push(`${where}.${f}[${j}].targetLabel: required for ${action}`);
      });
    }
  });
  return out;
}

/** The problems of any monitoring.coreos.com object daemonset/monitoring/ may hold (other kinds are problems). */
export function prometheusOperatorProblems(doc: Json): string[] {
  if (doc.kind === 'PodMonitor') return monitorProblems(doc, POD_MONITOR);
  if (doc.kind === 'ServiceMonitor') return monitorProblems(doc, SERVICE_MONITOR);
  return [`${doc.apiVersion} ${doc.kind}: no checker for this kind in test/helpers/monitor-schema.ts`];
}
