// Scraping ecnet: each component's manifest serves /metrics where its annotations, its declared port, the
// metrics Services and ServiceMonitors of daemonset/monitoring/ and the PodMonitors of
// daemonset/monitoring/podmonitors/ point (the port through the real config reader), and the Grafana dashboard
// there asks only for metric families and labels the code really registers.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { AgentMetrics } from '../src/agent/metrics.js';
import { agentConfig, controllerConfig, gatewayConfig } from '../src/config.js';
import { ControllerMetrics } from '../src/controlplane/metrics.js';
import { GatewayMetrics } from '../src/gateway/metrics.js';
import { componentRegistry } from '../src/metrics/registry.js';
import { packageRoot } from '../src/paths.js';
import { ProxyMetrics } from '../src/proxy/metrics.js';
import { podMonitorProblems } from './helpers/pod-monitor.js';
import { serviceMonitorProblems } from './helpers/service-monitor.js';

type Json = Record<string, any>;
const dir = join(packageRoot, 'daemonset');
const NS = 'ecnet-system';
const METRICS_PORT = 15090;
const DASHBOARD = join(dir, 'monitoring', 'dashboard', 'grafana-dashboard.json');
const haveKubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;
const docsOf = (file: string): Json[] => parseAllDocuments(readFileSync(join(dir, file), 'utf8')).map((d) => d.toJS() as Json).filter(Boolean);

/** `--name=value` / `--flag` arguments as commander hands them (camelCase keys). */
function flagsOf(args: string[]): Json {
  const out: Json = {};
  for (const a of args) {
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(a);
    if (m) out[m[1]!.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())] = m[2] ?? true;
  }
  return out;
}

const workloads = {
  agent: { doc: docsOf('agent/daemonset.yaml').find((d) => d.kind === 'DaemonSet')!, config: agentConfig },
  gateway: { doc: docsOf('gateway/deployment.yaml').find((d) => d.kind === 'Deployment')!, config: gatewayConfig },
  controller: { doc: docsOf('control-plane/deployment.yaml').find((d) => d.kind === 'Deployment')!, config: controllerConfig },
};
type Component = keyof typeof workloads;
const components = Object.keys(workloads) as Component[];
const container = (c: Component) => workloads[c].doc.spec.template.spec.containers[0] as Json;

/** What the component's config reader makes of its manifest's args and literal env (and what the downward API would give). */
function metricsOf(c: Component): { ip: string; port: number } | undefined {
  const k = container(c);
  const env: Record<string, string> = { ECNET_CLUSTER_KEY: 'default/default/default/cluster-1', POD_NAME: 'ecnet-controller-0', POD_NAMESPACE: NS, NODE_IP: '10.0.2.4' };
  for (const e of (k.env ?? []) as Json[]) if (typeof e.value === 'string') env[e.name] = e.value;
  // The kubelet expands $(VAR) in args from the container's env.
  const args = (k.args as string[]).map((a) => a.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => env[v] ?? ''));
  return (workloads[c].config as (f: Json, e: NodeJS.ProcessEnv) => { metrics?: { ip: string; port: number } })(flagsOf(args), env).metrics;
}

describe('each component serves /metrics where its manifest says', () => {
  it.each(components)('%s: listens on port 15090 of every address of its pod, and its pod template says so to annotation-based scrapers', (c) => {
    expect(metricsOf(c)).toEqual({ ip: '0.0.0.0', port: METRICS_PORT });
    expect(workloads[c].doc.spec.template.metadata.annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(METRICS_PORT), 'prometheus.io/path': '/metrics' });
  });

  it('the gateway and the controller declare the port as `metrics`; the agent, in the host network, declares none', () => {
    for (const c of ['gateway', 'controller'] as const) {
      expect(container(c).ports.filter((p: Json) => p.name === 'metrics'), c).toEqual([{ name: 'metrics', containerPort: METRICS_PORT, protocol: 'TCP' }]);
    }
    // A container port of a host-network pod is a host port: the surge agent of an upgrade could not be
    // scheduled next to the old one (test/daemonset.test.ts). Scrapers get the port from the annotations,
    // the agent's metrics Service (a targetPort number) and its PodMonitor.
    expect(workloads.agent.doc.spec.template.spec.hostNetwork).toBe(true);
    expect(container('agent').ports).toBeUndefined();
  });
});

