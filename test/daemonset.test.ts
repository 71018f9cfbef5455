// The Kubernetes install in daemonset/: every manifest is valid against Kubernetes' own schemas (kubernetes-models)
// or ecnet's (flomesh.io kinds), the kustomizations render, and what the manifests say the processes do matches
// the code: their arguments go through the real flag parsers, probes hit the routes the code serves, mounts
// and ports are the code's defaults. RBAC names no wildcard, nothing is privileged.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { crdFiles, crdPaths, crdStream } from '../src/api/crds.js';
import { KINDS } from '../src/api/flomesh.js';
import { MCS_KINDS } from '../src/api/mcs.js';
import { readManifests } from '../src/api/manifests.js';
import { parseEndpoint } from '../src/net/address.js';
import { agentConfig, agentDefaults, controllerConfig, datapathConfig, defaults, gatewayConfig, gatewayDefaults } from '../src/config.js';
import { planProcess, readWorkload } from '../src/kubelet/workload.js';
import { packageRoot } from '../src/paths.js';
import { prometheusOperatorProblems } from './helpers/monitor-schema.js';

// Manifests are untyped YAML; the schema check above is what types them.
type Json = Record<string, any>;
const dir = join(packageRoot, 'daemonset');
const NS = 'ecnet-system';
const version = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;

function walk(d: string): string[] {
  return readdirSync(d).flatMap((f) => (statSync(join(d, f)).isDirectory() ? walk(join(d, f)) : [join(d, f)]));
}
const yamlFiles = walk(dir).filter((f) => f.endsWith('.yaml'));
const isKustomization = (f: string) => f.endsWith('/kustomization.yaml');
const docsOf = (text: string): Json[] => parseAllDocuments(text).map((d) => d.toJS() as Json).filter(Boolean);
const manifests = new Map(yamlFiles.filter((f) => !isKustomization(f)).map((f) => [relative(dir, f), docsOf(readFileSync(f, 'utf8'))]));
const all = [...manifests.values()].flat();
const find = (kind: string, name: string, docs: Json[] = all): Json => {
  const d = docs.find((x) => x.kind === kind && x.metadata?.name === name);
  if (!d) throw new Error(`no ${kind}/${name} in daemonset/`);
  return d;
};

/** Kubernetes' schema check of one object (kubernetes-models), or ecnet's for flomesh.io and MCS API kinds: the problems. */
async function problems(doc: Json): Promise<string[]> {
  const [group, ver] = String(doc.apiVersion).includes('/') ? String(doc.apiVersion).split('/') : ['', String(doc.apiVersion)];
  if (group === 'flomesh.io' || group === 'multicluster.x-k8s.io') return readManifests(JSON.stringify(doc)).flatMap((m) => m.problems.map((p) => `${p.path}: ${p.message}`));
  // The Prometheus Operator's kinds (daemonset/monitoring/: PodMonitor, ServiceMonitor): kubernetes-models has none.
  if (group === 'monitoring.coreos.com') return prometheusOperatorProblems(doc);
  const mod = (await import(/* @vite-ignore */ `kubernetes-models/${group ? `${group}/` : ''}${ver}/${doc.kind}`)) as Record<string, new (d: Json) => { validate(): void }>;
  const Model = mod[doc.kind as string];
  if (!Model) return [`kubernetes-models has no ${doc.apiVersion} ${doc.kind}`];
  try {
    new Model(doc).validate();
    return [];
  } catch (err) {
    return [(err as Error).message];
  }
}

/** Every container spec of the pod templates in `docs`, with where it is. */
const containersOf = (docs: Json[]) =>
  docs.flatMap((d) => {
    const pod = d.spec?.template?.spec as Json | undefined;
    return pod ? [...(pod.initContainers ?? []), ...(pod.containers ?? [])].map((c: Json) => ({ where: `${d.kind}/${d.metadata.name}/${c.name}`, c, pod })) : [];
  });

/** `--name=value` / `--flag` arguments as commander would hand them (camelCase keys). */
function flagsOf(args: string[]): Json {
  const out: Json = {};
  for (const a of args) {
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(a);
    if (!m) continue;
    out[m[1]!.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())] = m[2] ?? true;
  }
  return out;
}

