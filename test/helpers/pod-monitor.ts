// The Prometheus Operator's PodMonitor (monitoring.coreos.com/v1), checked by hand: kubernetes-models has no
// schema for it, and its CRD is not in this repository. The fields the operator defines, by object (a subset of
// the newest ones is enough: daemonset/monitoring/ uses few); a field outside them, or of the wrong type, is a
// problem, as the API server's structural schema would refuse it.
type Json = Record<string, any>;

const SPEC = new Set(['jobLabel', 'podTargetLabels', 'podMetricsEndpoints', 'selector', 'selectorMechanism', 'namespaceSelector', 'sampleLimit', 'targetLimit', 'labelLimit', 'labelNameLengthLimit', 'labelValueLengthLimit', 'keepDroppedTargets', 'attachMetadata', 'scrapeProtocols', 'fallbackScrapeProtocol', 'scrapeClass', 'bodySizeLimit', 'nativeHistogramBucketLimit', 'nativeHistogramMinBucketFactor', 'scrapeClassicHistograms', 'convertClassicHistogramsToNHCB']);
const ENDPOINT = new Set(['port', 'portNumber', 'targetPort', 'path', 'scheme', 'params', 'interval', 'scrapeTimeout', 'honorLabels', 'honorTimestamps', 'trackTimestampsStaleness', 'metricRelabelings', 'relabelings', 'proxyUrl', 'noProxy', 'proxyFromEnvironment', 'proxyConnectHeader', 'followRedirects', 'enableHttp2', 'filterRunning', 'basicAuth', 'bearerTokenSecret', 'authorization', 'oauth2', 'tls']);
const RELABEL = new Set(['sourceLabels', 'separator', 'targetLabel', 'regex', 'modulus', 'replacement', 'action']);
const ACTIONS = new Set(['replace', 'keep', 'drop', 'hashmod', 'labelmap', 'labeldrop', 'labelkeep', 'lowercase', 'uppercase', 'keepequal', 'dropequal']);
const DURATION = /^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$/;

export function podMonitorProblems(doc: Json): string[] {
  const out: string[] = [];
  const unknown = (where: string, o: Json, known: Set<string>) => {
    for (const k of Object.keys(o ?? {})) if (!known.has(k)) out.push(`${where}.${k}: not a field of PodMonitor`);
  };
  if (doc.apiVersion !== 'monitoring.coreos.com/v1' || doc.kind !== 'PodMonitor') return [`${doc.apiVersion} ${doc.kind} is not a PodMonitor`];
  if (typeof doc.metadata?.name !== 'string') out.push('metadata.name: required');
  const spec = doc.spec as Json | undefined;
  if (!spec) return [...out, 'spec: required'];
  unknown('spec', spec, SPEC);
  if (typeof spec.selector !== 'object') out.push('spec.selector: required');
  for (const [k, v] of Object.entries((spec.selector?.matchLabels ?? {}) as Json)) if (typeof v !== 'string') out.push(`spec.selector.matchLabels.${k}: not a string`);
  if (spec.namespaceSelector && !Array.isArray(spec.namespaceSelector.matchNames) && spec.namespaceSelector.any !== true) out.push('spec.namespaceSelector: matchNames (a list) or any: true');
  if (!Array.isArray(spec.podMetricsEndpoints)) return [...out, 'spec.podMetricsEndpoints: a list'];
  spec.podMetricsEndpoints.forEach((e: Json, i: number) => {
    const where = `spec.podMetricsEndpoints[${i}]`;
    unknown(where, e, ENDPOINT);
    if (e.port !== undefined && typeof e.port !== 'string') out.push(`${where}.port: the name of a container port (a string)`);
    if (e.portNumber !== undefined && !(Number.isInteger(e.portNumber) && e.portNumber > 0 && e.portNumber < 65536)) out.push(`${where}.portNumber: 1..65535`);
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