/** Whether a label selector (matchLabels only, as daemonset/ writes them) selects an object with these labels. */
function selects(selector: Json, labels: Record<string, string> | undefined): boolean {
  expect(selector.matchExpressions).toBeUndefined();
  const want = Object.entries((selector.matchLabels ?? {}) as Record<string, string>);
  return want.length > 0 && want.every(([k, v]) => labels?.[k] === v);
}

/** Every Service daemonset/ holds, with the label every kustomization there adds (as they are once applied). */
function allServices(): Json[] {
  const walk = (d: string): string[] => readdirSync(d).flatMap((f) => (statSync(join(d, f)).isDirectory() ? walk(join(d, f)) : [join(d, f)]));
  return walk(dir)
    .filter((f) => f.endsWith('.yaml') && !f.endsWith('/kustomization.yaml'))
    .flatMap((f) => docsOf(relative(dir, f)))
    .filter((d) => d.kind === 'Service')
    .map((d) => ({ ...d, metadata: { ...d.metadata, labels: { ...d.metadata.labels, 'app.kubernetes.io/part-of': 'ecnet' } } }));
}

describe('daemonset/monitoring/: ServiceMonitors (the default)', () => {
  const services = docsOf('monitoring/metrics-services.yaml');
  const monitors = docsOf('monitoring/servicemonitors.yaml');
  const kust = parse(readFileSync(join(dir, 'monitoring', 'kustomization.yaml'), 'utf8')) as Json;
  const dashboardKust = parse(readFileSync(join(dir, 'monitoring', 'dashboard', 'kustomization.yaml'), 'utf8')) as Json;
  const componentOf = (name: string) => name.replace(/^ecnet-/, '').replace(/-metrics$/, '') as Component;

  it('is optional: not in daemonset/\'s kustomization, which needs no Prometheus Operator', () => {
    const top = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Json;
    expect((top.resources as string[]).some((r) => r.startsWith('monitoring'))).toBe(false);
  });

  it('lists the metrics Services, the ServiceMonitors and the dashboard, not the PodMonitors (they would scrape every pod twice)', () => {
    expect(kust.resources).toEqual(['metrics-services.yaml', 'servicemonitors.yaml', 'dashboard']);
    expect((kust.resources as string[]).some((r) => r.startsWith('podmonitors'))).toBe(false);
  });

  it('has a headless metrics Service per component, selecting exactly its pods, on the port its container really listens on', () => {
    expect(services.map((s) => s.metadata.name).sort()).toEqual(['ecnet-agent-metrics', 'ecnet-controller-metrics', 'ecnet-gateway-metrics']);
    for (const s of services) {
      const name = s.metadata.name as string;
      const c = componentOf(name);
      expect(s.metadata.namespace, name).toBe(NS);
      expect(s.metadata.labels['ecnet.io/metrics'], name).toBe('true');
      // Only for scraping: no cluster IP to load-balance through, no node port, no load balancer.
      expect(s.spec.clusterIP, name).toBe('None');
      expect(s.spec.type ?? 'ClusterIP', name).toBe('ClusterIP');
      // Its component's pods, and not the others'.
      expect(selects({ matchLabels: s.spec.selector }, workloads[c].doc.spec.template.metadata.labels), name).toBe(true);
      for (const other of components.filter((o) => o !== c)) expect(selects({ matchLabels: s.spec.selector }, workloads[other].doc.spec.template.metadata.labels), `${name} selects ${other}`).toBe(false);
      expect(s.spec.ports, name).toHaveLength(1);
      const [port] = s.spec.ports as Json[];
      expect(port, name).toMatchObject({ name: 'metrics', port: METRICS_PORT, protocol: 'TCP' });
      if (typeof port!.targetPort === 'string') {
        // A named port: the one the container declares, on the port it listens on.
        expect(container(c).ports.find((p: Json) => p.name === port!.targetPort)?.containerPort, name).toBe(METRICS_PORT);
      } else {
        // The agent declares no port to name (a host port, in the host network): the number ECNET_METRICS
        // has it listen on, on the pod's IP, the node's.
        expect(container(c).ports, name).toBeUndefined();
        expect(port!.targetPort, name).toBe(metricsOf(c)?.port);
      }
    }
    expect(services.find((s) => s.metadata.name === 'ecnet-agent-metrics')!.spec.ports[0].targetPort).toBe(METRICS_PORT);
  });

  it('leaves the gateway\'s external Service alone: no metrics port through it, and no label a ServiceMonitor selects', () => {
    const external = docsOf('gateway/service.yaml').find((d) => d.kind === 'Service' && d.metadata.name === 'ecnet-gateway')!;
    expect(external.spec.type).toBe('LoadBalancer');
    expect(external.metadata.labels['ecnet.io/metrics']).toBeUndefined();
    for (const p of external.spec.ports as Json[]) {
      expect(p.targetPort).not.toBe('metrics');
      expect(p.targetPort).not.toBe(METRICS_PORT);
      expect(p.port).not.toBe(METRICS_PORT);
    }
  });

  it('has a valid ServiceMonitor per component, selecting exactly its metrics Service, scraping its `metrics` port', () => {
    const everyService = allServices();
    expect(everyService.map((s) => s.metadata.name)).toContain('ecnet-gateway');
    expect(monitors.map((m) => m.metadata.name).sort()).toEqual(['ecnet-agent', 'ecnet-controller', 'ecnet-gateway']);
    for (const m of monitors) {
      const name = m.metadata.name as string;
      const c = componentOf(name);
      expect(serviceMonitorProblems(m), name).toEqual([]);
      expect(m.metadata.namespace).toBe(NS);
      expect(m.spec.namespaceSelector.matchNames, name).toEqual([NS]);
      // Of every Service in daemonset/, once labelled as applied (the gateway's external one included): its own.
      const selected = everyService.filter((s) => s.metadata.namespace === NS && selects(m.spec.selector, s.metadata.labels));
      expect(selected.map((s) => s.metadata.name), name).toEqual([`ecnet-${c}-metrics`]);
      expect(m.spec.endpoints, name).toHaveLength(1);
      const [ep] = m.spec.endpoints as Json[];
      expect(selected[0]!.spec.ports.map((p: Json) => p.name), name).toContain(ep!.port);
      expect(ep, name).toEqual({
        port: 'metrics',
        path: workloads[c].doc.spec.template.metadata.annotations['prometheus.io/path'],
        interval: '15s',
        // ecnet's own namespace and service labels stay theirs (not exported_namespace, exported_service).
        honorLabels: true,
        relabelings: [{ sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' }],
      });
    }
  });

  it('the checker of ServiceMonitors is not a rubber stamp', () => {
    const bad = structuredClone(monitors[0]!);
    // A PodMonitor's field, and both port and targetPort.
    bad.spec.endpoints[0].portNumber = METRICS_PORT;
    bad.spec.endpoints[0].targetPort = METRICS_PORT;
    bad.spec.endpoints[0].relabelings[0].action = 'rewrite';
    expect(serviceMonitorProblems(bad)).toHaveLength(3);
    expect(serviceMonitorProblems({ ...monitors[0]!, kind: 'PodMonitor' })).toHaveLength(1);
  });

  it('generates the dashboard ConfigMap with the Grafana sidecar\'s label (daemonset/monitoring/dashboard/)', () => {
    const [gen] = dashboardKust.configMapGenerator as Json[];
    expect(gen!.options.labels).toEqual({ grafana_dashboard: '1' });
    expect(gen!.files).toEqual(['ecnet.json=grafana-dashboard.json']);
  });
});

describe('daemonset/monitoring/podmonitors/: PodMonitors (the alternative)', () => {
  const monitors = docsOf('monitoring/podmonitors/podmonitors.yaml');
  const kust = parse(readFileSync(join(dir, 'monitoring', 'podmonitors', 'kustomization.yaml'), 'utf8')) as Json;

  it('lists the PodMonitors and the same dashboard, no metrics Service, no ServiceMonitor', () => {
    expect(kust.resources).toEqual(['podmonitors.yaml', '../dashboard']);
  });

  it('has a valid PodMonitor per component, selecting its pods by labels they carry, in their namespace', () => {
    expect(monitors.map((m) => m.metadata.name).sort()).toEqual(['ecnet-agent', 'ecnet-controller', 'ecnet-gateway']);
    for (const m of monitors) {
      expect(podMonitorProblems(m), m.metadata.name).toEqual([]);
      const c = m.metadata.name.replace('ecnet-', '') as Component;
      const { doc } = workloads[c];
      const labels = doc.spec.template.metadata.labels as Record<string, string>;
      expect(Object.keys(m.spec.selector.matchLabels).length, m.metadata.name).toBeGreaterThan(0);
      expect(labels, m.metadata.name).toMatchObject(m.spec.selector.matchLabels);
      // Not the other components' pods.
      for (const other of components.filter((o) => o !== c)) expect(workloads[other].doc.spec.template.metadata.labels).not.toMatchObject(m.spec.selector.matchLabels);
      expect(m.spec.namespaceSelector.matchNames).toContain(doc.metadata.namespace);
      expect(m.metadata.namespace).toBe(NS);
      const [ep] = m.spec.podMetricsEndpoints as Json[];
      expect(ep!.path).toBe(doc.spec.template.metadata.annotations['prometheus.io/path']);
      // ecnet's own namespace and service labels stay theirs (not exported_namespace, exported_service).
      expect(ep!.honorLabels, m.metadata.name).toBe(true);
      if (ep!.port !== undefined) {
        expect(container(c).ports.find((p: Json) => p.name === ep!.port)?.containerPort, m.metadata.name).toBe(METRICS_PORT);
      } else {
        // No port to name (the agent): the address is set to the pod's IP and the port the agent listens on.
        const address = (ep!.relabelings as Json[]).find((r) => r.targetLabel === '__address__');
        expect(address).toEqual({ sourceLabels: ['__meta_kubernetes_pod_ip'], targetLabel: '__address__', replacement: `\${1}:${METRICS_PORT}` });
        expect(metricsOf(c)?.port).toBe(METRICS_PORT);
        const keep = (ep!.relabelings as Json[]).find((r) => r.action === 'keep');
        expect(keep).toMatchObject({ sourceLabels: ['__meta_kubernetes_pod_container_name'], regex: container(c).name });
      }
    }
  });

  it('the checker of PodMonitors is not a rubber stamp', () => {
    const bad = structuredClone(monitors[0]!);
    bad.spec.podMetricsEndpoints[0].intervall = '15s';
    bad.spec.podMetricsEndpoints[0].relabelings[0].action = 'rewrite';
    expect(podMonitorProblems(bad)).toHaveLength(2);
  });
});

describe.skipIf(!haveKubectl)('daemonset/monitoring/ with kubectl kustomize (skipped without kubectl)', () => {
  const render = (d: string): Json[] => {
    const r = spawnSync('kubectl', ['kustomize', join(dir, d)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`kubectl kustomize daemonset/${d}: ${r.stderr}`);
    return parseAllDocuments(r.stdout).map((d) => d.toJS() as Json);
  };
  const ids = (docs: Json[]) => docs.map((d) => `${d.kind}/${d.metadata.name}`).sort();
  const checkCommon = (docs: Json[]) => {
    for (const d of docs) {
      expect(d.metadata.namespace).toBe(NS);
      expect(d.metadata.labels['app.kubernetes.io/part-of']).toBe('ecnet');
    }
    const cm = docs.find((d) => d.kind === 'ConfigMap')!;
    expect(cm.metadata.labels.grafana_dashboard).toBe('1');
    expect(cm.data['ecnet.json']).toBe(readFileSync(DASHBOARD, 'utf8'));
    // kubectl apply (client side) keeps the whole object in an annotation, at most 256 KiB.
    expect(Buffer.byteLength(JSON.stringify(cm))).toBeLessThan(200 * 1024);
  };

  it('daemonset/monitoring renders the metrics Services, the ServiceMonitors and the dashboard, in ecnet-system', () => {
    const docs = render('monitoring');
    expect(ids(docs)).toEqual([
      'ConfigMap/ecnet-grafana-dashboard',
      'Service/ecnet-agent-metrics', 'Service/ecnet-controller-metrics', 'Service/ecnet-gateway-metrics',
      'ServiceMonitor/ecnet-agent', 'ServiceMonitor/ecnet-controller', 'ServiceMonitor/ecnet-gateway',
    ]);
    checkCommon(docs);
    // As applied next to daemonset/ and daemonset/control-plane: each ServiceMonitor selects its metrics Service
    // alone, and each metrics Service its component's pods alone (the kustomizations' labels leave selectors be).
    const installed = [...render('.'), ...render('control-plane'), ...docs];
    const services = installed.filter((d) => d.kind === 'Service');
    const pods = installed.filter((d) => d.spec?.template?.metadata?.labels);
    for (const m of docs.filter((d) => d.kind === 'ServiceMonitor')) {
      const svc = services.filter((s) => selects(m.spec.selector, s.metadata.labels));
      expect(svc.map((s) => s.metadata.name), m.metadata.name).toEqual([`${m.metadata.name}-metrics`]);
      const backing = pods.filter((p) => selects({ matchLabels: svc[0]!.spec.selector }, p.spec.template.metadata.labels));
      expect(backing.map((p) => `${p.kind}/${p.metadata.name}`), m.metadata.name).toEqual([`${m.metadata.name === 'ecnet-agent' ? 'DaemonSet' : 'Deployment'}/${m.metadata.name}`]);
    }
  });

  // (`commonLabels`, in its place, would add the label to the Services' selectors, which no pod matches.)
  it('the overlay docs/observability.md gives labels the ServiceMonitors for a Prometheus to pick, and leaves every selector as it was', () => {
    const overlay = mkdtempSync(join(tmpdir(), 'ecnet-monitoring-overlay-'));
    try {
      // kustomize wants the base's path relative.
      writeFileSync(join(overlay, 'kustomization.yaml'), [`resources: [${relative(overlay, join(dir, 'monitoring'))}]`, 'labels:', '  - pairs:', '      release: kube-prometheus-stack', ''].join('\n'));
      const r = spawnSync('kubectl', ['kustomize', overlay], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const docs = parseAllDocuments(r.stdout).map((d) => d.toJS() as Json);
      const base = render('monitoring');
      for (const d of docs) {
        expect(d.metadata.labels.release, `${d.kind}/${d.metadata.name}`).toBe('kube-prometheus-stack');
        const before = base.find((b) => b.kind === d.kind && b.metadata.name === d.metadata.name)!;
        expect(d.spec?.selector, `${d.kind}/${d.metadata.name}`).toEqual(before.spec?.selector);
      }
    } finally {
      rmSync(overlay, { recursive: true, force: true });
    }
  });

  it('daemonset/monitoring/podmonitors renders the PodMonitors and the same dashboard, in ecnet-system', () => {
    const docs = render('monitoring/podmonitors');
    expect(ids(docs)).toEqual(['ConfigMap/ecnet-grafana-dashboard', 'PodMonitor/ecnet-agent', 'PodMonitor/ecnet-controller', 'PodMonitor/ecnet-gateway']);
    checkCommon(docs);
    expect(docs.find((d) => d.kind === 'ConfigMap')).toEqual(render('monitoring').find((d) => d.kind === 'ConfigMap'));
  });
});

// --- The dashboard against the code's metric families -----------------------------------------------------

/** Every name a scrape of the components can hold (histograms: _bucket, _sum, _count), with its labels. */
async function registeredFamilies(): Promise<Map<string, Set<string>>> {
  const agent = componentRegistry('agent');
  new ProxyMetrics({ registry: agent, localCluster: 'a/b/c/d' });
  new AgentMetrics(agent, { status: () => ({ synced: true, redirects: 0, degraded: [] }), routes: () => ({ redirected: 0, kept: 0 }), fill: () => [], counters: () => ({}), pairs: () => 0 });
  const gateway = componentRegistry('gateway');
  new GatewayMetrics({ registry: gateway });
  const controller = componentRegistry('controller');
  new ControllerMetrics(controller);
  const out = new Map<string, Set<string>>();
  const add = (name: string, labels: Iterable<string>) => out.set(name, new Set([...(out.get(name) ?? []), ...labels]));
  for (const r of [agent, gateway, controller]) {
    for (const m of r.getMetricsAsArray() as unknown as { name: string; type: string; labelNames?: readonly string[] }[]) {
      const labels = m.labelNames ?? [];
      add(m.name, labels);
      if (m.type === 'histogram') {
        add(`${m.name}_bucket`, [...labels, 'le']);
        add(`${m.name}_sum`, labels);
        add(`${m.name}_count`, labels);
      }
    }
  }
  return out;
}

describe('the Grafana dashboard (daemonset/monitoring/dashboard/grafana-dashboard.json)', async () => {
  const text = readFileSync(DASHBOARD, 'utf8');
  const dash = JSON.parse(text) as Json;
  const panels = dash.panels as Json[];
  const queries = panels.flatMap((p) => ((p.targets ?? []) as Json[]).map((t) => ({ panel: p.title as string, expr: t.expr as string })));
  const variables = dash.templating.list as Json[];
  const known = await registeredFamilies();
  /** The labels of a name the dashboard uses, or undefined when the code has no such family. */
  const labelsOf = (name: string): Set<string> | undefined => known.get(name);

  it('is a dashboard of schema 39 with a Prometheus data source variable, and namespace, service and cluster from label_values', () => {
    expect(dash.schemaVersion).toBeGreaterThanOrEqual(39);
    expect(dash.uid).toMatch(/^[a-zA-Z0-9_-]{1,40}$/);
    const ds = variables.find((v) => v.name === 'datasource')!;
    expect(ds).toMatchObject({ type: 'datasource', query: 'prometheus' });
    for (const name of ['namespace', 'service', 'cluster']) {
      const v = variables.find((x) => x.name === name)!;
      expect(v, name).toMatchObject({ type: 'query', datasource: { type: 'prometheus', uid: '${datasource}' } });
      expect(v.query, name).toMatch(new RegExp(`^label_values\\(.+, ${name}\\)$`));
    }
  });

  it('lays out its panels on the 24-column grid, each with a unique id, querying the chosen data source', () => {
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      if (p.type === 'row') continue;
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets) expect(t.expr.trim(), p.title).not.toBe('');
    }
    // No two panels overlap.
    const cells = new Set<string>();
    for (const p of panels) {
      for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
        for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
          expect(cells.has(`${x},${y}`), `${p.title} at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
    }
  });

  it('has the panels the issue asks for', () => {
    const all = queries.map((q) => q.expr).join('\n');
    for (const needed of [
      'rate(ecnet_proxy_connections_opened_total',
      'rate(ecnet_proxy_connection_attempts_failed_total',
      'rate(ecnet_proxy_connections_rejected_total',
      'ecnet_proxy_connections_active',
      'rate(ecnet_proxy_bytes_total',
      'histogram_quantile(0.5, sum by (cluster, le) (rate(ecnet_proxy_connection_setup_seconds_bucket',
      'histogram_quantile(0.99, sum by (cluster, le) (rate(ecnet_proxy_connection_setup_seconds_bucket',
      'ecnet_proxy_target_healthy',
      'rate(ecnet_gateway_tunnels_opened_total',
      'rate(ecnet_gateway_tunnels_refused_total',
      'ecnet_gateway_endpoints',
      'ecnet_gateway_catalog_synced',
      'histogram_quantile(0.99, sum by (le) (rate(ecnet_agent_reconcile_duration_seconds_bucket',
      'rate(ecnet_agent_reconcile_errors_total',
      'ecnet_datapath_map_entries / ecnet_datapath_map_capacity',
      'histogram_quantile(0.99, sum by (le) (rate(ecnet_controller_propagation_seconds_bucket',
      'ecnet_controller_member_up',
      'ecnet_controller_export_conflicts',
      'rate(ecnet_controller_reconcile_errors_total',
    ]) {
      expect(all, needed).toContain(needed);
    }
  });

  it('names only metric families the code registers', () => {
    const promql = [...queries.map((q) => q.expr), ...variables.map((v) => (typeof v.query === 'string' ? v.query : ''))].join('\n');
    const tokens = new Set(promql.match(/ecnet_[a-z_]+/g) ?? []);
    expect(tokens.size).toBeGreaterThan(30);
    const unknown = [...tokens].filter((t) => labelsOf(t) === undefined);
    expect(unknown).toEqual([]);
    // The check itself: a family the code does not have is caught.
    expect(labelsOf('ecnet_proxy_connections_opened')).toBeUndefined();
    expect(labelsOf('ecnet_controller_reconcile_total')).toBeUndefined();
    expect(labelsOf('ecnet_controller_propagation_seconds_bucket')).toEqual(new Set(['le']));
  });

  it('selects and groups by labels those families have', () => {
    const strip = (expr: string) => expr.replace(/\$\{?[a-z_]+\}?/g, 'X');
    for (const { panel, expr } of [...queries, ...variables.filter((v) => typeof v.query === 'string' && v.query.startsWith('label_values')).map((v) => ({ panel: `variable ${v.name}`, expr: v.query as string }))]) {
      const e = strip(expr);
      const names = [...new Set(e.match(/ecnet_[a-z_]+/g) ?? [])];
      const labels = new Set(['__name__', ...names.flatMap((n) => [...(labelsOf(n) ?? [])])]);
      // Matchers: name{label=~"…", …} and {__name__=~"…", label=…}.
      for (const m of e.matchAll(/\{([^}]*)\}/g)) {
        for (const l of m[1]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) expect(labels.has(l[1]!), `${panel}: ${l[1]} in ${expr}`).toBe(true);
      }
      // Aggregations: by (…), and label_values(…, label).
      for (const m of e.matchAll(/\bby\s*\(([^)]*)\)/g)) {
        for (const l of m[1]!.split(',').map((s) => s.trim()).filter(Boolean)) expect(labels.has(l), `${panel}: by ${l} in ${expr}`).toBe(true);
      }
      const lv = /^label_values\(.*,\s*([a-z_]+)\)$/.exec(e);
      if (lv) expect(labels.has(lv[1]!), `${panel}: ${lv[1]}`).toBe(true);
    }
  });
});