const agentDs = find('DaemonSet', 'ecnet-agent');
const agentPod = agentDs.spec.template.spec as Json;
const agent = agentPod.containers[0] as Json;
const gatewayDeploy = find('Deployment', 'ecnet-gateway');
const gateway = gatewayDeploy.spec.template.spec.containers[0] as Json;
const controller = find('Deployment', 'ecnet-controller').spec.template.spec.containers[0] as Json;

describe('daemonset/ manifests', () => {
  it('every document is valid against the Kubernetes schema of its kind (flomesh.io kinds: ecnet\'s)', async () => {
    expect(all.length).toBeGreaterThan(15);
    for (const [file, docs] of manifests) {
      for (const d of docs) expect(await problems(d), `${file}: ${d.kind}/${d.metadata?.name}`).toEqual([]);
    }
  });

  it('the validator is not a rubber stamp', async () => {
    const bad = structuredClone(agentDs);
    bad.spec.template.spec.containers[0].startupProbe.httpGet.port = { not: 'a port' };
    expect(await problems(bad)).not.toEqual([]);
  });

  it('every manifest outside cleanup/ and karmada/ is in a kustomization, and every kustomization names existing files', () => {
    const listed = new Set<string>();
    for (const k of yamlFiles.filter(isKustomization)) {
      const kust = parse(readFileSync(k, 'utf8')) as { resources?: string[] };
      for (const r of kust.resources ?? []) {
        const path = join(k, '..', r);
        expect(existsSync(path), `${relative(dir, k)}: ${r}`).toBe(true);
        if (!statSync(path).isDirectory()) listed.add(relative(dir, path));
      }
    }
    const orphans = [...manifests.keys()].filter((f) => !listed.has(f) && !f.startsWith('karmada/'));
    expect(orphans).toEqual([]);
  });

  it('nothing is privileged; Bidirectional mounts (which need privileged) are absent; no wildcard in RBAC', () => {
    for (const { where, c } of containersOf(all)) {
      expect(c.securityContext?.privileged ?? false, where).toBe(false);
      for (const m of c.volumeMounts ?? []) expect(m.mountPropagation, `${where}: ${m.name}`).not.toBe('Bidirectional');
      // The API server refuses allowPrivilegeEscalation: false together with SYS_ADMIN.
      if (c.securityContext?.allowPrivilegeEscalation === false) expect(c.securityContext?.capabilities?.add ?? [], where).not.toContain('SYS_ADMIN');
      // Every container drops what it does not add.
      expect(c.securityContext?.capabilities?.drop, where).toEqual(['ALL']);
    }
    const roles = all.filter((d) => d.kind === 'ClusterRole' || d.kind === 'Role');
    expect(roles.length).toBeGreaterThanOrEqual(5);
    for (const r of roles) {
      for (const rule of r.rules as Json[]) {
        for (const field of ['verbs', 'resources', 'apiGroups']) expect(rule[field], `${r.kind}/${r.metadata.name} ${field}`).not.toContain('*');
        expect(rule.nonResourceURLs, `${r.kind}/${r.metadata.name}`).toBeUndefined();
      }
    }
  });

  it('every binding names a role and service account that the manifests define', () => {
    for (const b of all.filter((d) => d.kind === 'ClusterRoleBinding' || d.kind === 'RoleBinding')) {
      find(b.roleRef.kind, b.roleRef.name);
      for (const s of b.subjects as Json[]) expect(find('ServiceAccount', s.name).metadata.namespace).toBe(s.namespace);
    }
    for (const { where, pod } of containersOf(all)) {
      if (pod.automountServiceAccountToken === false) continue;
      expect(pod.serviceAccountName, where).toBeDefined();
      find('ServiceAccount', pod.serviceAccountName);
    }
  });

  it('RBAC grants each component what its code reads and writes, and no more', () => {
    const grants = (role: Json) =>
      (role.rules as Json[]).flatMap((r) => (r.apiGroups as string[]).flatMap((g) => (r.resources as string[]).flatMap((res) => (r.verbs as string[]).map((v) => `${g}/${res}:${v}`)))).sort();
    const informers = (...rs: string[]) => rs.flatMap((r) => [`${r}:list`, `${r}:watch`]).sort();
    // src/agent/agent.ts: informers, and Events on imports it leaves out; src/gateway/live-catalog.ts: informers only.
    expect(grants(find('ClusterRole', 'ecnet-agent'))).toEqual([...informers('flomesh.io/serviceimports', 'flomesh.io/globaltrafficpolicies', '/services', '/pods', 'discovery.k8s.io/endpointslices'), '/events:create'].sort());
    expect(grants(find('ClusterRole', 'ecnet-gateway'))).toEqual(informers('flomesh.io/serviceexports', 'multicluster.x-k8s.io/serviceexports', '/services', 'discovery.k8s.io/endpointslices'));
    // The controller in the control-plane cluster: Clusters (+ status), Secrets with kubeconfigs, its Lease.
    expect(grants(find('ClusterRole', 'ecnet-controller'))).toEqual(['flomesh.io/clusters:get', 'flomesh.io/clusters:list', 'flomesh.io/clusters:watch', 'flomesh.io/clusters/status:update'].sort());
    // Secrets: member kubeconfigs (get, and watched by name: list, watch) and the cluster set's CA, ecnet-ca (get,
    // create once: src/controlplane/identities.ts).
    expect(grants(find('Role', 'ecnet-controller'))).toEqual(['/secrets:create', '/secrets:get', '/secrets:list', '/secrets:watch', 'coordination.k8s.io/leases:create', 'coordination.k8s.io/leases:get', 'coordination.k8s.io/leases:update'].sort());
    // In a member (its kubeconfig in the Cluster resource): apply = get + create/update, writeStatus = get + update status.
    const member = grants(find('ClusterRole', 'ecnet-controller-member'));
    for (const g of ['flomesh.io/serviceimports:create', 'flomesh.io/serviceimports:update', 'flomesh.io/serviceimports:delete', 'flomesh.io/serviceimports/status:update', 'flomesh.io/serviceexports/status:update', '/services:delete', '/namespaces:create', '/events:create']) {
      expect(member).toContain(g);
    }
    expect(member.filter((g) => g.startsWith('flomesh.io/serviceexports:'))).toEqual(['flomesh.io/serviceexports:get', 'flomesh.io/serviceexports:list', 'flomesh.io/serviceexports:watch']);
    // The MCS API (multicluster.x-k8s.io) the same way: exports read and their status written, imports written.
    expect(member.filter((g) => g.startsWith('multicluster.x-k8s.io/'))).toEqual(
      [
        ...['get', 'list', 'watch'].map((v) => `multicluster.x-k8s.io/serviceexports:${v}`),
        'multicluster.x-k8s.io/serviceexports/status:update',
        ...['create', 'delete', 'get', 'list', 'update', 'watch'].map((v) => `multicluster.x-k8s.io/serviceimports:${v}`),
        'multicluster.x-k8s.io/serviceimports/status:update',
      ].sort(),
    );
    // The EndpointSlices of MCS imports (member-plan.ts): written like imports, and nothing else of discovery.k8s.io.
    expect(member.filter((g) => g.startsWith('discovery.k8s.io/'))).toEqual(['create', 'delete', 'get', 'list', 'update', 'watch'].map((v) => `discovery.k8s.io/endpointslices:${v}`));
    expect(member.some((g) => g.includes('secrets') || g.includes('clusters'))).toBe(false);
    // Services: the derived ones written, and the imported label patched onto a user's own (member-plan.ts).
    expect(member.filter((g) => g.startsWith('/services:'))).toEqual(['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'].map((v) => `/services:${v}`));
    // The member's identity, ecnet-identity: in ecnet-system only, watched by name (list, watch), get, then
    // create or replace (identities.ts, members.ts).
    expect(grants(find('Role', 'ecnet-controller-member'))).toEqual(['/secrets:create', '/secrets:get', '/secrets:list', '/secrets:update', '/secrets:watch']);
    // get and update of that one Secret only (create cannot be limited by name).
    expect((find('Role', 'ecnet-controller-member').rules as Json[]).filter((r) => (r.verbs as string[]).some((v) => v !== 'create')).map((r) => r.resourceNames)).toEqual([['ecnet-identity']]);
  });

  it('daemonset/karmada/crds.yaml is what `ecnet crds` prints, and the same flomesh.io CRDs as daemonset/crds/ (not the MCS API\'s: Karmada brings its own)', () => {
    const text = readFileSync(join(packageRoot, crdPaths.file), 'utf8');
    expect(text).toBe(crdStream());
    const single = docsOf(text);
    const perKind = [...crdFiles().keys()].filter((f) => f.startsWith('flomesh.io_')).sort().map((f) => docsOf(readFileSync(join(packageRoot, crdPaths.dir, f), 'utf8'))[0]);
    expect(single.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))).toEqual(perKind.sort((a, b) => a!.metadata.name.localeCompare(b!.metadata.name)));
    expect(single.map((d) => d.spec.names.kind).sort()).toEqual(Object.values(KINDS).map((k) => k.kind).sort());
  });
});

