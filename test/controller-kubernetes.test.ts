// The controller on Kubernetes API servers: a hub and three members, each an in-memory server speaking the
// list/watch protocol, reached through the real @kubernetes/client-node with the kubeconfig of each Cluster
// resource (inline, as the seed registers members). Also: a member that stops answering keeps its exports
// until the timeout, then they are withdrawn and the Cluster says why; and it comes back.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from '../src/api/core.js';
import { type Cluster, type Condition, IMPORTED_LABEL, type ServiceExport, type ServiceImport } from '../src/api/flomesh.js';
import { memberConnector } from '../src/controlplane/connect.js';
import { Controller } from '../src/controlplane/controller.js';
import { packageRoot } from '../src/paths.js';
import { createKubernetesSource } from '../src/sources/kubernetes.js';
import { Kinds, type KubeObject, type Source } from '../src/sources/source.js';
import { type KubeApiServer, startKubeApiServer } from './helpers/kube-api-server.js';
import { type ControlledSet, startControlledSet } from './helpers/controlled-set.js';
import { until } from './helpers/until.js';

const MEMBERS = ['cluster-1', 'cluster-2', 'cluster-3'];
const ns = (name: string): KubeObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
const service = (name: string, namespace: string, port: number): Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace },
  spec: { clusterIP: '10.96.7.7', clusterIPs: ['10.96.7.7'], ports: [{ port, protocol: 'TCP' }], selector: { app: name } },
});
const serviceExport = (name: string, namespace: string): ServiceExport => ({
  apiVersion: 'flomesh.io/v1alpha1',
  kind: 'ServiceExport',
  metadata: { name, namespace },
  spec: { serviceAccountName: '*', loadBalancer: 'RoundRobinLoadBalancer', rules: [{ portNumber: 8080, path: '/httpbin', pathType: 'Prefix' }] },
});


