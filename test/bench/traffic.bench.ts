// `npm run bench:traffic` (root): what the whole traffic path costs — client in a cgroup → connect4 → node
// proxy (`ecnet agent`) → CONNECT tunnel → `ecnet gateway` → backend — against the direct path measured in the
// same run (the same client process kind, outside the cgroup, straight to the backend; no program runs).
// Interleaved rounds, medians. Everything lives in a network namespace and cgroup of its own, removed at the end.
//   bulk throughput (MB/s), small request/response latency (p50/p99 µs, added), new connections/s, and the
//   agent's resident memory holding 10,000 proxied connections.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Datapath } from '../../src/bpf/datapath.js';
import { packageRoot } from '../../src/paths.js';
import { cleanupAll, kernelSkipReason, makeCgroup, makeNetns, makePinDir } from '../helpers/host.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');
const ROUNDS = 3;
const BULK_BYTES = 512 * 1024 * 1024;
const RR_COUNT = 3000;
const CPS_MS = 2000;
// Each proxied connection takes 2 descriptors in the agent and 2 in the gateway; this machine's hard limit is
// 20,000 per process (and raising it needs a privilege the sandbox does not give), so 9,000 are held and the
// per-connection figure is what scales to 10,000.
const HOLD = 9_000;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const f = (n: number, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

function load(args: Record<string, unknown>, cgroup?: string): { done: Promise<Record<string, number>>; child: ChildProcess } {
  const child = spawn(process.execPath, [join(packageRoot, 'test', 'bench', 'traffic-load.mjs'), JSON.stringify({ ...args, cgroup })], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const done = new Promise<Record<string, number>>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve(JSON.parse(line) as Record<string, number>);
    });
    child.on('close', (code) => (code ? reject(new Error(`load ${JSON.stringify(args)} exited ${code}`)) : undefined));
  });
  return { done, child };
}

/** Proxied connections the agent's proxy has handed to the kernel splicer so far. */
const kernelSpliced = async () => ((await (await fetch('http://127.0.0.1:15020/healthz')).json()) as { proxy: { kernelSpliced: number } }).proxy.kernelSpliced;
const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);