/** The agent's args as the kubelet expands them on a node at 10.0.2.4 (and fd00::4 when dual-stack). */
const agentArgs = (hostIPs = ['10.0.2.4']): string[] =>
  planProcess(readWorkload('agent'), {
    pod: { name: 'ecnet-agent-x', namespace: NS, nodeName: 'node-1', hostIP: hostIPs[0]!, hostIPs, podIP: hostIPs[0]! },
    configMaps: { 'ecnet-cluster': { clusterKey: 'default/default/default/cluster-1' } },
    source: ['--in-cluster'],
  }).argv;

describe('the agent DaemonSet matches what `ecnet agent` does', () => {
  const env = { ECNET_CLUSTER_KEY: 'default/default/default/cluster-1' };
  const cfg = agentConfig(flagsOf(agentArgs()), env);
  const admin = parseEndpoint(agentDefaults.admin);
  const mount = (name: string) => agent.volumeMounts.find((m: Json) => m.name === name) as Json;
  const volume = (name: string) => agentPod.volumes.find((v: Json) => v.name === name) as Json;

  it('runs `ecnet agent` in the host network against the API server, with the default addresses and pin directory', () => {
    expect(agent.args[0]).toBe('agent');
    expect(cfg.source).toMatchObject({ kind: 'kubernetes', inCluster: true });
    expect(cfg.admin).toEqual(admin);
    // The node proxy on the node's own address (status.hostIP), which every pod reaches; never loopback.
    expect(cfg.load.settings.proxy).toEqual({ ip: '10.0.2.4', port: agentDefaults.proxyPort });
    expect(cfg.load.settings.proxyIp6).toBeUndefined();
    expect(agentConfig(flagsOf(agentArgs(['10.0.2.4', 'fd00::4'])), env).load.settings.proxyIp6).toBe('fd00::4');
    // An IPv6-primary node: hostIP is the IPv6 address.
    expect(agentConfig(flagsOf(agentArgs(['fd00::4', '10.0.2.4'])), env).load.settings).toMatchObject({ proxy: { ip: '10.0.2.4', port: 15001 }, proxyIp6: 'fd00::4' });
    const byName = Object.fromEntries(agent.env.map((e: Json) => [e.name, e.valueFrom?.fieldRef?.fieldPath]));
    expect(byName).toMatchObject({ NODE_IP: 'status.hostIP', NODE_IPS: 'status.hostIPs' });
    expect(cfg.datapath.bpffs).toBe(defaults.bpffs);
    expect(agentPod.hostNetwork).toBe(true);
    expect(agentPod.dnsPolicy).toBe('ClusterFirstWithHostNet');
    // An upgrade surges the new agent next to the old one, which hands the node over (docs/restarts.md).
    expect(agentDs.spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    expect(cfg.handover).toBe(`${mount('handover').mountPath}/handover.sock`);
    expect(volume('handover').hostPath).toEqual({ path: mount('handover').mountPath, type: 'DirectoryOrCreate' });
    expect(agent.lifecycle?.preStop, 'a preStop would detach on every restart').toBeUndefined();
  });

  it('mounts the host bpffs over the pin directory and the host cgroup v2 root where it attaches', () => {
    expect(defaults.bpffs.startsWith(`${mount('bpffs').mountPath}/`)).toBe(true);
    expect(volume('bpffs').hostPath).toEqual({ path: mount('bpffs').mountPath, type: 'Directory' });
    expect(mount('bpffs').mountPropagation).toBe('HostToContainer');
    expect(cfg.datapath.cgroup).toBe(mount('cgroup').mountPath);
    expect(volume('cgroup').hostPath).toEqual({ path: '/sys/fs/cgroup', type: 'Directory' });
  });

  it('declares no host port (a surge pod could not join the old one on its node), probes its admin port, and gets exactly the capabilities it needs', () => {
    expect(agent.ports).toBeUndefined();
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) expect(agent[probe].httpGet).toMatchObject({ host: admin.ip, port: admin.port, path: '/healthz' });
    expect(agent.securityContext.capabilities.add.sort()).toEqual(['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_RESOURCE']);
    expect(agent.securityContext.runAsUser).toBe(0);
    expect(agent.resources.requests).toBeDefined();
    expect(agent.resources.limits).toBeDefined();
  });

  it('takes its cluster key and node name from the environment; the placeholder key is refused, so a forgotten overlay fails loudly', () => {
    const byName = Object.fromEntries(agent.env.map((e: Json) => [e.name, e]));
    expect(byName.ECNET_CLUSTER_KEY.valueFrom.configMapKeyRef).toEqual({ name: 'ecnet-cluster', key: 'clusterKey' });
    expect(byName.NODE_NAME.valueFrom.fieldRef.fieldPath).toBe('spec.nodeName');
    const kust = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Json;
    const literal = (kust.configMapGenerator as Json[]).find((g) => g.name === 'ecnet-cluster')!.literals[0] as string;
    expect(() => agentConfig(flagsOf(agentArgs()), { ECNET_CLUSTER_KEY: literal.split('=')[1] })).toThrow(/--cluster-key must be/);
  });

  it('probes the admin endpoint on the route it serves, which answers 200 once synced', async () => {
    const { startAdmin } = await import('../src/agent/admin.js');
    const status = { synced: true, redirects: 0, reconciles: 1, lastError: undefined as string | undefined };
    const server = await startAdmin('127.0.0.1', 0, { status } as never, { entries: () => [] } as never, { stats: {} } as never);
    try {
      const port = (server.address() as AddressInfo).port;
      for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        const probe = agent[kind].httpGet as Json;
        expect({ host: probe.host, port: probe.port }, kind).toEqual({ host: admin.ip, port: admin.port });
        expect((await fetch(`http://127.0.0.1:${port}${probe.path}`)).status, kind).toBe(200);
      }
      status.synced = false;
      expect((await fetch(`http://127.0.0.1:${port}${agent.readinessProbe.httpGet.path}`)).status).toBe(503);
    } finally {
      server.close();
    }
  });
});

