// `ecnet gateway`, `ecnet agent` and `ecnet routes` as processes, on cluster directories: cluster-1 exports
// shop/web (a real backend behind its gateway), cluster-2 imports it; a client in cluster-2's test cgroup calls
// the ClusterIP and is answered through the agent's datapath, proxy and cluster-1's gateway. Root only.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Datapath } from '../src/bpf/datapath.js';
import { packageRoot } from '../src/paths.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { type TestCgroup, type TestNetns, cleanupAll, makeCgroup, makeNetns, makePinDir, runClient } from './helpers/host.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');

describeKernel('ecnet agent, gateway and routes (processes)', () => {
  const pins = makePinDir();
  let ns: TestNetns | undefined;
  let cg: TestCgroup | undefined;
  let root = '';
  let backend: Server | undefined;
  const children: ChildProcess[] = [];
  const logs = new Map<string, string>();
  const start = (name: string, args: string[]) => {
    const c = spawn(process.execPath, [cli, ...args], { env: { ...process.env, ECNET_LOG_LEVEL: 'warn' } });
    logs.set(name, '');
    c.stderr?.on('data', (d: Buffer) => logs.set(name, logs.get(name) + d.toString()));
    children.push(c);
    return c;
  };
  const until = async (what: string, fn: () => Promise<boolean> | boolean, ms = 10_000) => {
    const end = Date.now() + ms;
    while (!(await fn())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(Object.fromEntries(logs))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'ecnet-traffic-'));
    for (const c of ['cluster-1', 'cluster-2']) mkdirSync(join(root, c));
    writeFileSync(
      join(root, 'cluster-1', 'web.yaml'),
      `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 8080}], selector: {app: web}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
endpoints: [{addresses: [10.250.0.21], conditions: {ready: true}}]
ports: [{name: http, port: 9100, protocol: TCP}]
---
apiVersion: flomesh.io/v1alpha1
kind: ServiceExport
metadata: {name: web, namespace: shop}
spec: {}
`,
    );
    writeFileSync(
      join(root, 'cluster-2', 'web-import.yaml'),
      `# The derived Service the controller makes in an importing cluster: the import's ClusterIP is its own.
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {app.kubernetes.io/managed-by: ecnet-controller, flomesh.io/service-import: web}}
spec: {clusterIP: 10.96.0.30, ports: [{name: http, port: 8080}]}
---
apiVersion: flomesh.io/v1alpha1
kind: ServiceImport
metadata: {name: web, namespace: shop}
spec:
  ips: [10.96.0.30]
  ports: [{port: 8080, endpoints: [{clusterKey: default/default/default/cluster-1, target: {host: 127.0.0.11, ip: 127.0.0.11, port: 18081, path: /}}]}]
---
apiVersion: flomesh.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: web, namespace: shop}
spec: {lbType: FailOver, targets: [{clusterKey: default/default/default/cluster-1}]}
`,
    );
    // 10.250.0.0/24: the backend's address, local but not loopback (the gateway never dials loopback endpoints).
    ns = makeNetns(['10.96.0.0/16', '10.250.0.0/24']);
    ns.enter();
    cg = makeCgroup();
    backend = createServer({ allowHalfOpen: true }, (c) => {
      c.on('data', () => undefined);
      c.on('end', () => c.end('web in cluster-1\n'));
    });
    await new Promise<void>((r) => backend!.listen(9100, '10.250.0.21', r));
    start('gateway', ['gateway', '--cluster', join(root, 'cluster-1'), '--listen', '127.0.0.11:18081', '--plain-tunnels']);
    start('agent', ['agent', '--cluster', join(root, 'cluster-2'), '--bpffs', pins.path, '--cgroup', cg.path, '--proxy', '127.0.0.1:15011', '--allow-loopback-proxy', '--admin', '127.0.0.1:15010', '--plain-tunnels']);
    await until('the agent healthy', () => fetch('http://127.0.0.1:15010/healthz').then((r) => r.ok, () => false));
    // The gateway is a process of its own: the agent's first active check may run before it listens and mark it
    // unhealthy (a client then meets a gateway not yet there). Wait until the agent itself sees it healthy.
    await until('the gateway serving', () => fetch('http://127.0.0.11:18081/healthz').then((r) => r.ok, () => false));
    await until('the agent seeing the gateway healthy', () =>
      fetch('http://127.0.0.1:15010/routes').then(
        (r) => r.json().then((routes: { targets: { healthy: boolean }[] }[]) => routes.length > 0 && routes.every((x) => x.targets.every((t) => t.healthy))),
        () => false,
      ),
      20_000,
    );
  });
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    backend?.close();
    cleanupAll(
      () => Datapath.uninstall(pins.path),
      () => cg?.remove(),
      () => pins.remove(),
      () => ns?.remove(),
      () => root && rmSync(root, { recursive: true, force: true }),
    );
  });

  it('a client in cluster-2 calls the ClusterIP and is answered from cluster-1', async () => {
    const results = await runClient({ cgroup: cg!.path, targets: ['10.96.0.30:8080', '10.96.0.30:8080', '10.96.0.30:8080'] });
    expect(results.map((r) => [r.peer, r.reply?.trim() ?? r.error])).toEqual(Array(3).fill(['10.96.0.30:8080', 'web in cluster-1']));
  });

  it('`ecnet routes` shows the service, its target, health and the decision', () => {
    const r = spawnSync(process.execPath, [cli, 'routes', '--admin', '127.0.0.1:15010'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^tunnels: plain TCP/);
    expect(r.stdout).toMatch(/^SERVICE\s+ADDRESS\s+POLICY\s+TARGET\s+GATEWAY\s+WEIGHT\s+HEALTH\s+DECISION\n/);
    expect(r.stdout).toMatch(/shop\/web\s+10\.96\.0\.30:8080\s+FailOver\s+default\/default\/default\/cluster-1\s+127\.0\.0\.11:18081\s+healthy\s+default\/default\/default\/cluster-1/);
  });

  it('stopping the agent leaves the datapath pinned and the redirect in place (a restart takes over)', async () => {
    const agent = children[1]!;
    agent.kill('SIGTERM');
    expect(await new Promise((r) => agent.once('exit', r))).toBe(0);
    expect(Datapath.isLoaded(pins.path)).toBe(true);
    const dp = Datapath.openPinned(pins.path);
    try {
      expect(dp.services.get({ ip: '10.96.0.30', port: 8080, protocol: 'tcp' })).toBeDefined();
    } finally {
      dp.close();
    }
    const gw = children[0]!;
    gw.kill('SIGTERM');
    expect(await new Promise((r) => gw.once('exit', r))).toBe(0);
  });
});