async function main(): Promise<void> {
  if (kernelSkipReason) {
    console.log(`traffic benchmark skipped: ${kernelSkipReason}`);
    return;
  }
  const pins = makePinDir();
  const root = mkdtempSync(join(tmpdir(), 'ecnet-bench-traffic-'));
  let cg: ReturnType<typeof makeCgroup> | undefined;
  let ns: ReturnType<typeof makeNetns> | undefined;
  const servers: Server[] = [];
  const children: ChildProcess[] = [];
  try {
    ns = makeNetns(['10.96.0.0/16', '10.250.0.0/24']);
    ns.enter();
    cg = makeCgroup();
    // Backends: a sink that answers with the byte count, and an echo.
    const sink = createServer({ allowHalfOpen: true }, (c) => {
      let n = 0;
      c.on('data', (d) => (n += d.length));
      c.on('end', () => c.end(String(n)));
    });
    const echo = createServer((c) => {
      c.setNoDelay(true);
      c.on('data', (d) => c.write(d));
      c.on('error', () => undefined);
    });
    for (const [s, port] of [[sink, 9301], [echo, 9302]] as const) {
      await new Promise<void>((r) => s.listen(port, '10.250.0.21', 4096, r));
      servers.push(s);
    }
    mkdirSync(join(root, 'cluster-1'));
    mkdirSync(join(root, 'cluster-2'));
    const svc = (name: string, port: number, backend: number) => `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: bench}
spec: {ports: [{name: tcp, port: ${port}}], selector: {app: ${name}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}-1, namespace: bench, labels: {kubernetes.io/service-name: ${name}}}
endpoints: [{addresses: [10.250.0.21], conditions: {ready: true}}]
ports: [{name: tcp, port: ${backend}, protocol: TCP}]
---
apiVersion: flomesh.io/v1alpha1
kind: ServiceExport
metadata: {name: ${name}, namespace: bench}
spec: {}
`;
    const imp = (name: string, ip: string, port: number) => `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: bench}
spec: {clusterIP: ${ip}, ports: [{name: tcp, port: ${port}}]}
---
apiVersion: flomesh.io/v1alpha1
kind: ServiceImport
metadata: {name: ${name}, namespace: bench}
spec:
  ips: [${ip}]
  ports: [{port: ${port}, endpoints: [{clusterKey: default/default/default/cluster-1, target: {host: 127.0.0.11, ip: 127.0.0.11, port: 18090, path: /}}]}]
---
apiVersion: flomesh.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: ${name}, namespace: bench}
spec: {lbType: ActiveActive}
`;
    writeFileSync(join(root, 'cluster-1', 'bench.yaml'), `${svc('sink', 8081, 9301)}---\n${svc('echo', 8082, 9302)}`);
    writeFileSync(join(root, 'cluster-2', 'bench.yaml'), `${imp('sink', '10.96.0.51', 8081)}---\n${imp('echo', '10.96.0.52', 8082)}`);
    const start = (args: string[]) => {
      const c = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
      children.push(c);
      return c;
    };
    start(['gateway', '--cluster', join(root, 'cluster-1'), '--listen', '127.0.0.11:18090', '--plain-tunnels']);
    const agent = start(['agent', '--cluster', join(root, 'cluster-2'), '--bpffs', pins.path, '--cgroup', cg.path, '--proxy', '127.0.0.1:15021', '--allow-loopback-proxy', '--admin', '127.0.0.1:15020', '--plain-tunnels']);
    for (let i = 0; ; i++) {
      const ok = await fetch('http://127.0.0.1:15020/healthz').then((r) => r.ok, () => false);
      const routes = ok ? ((await (await fetch('http://127.0.0.1:15020/routes')).json()) as unknown[]) : [];
      if (routes.length === 2) break;
      if (i > 200) throw new Error('the agent did not come up');
      await new Promise((r) => setTimeout(r, 50));
    }
    const agentPid = agent.pid!;

    const direct = { sink: '10.250.0.21:9301', echo: '10.250.0.21:9302' };
    const viaEcnet = { sink: '10.96.0.51:8081', echo: '10.96.0.52:8082' };
    const r: Record<string, { direct: number[]; ecnet: number[] }> = {};
    const add = (k: string, which: 'direct' | 'ecnet', v: number) => ((r[k] ??= { direct: [], ecnet: [] })[which].push(v));
    for (let round = 0; round < ROUNDS; round++) {
      for (const which of ['direct', 'ecnet'] as const) {
        const t = which === 'direct' ? direct : viaEcnet;
        const cgroup = which === 'direct' ? undefined : cg.path;
        add('bulk', which, (await load({ mode: 'bulk', target: t.sink, bytes: BULK_BYTES }, cgroup).done).mbps!);
        const lat = await load({ mode: 'rr', target: t.echo, count: RR_COUNT }, cgroup).done;
        add('p50', which, lat.p50!);
        add('p99', which, lat.p99!);
        const c = await load({ mode: 'cps', target: t.echo, durationMs: CPS_MS, concurrency: 8 }, cgroup).done;
        if (c.failed) throw new Error(`${c.failed} connections failed (${which})`);
        add('cps', which, c.cps!);
      }
    }
    const before = rssKb(agentPid);
    const splicedBefore = await kernelSpliced();
    const hold = load({ mode: 'hold', target: viaEcnet.echo, count: HOLD }, cg.path);
    const held = await hold.done;
    const during = rssKb(agentPid);
    const spliced = (await kernelSpliced()) - splicedBefore;
    hold.child.stdin!.end();

    const m = (k: string, w: 'direct' | 'ecnet') => median(r[k]![w]);
    console.log(`traffic benchmark (${cpus().length} cores; ${ROUNDS} interleaved rounds, medians; direct = same client, no program, straight to the backend)`);
    console.log(`  bulk throughput       direct ${f(m('bulk', 'direct'))} MB/s   via ecnet ${f(m('bulk', 'ecnet'))} MB/s   ratio ${f(m('bulk', 'ecnet') / m('bulk', 'direct'), 2)} (floor 0.35, aim 0.6)`);
    console.log(
      `  64 B request/response p50 direct ${f(m('p50', 'direct'))} µs   via ecnet ${f(m('p50', 'ecnet'))} µs   added ${f(m('p50', 'ecnet') - m('p50', 'direct'))} µs (floor ≤ 250)`,
    );
    console.log(
      `                        p99 direct ${f(m('p99', 'direct'))} µs   via ecnet ${f(m('p99', 'ecnet'))} µs   added ${f(m('p99', 'ecnet') - m('p99', 'direct'))} µs (floor ≤ 1000)`,
    );
    console.log(`  new connections/s     direct ${f(m('cps', 'direct'))}   via ecnet ${f(m('cps', 'ecnet'))}   ratio ${f(m('cps', 'ecnet') / m('cps', 'direct'), 2)} (floor 0.1)`);
    console.log(
      `  agent memory          ${f(before / 1024, 1)} MB idle, ${f(during / 1024, 1)} MB holding ${f(held.open!)} proxied connections (${held.failed} failed, ${f(spliced)} in the kernel splicer): ${f(((during - before) * 1024) / Math.max(1, held.open!) / 1024, 1)} KB each`,
    );
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    for (const s of servers) s.close();
    cleanupAll(
      () => Datapath.isLoaded(pins.path) && Datapath.uninstall(pins.path),
      () => cg?.remove(),
      () => pins.remove(),
      () => ns?.remove(),
      () => rmSync(root, { recursive: true, force: true }),
    );
  }
}

await main();