describe('the gateway Deployment and Service match what `ecnet gateway` does', () => {
  const cfg = gatewayConfig(flagsOf(gateway.args), {});
  const port = (name: string) => gateway.ports.find((p: Json) => p.name === name)?.containerPort as number;
  const service = find('Service', 'ecnet-gateway');

  it('listens where its container port and the Service point, behind port 80 (the Cluster default gatewayPort)', () => {
    expect(gateway.args[0]).toBe('gateway');
    expect(cfg.source).toMatchObject({ kind: 'kubernetes', inCluster: true });
    expect(port('tunnel')).toBe(cfg.listen.port);
    const [sp] = service.spec.ports as Json[];
    expect(sp!.port).toBe(parseEndpoint(gatewayDefaults.listen).port);
    expect((KINDS.Cluster.spec as Json).properties.gatewayPort.default ?? sp!.port).toBe(sp!.port);
    expect(sp!.targetPort).toBe('tunnel');
    expect(['LoadBalancer', 'NodePort']).toContain(service.spec.type);
    expect(service.spec.selector).toEqual(gatewayDeploy.spec.selector.matchLabels);
  });

  it('probes /readyz (readiness) and /healthz (liveness) on the tunnel port, which the gateway serves there', async () => {
    const { Gateway } = await import('../src/gateway/gateway.js');
    const { staticCatalog } = await import('../src/gateway/catalog.js');
    const gw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog: staticCatalog([]) });
    try {
      for (const kind of ['readinessProbe', 'livenessProbe']) {
        const probe = gateway[kind].httpGet as Json;
        expect(probe.port, kind).toBe('tunnel');
        expect((await fetch(`http://127.0.0.1:${gw.address.port}${probe.path}`)).status, kind).toBe(200);
      }
    } finally {
      await gw.close();
    }
  });
});

