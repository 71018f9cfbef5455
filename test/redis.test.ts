// Not only HTTP: redis-server behind cluster-1's gateway, exported; redis-benchmark in cluster-2's test cgroup
// against the imported ClusterIP, through `ecnet agent` and `ecnet gateway` as processes. Root only.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Datapath } from '../src/bpf/datapath.js';
import { packageRoot } from '../src/paths.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { type TestCgroup, type TestNetns, cleanupAll, makeCgroup, makeNetns, makePinDir } from './helpers/host.js';

const run = promisify(execFile);
const cli = join(packageRoot, 'dist', 'cli', 'main.js');

describeKernel('redis-benchmark through the traffic path', () => {
  const pins = makePinDir();
  let ns: TestNetns | undefined;
  let cg: TestCgroup | undefined;
  let root = '';
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'ecnet-redis-'));
    mkdirSync(join(root, 'cluster-1'));
    mkdirSync(join(root, 'cluster-2'));
    writeFileSync(
      join(root, 'cluster-1', 'redis.yaml'),
      `apiVersion: v1
kind: Service
metadata: {name: redis, namespace: cache}
spec: {ports: [{name: redis, port: 6379}], selector: {app: redis}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: redis-1, namespace: cache, labels: {kubernetes.io/service-name: redis}}
endpoints: [{addresses: [127.0.0.21], conditions: {ready: true}}]
ports: [{name: redis, port: 6379, protocol: TCP}]
---
apiVersion: flomesh.io/v1alpha1
kind: ServiceExport
metadata: {name: redis, namespace: cache}
spec: {}
`,
    );
    writeFileSync(
      join(root, 'cluster-2', 'redis.yaml'),
      `apiVersion: flomesh.io/v1alpha1
kind: ServiceImport
metadata: {name: redis, namespace: cache}
spec:
  ips: [10.96.0.63]
  ports: [{port: 6379, endpoints: [{clusterKey: default/default/default/cluster-1, target: {host: 127.0.0.11, ip: 127.0.0.11, port: 18070, path: /}}]}]
---
apiVersion: flomesh.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: redis, namespace: cache}
spec: {lbType: Locality, targets: [{clusterKey: default/default/default/cluster-1}]}
`,
    );
    ns = makeNetns(['10.96.0.0/16']);
    ns.enter();
    cg = makeCgroup();
    // Debian ships the server as redis-check-rdb, which acts as the server when called redis-server.
    children.push(spawn('/usr/bin/redis-check-rdb', ['--bind', '127.0.0.21', '--port', '6379', '--save', '', '--appendonly', 'no'], { argv0: 'redis-server', stdio: 'ignore' }));
    children.push(spawn(process.execPath, [cli, 'gateway', '--cluster', join(root, 'cluster-1'), '--listen', '127.0.0.11:18070'], { stdio: 'ignore' }));
    children.push(
      spawn(process.execPath, [cli, 'agent', '--cluster', join(root, 'cluster-2'), '--bpffs', pins.path, '--cgroup', cg.path, '--proxy', '127.0.0.1:15031', '--admin', '127.0.0.1:15030'], {
        stdio: 'ignore',
      }),
    );
    for (let i = 0; ; i++) {
      const ok = await fetch('http://127.0.0.1:15030/healthz').then((r) => r.ok, () => false);
      const pong = await run('redis-cli', ['-h', '127.0.0.21', 'ping']).then((r) => r.stdout.trim() === 'PONG', () => false);
      if (ok && pong) break;
      if (i > 200) throw new Error('agent or redis did not come up');
      await new Promise((r) => setTimeout(r, 50));
    }
  });
  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
    cleanupAll(
      () => Datapath.isLoaded(pins.path) && Datapath.uninstall(pins.path),
      () => cg?.remove(),
      () => pins.remove(),
      () => ns?.remove(),
      () => root && rmSync(root, { recursive: true, force: true }),
    );
  });

  it('completes with no errors, and every connection went through the proxy', async () => {
    // redis-benchmark joins the client cgroup first, so connect4 sees its connections.
    const { stdout, stderr } = await run('sh', ['-c', `echo $$ > ${cg!.path}/cgroup.procs && exec redis-benchmark -h 10.96.0.63 -p 6379 -n 2000 -c 10 -t set,get,incr,lpush -q`], {
      timeout: 60_000,
    });
    expect(stderr).not.toMatch(/error/i);
    const lines = stdout.split(/\r|\n/).filter((l) => /requests per second/.test(l));
    expect(lines.map((l) => l.split(':')[0])).toEqual(['SET', 'GET', 'INCR', 'LPUSH']);
    const admin = (await (await fetch('http://127.0.0.1:15030/healthz')).json()) as { proxy: { proxied: number; refused: number } };
    expect(admin.proxy.proxied).toBeGreaterThanOrEqual(40);
    expect(admin.proxy.refused).toBe(0);
  });
});