describe('ecnet controller against Kubernetes API servers', () => {
  let set: ControlledSet;
  let hubServer: KubeApiServer;
  const members = new Map<string, KubeApiServer>();
  const endpointsIn = (m: string) =>
    members
      .get(m)!
      .objects<ServiceImport>(Kinds.ServiceImport, 'httpbin')
      .find((i) => i.metadata.name === 'httpbin')
      ?.spec.ports[0]?.endpoints.map((e) => e.clusterKey.split('/')[3]);
  const managed = (c: string) => hubServer.object<Cluster>(Kinds.Cluster, undefined, c)?.status?.conditions?.find((x: Condition) => x.type === 'Managed');

  beforeAll(async () => {
    for (const m of MEMBERS) {
      const s = await startKubeApiServer();
      members.set(m, s);
      s.put(ns('httpbin'));
      s.put(serviceExport('httpbin', 'httpbin'));
      if (m !== 'cluster-2') s.put(service('httpbin', 'httpbin', 8080));
      if (m === 'cluster-1') {
        // Exported into a namespace the other members do not have: the controller creates it there.
        s.put(ns('cache'));
        s.put(service('redis', 'cache', 6379));
        s.put({ ...serviceExport('redis', 'cache'), spec: { loadBalancer: 'RoundRobinLoadBalancer' } });
      }
    }
    set = await startControlledSet([...members], { subnet: '10.0.2', resyncMs: 500 });
    hubServer = set.hubServer;
  });
  afterAll(async () => {
    await set?.close();
  });

  it('writes the imports, the derived Service with its allocated ClusterIP, and the conditions', async () => {
    for (const m of MEMBERS) await until(`import in ${m}`, () => endpointsIn(m)?.length === 2 && endpointsIn(m));
    const c2 = members.get('cluster-2')!;
    const derived = await until('derived Service', () => c2.object<Service>(Kinds.Service, 'httpbin', 'httpbin'));
    expect(derived.metadata.labels?.['app.kubernetes.io/managed-by']).toBe('ecnet-controller');
    const imp = await until('import ips', () => c2.object<ServiceImport>(Kinds.ServiceImport, 'httpbin', 'httpbin')?.spec.ips?.length && c2.object<ServiceImport>(Kinds.ServiceImport, 'httpbin', 'httpbin'));
    expect(imp.spec.ips).toEqual([derived.spec.clusterIP]);
    await until('import status', () => c2.object<ServiceImport>(Kinds.ServiceImport, 'httpbin', 'httpbin')?.status?.clusters?.length === 2);
    expect(c2.object<ServiceImport>(Kinds.ServiceImport, 'httpbin', 'httpbin')?.status?.clusters).toEqual([{ cluster: 'default/default/default/cluster-1' }, { cluster: 'default/default/default/cluster-3' }]);
    // The exporters' own Services get the imported label (what node agents watch by), and only that changes.
    for (const m of ['cluster-1', 'cluster-3']) {
      const own = await until(`label in ${m}`, () => members.get(m)!.object<Service>(Kinds.Service, 'httpbin', 'httpbin')?.metadata.labels?.[IMPORTED_LABEL] && members.get(m)!.object<Service>(Kinds.Service, 'httpbin', 'httpbin'));
      expect(own.metadata.labels).toEqual({ [IMPORTED_LABEL]: 'httpbin' });
      expect(own.spec).toMatchObject(service('httpbin', 'httpbin', 8080).spec);
    }
    expect(derived.metadata.labels?.[IMPORTED_LABEL]).toBe('httpbin');
    const valid = await until('Valid=False', () => c2.object<ServiceExport>(Kinds.ServiceExport, 'httpbin', 'httpbin')?.status?.conditions?.find((x) => x.type === 'Valid'));
    expect(valid).toMatchObject({ status: 'False', reason: 'NoService' });
    // A missing namespace is created (labelled as ecnet's) before the import goes in.
    for (const m of ['cluster-2', 'cluster-3']) {
      await until(`redis import in ${m}`, () => members.get(m)!.object(Kinds.ServiceImport, 'cache', 'redis'));
      expect(members.get(m)!.object(Kinds.Namespace, undefined, 'cache')?.metadata.labels?.['app.kubernetes.io/managed-by']).toBe('ecnet-controller');
    }
    for (const m of MEMBERS) await until(`Managed=True on ${m}`, () => managed(m)?.status === 'True');
    // Status went through the status subresource, with the Cluster's spec untouched.
    expect(hubServer.requests.some((r) => r.method === 'PUT' && r.path === '/apis/flomesh.io/v1alpha1/clusters/cluster-1/status')).toBe(true);
  });

  it('a member that stops answering keeps its exports until the timeout, then they are withdrawn; it comes back', async () => {
    const c3 = members.get('cluster-3')!;
    c3.failNext(1_000_000, 503);
    c3.dropWatches();
    const down = Date.now();
    await until('Unreachable', () => managed('cluster-3')?.reason === 'Unreachable');
    expect(managed('cluster-3')?.status).toBe('False');
    // Within the timeout nothing changes for the others.
    expect(endpointsIn('cluster-2')).toEqual(['cluster-1', 'cluster-3']);
    await until('withdrawn', () => endpointsIn('cluster-2')?.length === 1, 10_000);
    expect(Date.now() - down).toBeGreaterThanOrEqual(2_500);
    expect(endpointsIn('cluster-1')).toEqual(['cluster-1']);
    // The Cluster's condition is written in the same pass as the imports, on another API server: either may land first.
    await until('ExportsWithdrawn', () => managed('cluster-3')?.reason === 'ExportsWithdrawn');
    expect(managed('cluster-3')).toMatchObject({ status: 'False', reason: 'ExportsWithdrawn' });
    c3.heal();
    await until('back', () => endpointsIn('cluster-2')?.length === 2, 10_000);
    await until('Managed=True again', () => managed('cluster-3')?.status === 'True');
  });

  it('a deleted export and a deleted Cluster converge', async () => {
    members.get('cluster-1')!.remove(Kinds.ServiceExport, 'httpbin', 'httpbin');
    await until('only cluster-3 left', () => endpointsIn('cluster-2')?.join() === 'cluster-3');
    hubServer.remove(Kinds.Cluster, undefined, 'cluster-3');
    await until('import gone everywhere', () => MEMBERS.every((m) => !members.get(m)!.object(Kinds.ServiceImport, 'httpbin', 'httpbin')));
    // What ecnet derived goes (its own write, after the import's); the users' own Services stay.
    await until('derived Service gone', () => !members.get('cluster-2')!.object(Kinds.Service, 'httpbin', 'httpbin'));
    expect(members.get('cluster-1')!.object(Kinds.Service, 'httpbin', 'httpbin')).toBeDefined();
    expect(members.get('cluster-3')!.object(Kinds.Service, 'httpbin', 'httpbin')).toBeDefined();
    // Without an import, and in a member no longer managed, the users' Services lose the label ecnet put there.
    for (const m of ['cluster-1', 'cluster-3']) {
      await until(`label gone in ${m}`, () => members.get(m)!.object<Service>(Kinds.Service, 'httpbin', 'httpbin')?.metadata.labels?.[IMPORTED_LABEL] === undefined);
    }
  });
});