describe('the controller Deployment and the cleanup DaemonSet', () => {
  it('runs `ecnet controller --in-cluster --leader-elect` with the pod as holder and its Lease where the Role grants it', () => {
    const env = Object.fromEntries(controller.env.map((e: Json) => [e.name, e.valueFrom?.fieldRef?.fieldPath]));
    expect(env).toMatchObject({ POD_NAME: 'metadata.name', POD_NAMESPACE: 'metadata.namespace' });
    const cfg = controllerConfig(flagsOf(controller.args), { POD_NAME: 'ecnet-controller-abc', POD_NAMESPACE: NS });
    expect(controller.args[0]).toBe('controller');
    expect(cfg.controlPlane).toMatchObject({ kind: 'kubernetes', inCluster: true });
    expect(cfg.leaderElection).toMatchObject({ identity: 'ecnet-controller-abc', namespace: NS });
    expect(find('Role', 'ecnet-controller').metadata.namespace).toBe(cfg.leaderElection!.namespace);
    expect(find('Deployment', 'ecnet-controller').spec.replicas).toBeGreaterThan(1);
  });

  it('cleanup runs `ecnet uninstall` on the pin directory the agent uses, on the host bpffs', () => {
    const ds = find('DaemonSet', 'ecnet-cleanup');
    const [init] = ds.spec.template.spec.initContainers as Json[];
    expect(init!.args[0]).toBe('uninstall');
    expect(datapathConfig(flagsOf(init!.args), {}).bpffs).toBe(agentConfig(flagsOf(agentArgs()), { ECNET_CLUSTER_KEY: 'default/default/default/c' }).datapath.bpffs);
    expect(init!.volumeMounts[0].mountPath).toBe(agent.volumeMounts.find((m: Json) => m.name === 'bpffs').mountPath);
    expect(ds.spec.template.spec.volumes[0].hostPath.path).toBe('/sys/fs/bpf');
  });
});

const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
const haveKubectl = kubectl.status === 0;
if (!haveKubectl) console.warn('daemonset.test.ts: kubectl not found, skipping the `kubectl kustomize` renders');

describe.skipIf(!haveKubectl)('kubectl kustomize (skipped without kubectl)', () => {
  const render = (d: string): Json[] => {
    const r = spawnSync('kubectl', ['kustomize', join(dir, d)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`kubectl kustomize daemonset/${d}: ${r.stderr}`);
    return docsOf(r.stdout);
  };
  const ids = (docs: Json[]) => docs.map((d) => `${d.kind}/${d.metadata.name}`).sort();
  // Rendered in the tests, not here: a skipped describe's body still runs.
  let rendered: { member: Json[]; hub: Json[]; cleanup: Json[] } | undefined;
  const renders = () => (rendered ??= { member: render('.'), hub: render('control-plane'), cleanup: render('cleanup') });

  it('daemonset/ renders the member install: namespace, CRDs, agent, gateway, the controller\'s member access', () => {
    const { member } = renders();
    const cm = member.find((d) => d.kind === 'ConfigMap')!;
    expect(ids(member)).toEqual(
      [
        'Namespace/ecnet-system',
        ...Object.values(KINDS).map((k) => `CustomResourceDefinition/${k.plural}.flomesh.io`),
        ...Object.values(MCS_KINDS).map((k) => `CustomResourceDefinition/${k.plural}.multicluster.x-k8s.io`),
        'ServiceAccount/ecnet-agent', 'ClusterRole/ecnet-agent', 'ClusterRoleBinding/ecnet-agent', 'DaemonSet/ecnet-agent',
        'ServiceAccount/ecnet-gateway', 'ClusterRole/ecnet-gateway', 'ClusterRoleBinding/ecnet-gateway', 'Deployment/ecnet-gateway', 'Service/ecnet-gateway',
        'ServiceAccount/ecnet-controller-member', 'Secret/ecnet-controller-member-token', 'ClusterRole/ecnet-controller-member', 'ClusterRoleBinding/ecnet-controller-member', 'Role/ecnet-controller-member', 'RoleBinding/ecnet-controller-member',
        `ConfigMap/${cm.metadata.name}`,
      ].sort(),
    );
    // The generated ConfigMap's hashed name reaches the agent.
    const ds = find('DaemonSet', 'ecnet-agent', member);
    expect(ds.spec.template.spec.containers[0].env.find((e: Json) => e.name === 'ECNET_CLUSTER_KEY').valueFrom.configMapKeyRef.name).toBe(cm.metadata.name);
  });

  it('daemonset/control-plane adds the controller (with the namespace and CRDs, to apply alone); daemonset/cleanup is the cleanup (with the namespace)', () => {
    const { hub, cleanup } = renders();
    const shared = ['Namespace/ecnet-system', ...Object.values(KINDS).map((k) => `CustomResourceDefinition/${k.plural}.flomesh.io`)];
    expect(ids(hub)).toEqual([...shared, 'ClusterRole/ecnet-controller', 'ClusterRoleBinding/ecnet-controller', 'Deployment/ecnet-controller', 'Role/ecnet-controller', 'RoleBinding/ecnet-controller', 'ServiceAccount/ecnet-controller'].sort());
    expect(ids(cleanup)).toEqual(['DaemonSet/ecnet-cleanup', 'Namespace/ecnet-system']);
  });

  it('every rendered object is valid, in ecnet-system when namespaced, labelled, on the image of this version', async () => {
    const { member, hub, cleanup } = renders();
    for (const d of [...member, ...hub, ...cleanup]) {
      const what = `${d.kind}/${d.metadata.name}`;
      expect(await problems(d), what).toEqual([]);
      expect(d.metadata.labels?.['app.kubernetes.io/part-of'], what).toBe('ecnet');
      const clusterScoped = ['Namespace', 'CustomResourceDefinition', 'ClusterRole', 'ClusterRoleBinding'].includes(d.kind);
      expect(d.metadata.namespace, what).toBe(clusterScoped ? undefined : NS);
    }
    for (const { where, c } of containersOf([...member, ...hub, ...cleanup])) expect(c.image, where).toBe(`ecnet:${version}`);
  });
});

describe('daemonset/Dockerfile', () => {
  const text = readFileSync(join(dir, 'Dockerfile'), 'utf8');
  const copies = [...text.matchAll(/^COPY\s+(--from=(\S+)\s+)?(.+)$/gm)].map((m) => {
    const parts = m[3]!.trim().split(/\s+/);
    return { from: m[2], sources: parts.slice(0, -1), dest: parts[parts.length - 1]! };
  });
  const workdir = /^WORKDIR\s+(\S+)/m.exec(text)![1]!;
  const ignored = readFileSync(join(packageRoot, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));

  it('copies from the build context only files that exist and that .dockerignore lets through', () => {
    const fromContext = copies.filter((c) => !c.from).flatMap((c) => c.sources);
    expect(fromContext).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'src', 'bpf', 'native']));
    for (const s of fromContext) {
      expect(existsSync(join(packageRoot, s)), s).toBe(true);
      expect(ignored.filter((i) => s === i || s.startsWith(`${i}/`)), s).toEqual([]);
    }
  });

  /** The files a COPY source names: a path, or a `*` in its last segment. */
  const matching = (p: string): string[] => {
    const slash = p.lastIndexOf('/');
    const [d, base] = [join(packageRoot, p.slice(0, slash)), p.slice(slash + 1)];
    if (!base.includes('*')) return existsSync(join(packageRoot, p)) ? [p] : [];
    const re = new RegExp(`^${base.split('*').map((x) => x.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*')}$`);
    return existsSync(d) ? readdirSync(d).filter((f) => re.test(f)) : [];
  };

  it('puts into the image only paths that `npm run build` produces, where the code looks for them', () => {
    const fromBuild = copies.filter((c) => c.from === 'build');
    for (const c of fromBuild) {
      for (const s of c.sources) {
        expect(s.startsWith(`${workdir}/`), s).toBe(true);
        const local = s.slice(workdir.length + 1);
        expect(matching(local).length, `${local} (run npm run build)`).toBeGreaterThan(0);
      }
    }
    const dests = fromBuild.map((c) => c.dest.replace(/^\.\//, '').replace(/\/$/, ''));
    // dist/paths.ts: the package root is dist/..; the BPF objects and the addon are found from there.
    expect(relative(packageRoot, defaults.objectDir)).toBe('build/bpf');
    expect(dests).toEqual(expect.arrayContaining(['dist', 'node_modules', 'package.json', 'build/bpf', 'build/native/Release/ecnet_native.node']));
    expect(readFileSync(join(packageRoot, 'src', 'native', 'addon.ts'), 'utf8')).toContain("'build', 'native', 'Release'");
    expect(text).toMatch(/^ENTRYPOINT \["node", "[^"]*\/dist\/cli\/main\.js"\]$/m);
  });
});