describe('`ecnet controller --kubeconfig` (the CLI, a member kubeconfig kept in a Secret)', () => {
  const servers: KubeApiServer[] = [];
  let child: ChildProcess | undefined;
  let log = '';
  let dir: string | undefined;
  afterAll(async () => {
    child?.kill('SIGKILL');
    await Promise.all(servers.map((s) => s.close()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('reads Clusters from the hub, the kubeconfig from a Secret, and writes the import', async () => {
    const hubServer = await startKubeApiServer();
    const a = await startKubeApiServer();
    const b = await startKubeApiServer();
    servers.push(hubServer, a, b);
    a.put(ns('httpbin'));
    a.put(service('httpbin', 'httpbin', 8080));
    a.put(serviceExport('httpbin', 'httpbin'));
    hubServer.put(ns('ecnet-system'));
    hubServer.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'cluster-a', namespace: 'ecnet-system' }, data: { kubeconfig: Buffer.from(a.kubeconfig).toString('base64') } } as KubeObject);
    hubServer.put({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: 'cluster-a' }, spec: { region: 'default', zone: 'default', group: 'default', gatewayHost: 'gw-a.example.org', gatewayPort: 8080, kubeconfigSecretRef: { namespace: 'ecnet-system', name: 'cluster-a', key: 'kubeconfig' } } } as Cluster);
    hubServer.put({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: 'cluster-b' }, spec: { region: 'default', zone: 'default', group: 'default', gatewayHost: '10.0.2.9', gatewayPort: 80, kubeconfig: b.kubeconfig } } as Cluster);
    dir = mkdtempSync(join(tmpdir(), 'ecnet-kube-cli-'));
    const kubeconfig = join(dir, 'hub.kubeconfig');
    writeFileSync(kubeconfig, hubServer.kubeconfig);
    child = spawn(process.execPath, [join(packageRoot, 'dist', 'cli', 'main.js'), 'controller', '--kubeconfig', kubeconfig], { env: { ...process.env, ECNET_LOG_LEVEL: 'info' } });
    child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    const imp = await until(`the import in cluster-b (controller said: ${log})`, () => b.object<ServiceImport>(Kinds.ServiceImport, 'httpbin', 'httpbin'));
    expect(imp.spec.ports[0]?.endpoints).toEqual([{ clusterKey: 'default/default/default/cluster-a', target: { host: 'gw-a.example.org', ip: '', port: 8080, path: '/httpbin' } }]);
    await until('Managed=True on both', () =>
      ['cluster-a', 'cluster-b'].every((c) => hubServer.object<Cluster>(Kinds.Cluster, undefined, c)?.status?.conditions?.some((x: Condition) => x.type === 'Managed' && x.status === 'True')),
    );
    // A Cluster whose Secret is missing is not Managed, and says why.
    hubServer.put({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: 'cluster-c' }, spec: { region: 'default', zone: 'default', group: 'default', gatewayHost: '10.0.2.10', gatewayPort: 80, kubeconfigSecretRef: { namespace: 'ecnet-system', name: 'nope', key: 'kubeconfig' } } } as Cluster);
    const bad = await until('InvalidCredentials', () =>
      hubServer.object<Cluster>(Kinds.Cluster, undefined, 'cluster-c')?.status?.conditions?.find((x: Condition) => x.type === 'Managed' && x.reason !== 'Connecting'),
    );
    expect(bad).toMatchObject({ status: 'False', reason: 'InvalidCredentials', message: expect.stringContaining('Secret ecnet-system/nope not found') });
    // The Secret arrives later (as with `kubectl apply -f dir/`): the member connects without any edit.
    hubServer.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'nope', namespace: 'ecnet-system' }, data: { kubeconfig: Buffer.from(b.kubeconfig).toString('base64') } } as KubeObject);
    await until('cluster-c Managed=True', () =>
      hubServer.object<Cluster>(Kinds.Cluster, undefined, 'cluster-c')?.status?.conditions?.some((x: Condition) => x.type === 'Managed' && x.status === 'True'),
    );
    child.kill('SIGTERM');
    expect(await new Promise((r) => child!.once('exit', r))).toBe(0);
  });
});

describe('a controller (re)starting while the hub blips and a member is slow deletes nothing', () => {
  const servers: KubeApiServer[] = [];
  let controller: Controller | undefined;
  let hub: Source | undefined;
  afterAll(async () => {
    await controller?.close();
    hub?.destroy();
    await Promise.all(servers.map((s) => s.close()));
  });

  it('keeps the imports a previous run wrote until the slow member is read; then switches ClusterIP ↔ headless by replacing the Service', async () => {
    const hubServer = await startKubeApiServer();
    const m1 = await startKubeApiServer();
    const m2 = await startKubeApiServer();
    servers.push(hubServer, m1, m2);
    for (const [i, s] of [m1, m2].entries()) {
      hubServer.put({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: `m${i + 1}` }, spec: { region: 'default', zone: 'default', group: 'default', gatewayHost: `10.0.3.${i + 1}`, gatewayPort: 80, kubeconfig: s.kubeconfig } } as Cluster);
      s.put(ns('httpbin'));
    }
    m2.put(service('httpbin', 'httpbin', 8080));
    m2.put(serviceExport('httpbin', 'httpbin'));
    // What an earlier run left in m1: the import of m2's export and the derived Service.
    const labels = { 'app.kubernetes.io/managed-by': 'ecnet-controller' };
    m1.put({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'httpbin', namespace: 'httpbin', labels }, spec: { clusterIP: '10.96.9.9', clusterIPs: ['10.96.9.9'], ports: [{ port: 8080, protocol: 'TCP', targetPort: 8080 }] } } as KubeObject);
    m1.put({
      apiVersion: 'flomesh.io/v1alpha1',
      kind: 'ServiceImport',
      metadata: { name: 'httpbin', namespace: 'httpbin', labels },
      spec: { type: 'ClusterSetIP', sessionAffinity: 'None', serviceAccountName: '*', ips: ['10.96.9.9'], ports: [{ protocol: 'TCP', port: 8080, endpoints: [{ clusterKey: 'default/default/default/m2', target: { host: '10.0.3.2', ip: '10.0.3.2', port: 80, path: '/httpbin' } }] }] },
    } as KubeObject);
    hubServer.failNext(3, 503);
    m2.failNext(1_000_000, 503);
    hub = createKubernetesSource({ kubeconfig: hubServer.kubeconfig, backoff: { initialMs: 50, maxMs: 200, jitter: 0.2 } });
    controller = new Controller({ controlPlane: hub, connect: memberConnector({ controlPlane: hub, clustersDir: undefined }), memberTimeoutMs: 20_000, resyncMs: 300, debounceMs: 5 });
    await controller.start();
    await until('m1 Managed', () => hubServer.object<Cluster>(Kinds.Cluster, undefined, 'm1')?.status?.conditions?.some((c: Condition) => c.type === 'Managed' && c.status === 'True'));
    await new Promise((r) => setTimeout(r, 1000));
    const writes = () => m1.requests.filter((r) => r.method !== 'GET' && !r.path.endsWith('/status'));
    expect(writes()).toEqual([]);
    m2.heal();
    await until('m2 Managed', () => hubServer.object<Cluster>(Kinds.Cluster, undefined, 'm2')?.status?.conditions?.some((c: Condition) => c.type === 'Managed' && c.status === 'True'));
    await new Promise((r) => setTimeout(r, 500));
    // Read at last, m2 confirms what m1 holds: still nothing rewritten there, the same Service and address.
    expect(writes()).toEqual([]);
    expect(m1.object<Service>(Kinds.Service, 'httpbin', 'httpbin')?.spec.clusterIP).toBe('10.96.9.9');

    // The exporting Service turns headless: the derived Service must follow, which needs a new object.
    m2.put({ ...service('httpbin', 'httpbin', 8080), spec: { clusterIP: 'None', clusterIPs: ['None'], ports: [{ port: 8080, protocol: 'TCP' }], selector: { app: 'httpbin' } } });
    await until('headless derived Service', () => m1.object<Service>(Kinds.Service, 'httpbin', 'httpbin')?.spec.clusterIP === 'None');
    await until('Headless import without ips', () => {
      const i = m1.object<ServiceImport>(Kinds.ServiceImport, 'httpbin', 'httpbin');
      return i?.spec.type === 'Headless' && !i.spec.ips;
    });
    m2.put(service('httpbin', 'httpbin', 8080));
    await until('ClusterIP again', () => /^10\.96\./.test(m1.object<Service>(Kinds.Service, 'httpbin', 'httpbin')?.spec.clusterIP ?? ''));
    await until('import ips again', () => m1.object<ServiceImport>(Kinds.ServiceImport, 'httpbin', 'httpbin')?.spec.ips?.[0] === m1.object<Service>(Kinds.Service, 'httpbin', 'httpbin')?.spec.clusterIP);
  });
});
