// `npm run bench:local` (root): the traffic path pod to pod on `ecnet local`, against the direct path measured
// in the same run. Direct: a pod of cluster-1 to the backend pod of cluster-1 (across namespaces, through the
// node, no ecnet). Through ecnet: a pod of cluster-2 to the imported ClusterIP → datapath → cluster-2's proxy →
// underlay → cluster-1's gateway → the same backend pod. Interleaved rounds, medians. Twice: the default install
// (mTLS between clusters, the bytes in sealed records) and `local up --plain-tunnels`, side by side.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/paths.js';
import { kernelSkipReason } from '../helpers/host.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');
const loadScript = join(packageRoot, 'test', 'bench', 'traffic-load.mjs');
const ROUNDS = 3;
const stateDir = mkdtempSync(join(tmpdir(), 'ecnet-bench-local-'));
const env = { ...process.env, ECNET_LOCAL_DIR: join(stateDir, 'state') };
const ecnet = (...args: string[]): string => {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`ecnet ${args.join(' ')} → ${r.status}: ${r.stderr}`);
  return r.stdout;
};
const load = (cluster: string, args: Record<string, unknown>): Record<string, number> =>
  JSON.parse(ecnet('local', 'exec', '--cluster', cluster, '--', process.execPath, loadScript, JSON.stringify(args)).trim().split('\n')[0]!) as Record<string, number>;
/** The C load client (test/bench/load.c, built by `npm run build`): the client's own cost hides less of the path's. */
const cLoadBin = join(packageRoot, 'build', 'bench', 'ecnet-load');
const cLoad = (cluster: string, args: string[]): Record<string, number> =>
  JSON.parse(ecnet('local', 'exec', '--cluster', cluster, '--', cLoadBin, ...args).trim().split('\n')[0]!) as Record<string, number>;
/** CPU seconds (user + system) a process has used so far. */
const cpuSeconds = (pid: number): number => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};
const pidOf = (name: string): number => (JSON.parse(readFileSync(join(stateDir, 'state', 'set.json'), 'utf8')) as { pids: Record<string, number> }).pids[name]!;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const f = (n: number, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

type Figures = Record<string, { direct: number[]; ecnet: number[] }>;

/** One cluster set (`up` with `upArgs`): its direct path and the path through ecnet, in interleaved rounds. */
function measure(upArgs: string[]): Figures {
  try {
    ecnet('local', 'up', '--clusters', 'cluster-1,cluster-2', ...upArgs);
    const sink = "require('net').createServer({allowHalfOpen:true},c=>{let n=0;c.on('data',d=>n+=d.length);c.on('end',()=>c.end(String(n)))}).listen(9301)";
    const echo = "require('net').createServer(c=>{c.setNoDelay(true);c.on('data',d=>c.write(d));c.on('error',()=>{})}).listen(9302)";
    ecnet('local', 'run', '--cluster', 'cluster-1', '--namespace', 'bench', '--labels', 'app=sink', '--name', 'sink-0', '--', process.execPath, '-e', sink);
    ecnet('local', 'run', '--cluster', 'cluster-1', '--namespace', 'bench', '--labels', 'app=echo', '--name', 'echo-0', '--', process.execPath, '-e', echo);
    const manifests = join(stateDir, 'bench.yaml');
    const svc = (name: string, port: number, target: number) =>
      `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: bench}\nspec: {ports: [{name: tcp, port: ${port}, targetPort: ${target}}], selector: {app: ${name}}}\n---\napiVersion: flomesh.io/v1alpha1\nkind: ServiceExport\nmetadata: {name: ${name}, namespace: bench}\nspec: {}\n`;
    writeFileSync(manifests, `${svc('sink', 8081, 9301)}---\n${svc('echo', 8082, 9302)}`);
    ecnet('local', 'apply', '--cluster', 'cluster-1', '-f', manifests);
    const gtp = (name: string) => `apiVersion: flomesh.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: ${name}, namespace: bench}\nspec: {lbType: ActiveActive}\n`;
    writeFileSync(manifests, `${gtp('sink')}---\n${gtp('echo')}`);
    ecnet('local', 'apply', '--cluster', 'cluster-2', '-f', manifests);
    const podIp = (name: string) => (JSON.parse(ecnet('local', 'get', 'pod', name, '-n', 'bench', '--cluster', 'cluster-1', '-o', 'json')) as { status: { podIP: string } }).status.podIP;
    const direct = { sink: `${podIp('sink-0')}:9301`, echo: `${podIp('echo-0')}:9302` };
    let via = { sink: '', echo: '' };
    for (let i = 0; i < 100 && !via.echo; i++) {
      const imports = JSON.parse(ecnet('local', 'get', 'simp', '-n', 'bench', '--cluster', 'cluster-2', '-o', 'json')) as { items: { metadata: { name: string }; spec: { ips?: string[] } }[] };
      const ip = (n: string) => imports.items.find((x) => x.metadata.name === n)?.spec.ips?.[0];
      if (ip('sink') && ip('echo')) via = { sink: `${ip('sink')}:8081`, echo: `${ip('echo')}:8082` };
      else spawnSync('sleep', ['0.2']);
    }
    if (!via.echo) throw new Error('the imports did not reach cluster-2');
    const r: Figures = {};
    const add = (k: string, w: 'direct' | 'ecnet', v: number) => ((r[k] ??= { direct: [], ecnet: [] })[w].push(v));
    for (let round = 0; round < ROUNDS; round++) {
      for (const [w, cluster, t] of [['direct', 'cluster-1', direct], ['ecnet', 'cluster-2', via]] as const) {
        add('bulk', w, load(cluster, { mode: 'bulk', target: t.sink, bytes: 256 * 1024 * 1024 }).mbps!);
        const lat = load(cluster, { mode: 'rr', target: t.echo, count: 2000 });
        add('p50', w, lat.p50!);
        add('p99', w, lat.p99!);
        const c = load(cluster, { mode: 'cps', target: t.echo, durationMs: 2000, concurrency: 8 });
        if (c.failed) throw new Error(`${c.failed} connections failed (${w})`);
        add('cps', w, c.cps!);
        // The same with the C client, and what the agent and the gateway spend per 1,000 new connections.
        add('c bulk', w, cLoad(cluster, ['bulk', t.sink, String(1 << 30)]).mbps!);
        const cl = cLoad(cluster, ['rr', t.echo, '5000']);
        add('c p50', w, cl.p50!);
        add('c p99', w, cl.p99!);
        const busy = w === 'ecnet' ? [pidOf('cluster-2-agent'), pidOf('cluster-1-gateway')] : [];
        const before = busy.map(cpuSeconds);
        for (const threads of [4, 8]) {
          const cc = cLoad(cluster, ['cps', t.echo, String(threads), '2000']);
          if (cc.failed) throw new Error(`${cc.failed} connections of the C client failed (${w})`);
          add(`c cps ${threads}`, w, cc.cps!);
          if (threads === 4 && busy.length) {
            const used = busy.map((pid, k) => cpuSeconds(pid) - before[k]!);
            add('agent cpu ms/1000', w, (used[0]! * 1e6) / cc.ok!);
            add('gateway cpu ms/1000', w, (used[1]! * 1e6) / cc.ok!);
          }
        }
      }
    }
    return r;
  } finally {
    spawnSync(process.execPath, [cli, 'local', 'down'], { env });
  }
}

async function main(): Promise<void> {
  if (kernelSkipReason) return void console.log(`local traffic benchmark skipped: ${kernelSkipReason}`);
  try {
    // The default install (mTLS with cluster identities: sealed records), then the same with plain tunnels;
    // each against its own direct path, so that the two compare as ratios.
    // And plain tunnels once more with --fast-path node (Node accepts every connection): what the native front
    // (src/proxy/front.ts, src/gateway/front.ts) changes.
    const mtls = measure([]);
    const plain = measure(['--plain-tunnels']);
    const plainNode = measure(['--plain-tunnels', '--fast-path', 'node']);
    const m = (r: Figures, k: string, w: 'direct' | 'ecnet') => median(r[k]![w]);
    console.log(`local traffic benchmark, pod to pod on ecnet local (${cpus().length} cores; ${ROUNDS} interleaved rounds per cluster set, medians)`);
    for (const [name, r] of [['mTLS (default)', mtls], ['plain tunnels', plain], ['plain tunnels, --fast-path node', plainNode]] as const) {
      console.log(`  ${name}`);
      console.log(`    bulk throughput       direct ${f(m(r, 'bulk', 'direct'))} MB/s   via ecnet ${f(m(r, 'bulk', 'ecnet'))} MB/s   ratio ${f(m(r, 'bulk', 'ecnet') / m(r, 'bulk', 'direct'), 2)} (floor 0.35, aim 0.6)`);
      console.log(`    64 B request/response p50 direct ${f(m(r, 'p50', 'direct'))} µs   via ecnet ${f(m(r, 'p50', 'ecnet'))} µs   added ${f(m(r, 'p50', 'ecnet') - m(r, 'p50', 'direct'))} µs (floor ≤ 250)`);
      console.log(`                          p99 direct ${f(m(r, 'p99', 'direct'))} µs   via ecnet ${f(m(r, 'p99', 'ecnet'))} µs   added ${f(m(r, 'p99', 'ecnet') - m(r, 'p99', 'direct'))} µs (floor ≤ 1000)`);
      console.log(`    new connections/s     direct ${f(m(r, 'cps', 'direct'))}   via ecnet ${f(m(r, 'cps', 'ecnet'))}   ratio ${f(m(r, 'cps', 'ecnet') / m(r, 'cps', 'direct'), 2)} (floor 0.1)`);
      console.log('    with the C client:');
      console.log(`    bulk (1 GiB)          direct ${f(m(r, 'c bulk', 'direct'))} MB/s   via ecnet ${f(m(r, 'c bulk', 'ecnet'))} MB/s   ratio ${f(m(r, 'c bulk', 'ecnet') / m(r, 'c bulk', 'direct'), 2)}`);
      console.log(`    64 B request/response p50 direct ${f(m(r, 'c p50', 'direct'))} µs   via ecnet ${f(m(r, 'c p50', 'ecnet'))} µs   added ${f(m(r, 'c p50', 'ecnet') - m(r, 'c p50', 'direct'))} µs; p99 added ${f(m(r, 'c p99', 'ecnet') - m(r, 'c p99', 'direct'))} µs`);
      for (const threads of [4, 8]) {
        const k = `c cps ${threads}`;
        console.log(`    new connections/s, ${threads} threads  direct ${f(m(r, k, 'direct'))}   via ecnet ${f(m(r, k, 'ecnet'))}   ratio ${f(m(r, k, 'ecnet') / m(r, k, 'direct'), 2)}`);
      }
      console.log(`    CPU per 1,000 new connections (4 threads): agent ${f(m(r, 'agent cpu ms/1000', 'ecnet'))} ms, gateway ${f(m(r, 'gateway cpu ms/1000', 'ecnet'))} ms`);
    }
    const ratio = (r: Figures, k: string) => m(r, k, 'ecnet') / m(r, k, 'direct');
    const rel = (a: Figures, b: Figures, k: string) => ratio(a, k) / ratio(b, k);
    console.log(`  mTLS against plain (each against its direct path): bulk ${f(rel(mtls, plain, 'bulk'), 2)}× (aim 0.8), new connections/s ${f(rel(mtls, plain, 'cps'), 2)}×`);
    console.log(`  native front against --fast-path node (plain): new connections/s (C, 4 threads) ${f(rel(plain, plainNode, 'c cps 4'), 2)}×, CPU per connection agent ${f(m(plainNode, 'agent cpu ms/1000', 'ecnet') / m(plain, 'agent cpu ms/1000', 'ecnet'), 1)}× less, gateway ${f(m(plainNode, 'gateway cpu ms/1000', 'ecnet') / m(plain, 'gateway cpu ms/1000', 'ecnet'), 1)}× less`);
    // Issue 15's goals, C clients, plain tunnels with the native front.
    const added = (k: string) => m(plain, k, 'ecnet') - m(plain, k, 'direct');
    const goal = (ok: boolean) => (ok ? 'met' : 'NOT MET');
    console.log('  goals (plain tunnels, native front, C client):');
    console.log(`    new connections/s ≥ 0.3× direct (stretch 0.5): ${f(ratio(plain, 'c cps 4'), 2)}× (4 threads), ${f(ratio(plain, 'c cps 8'), 2)}× (8 threads): ${goal(ratio(plain, 'c cps 4') >= 0.3)}`);
    console.log(`    grows with the client threads (4 → 8): ${f(m(plain, 'c cps 4', 'ecnet'))} → ${f(m(plain, 'c cps 8', 'ecnet'))}: ${goal(m(plain, 'c cps 8', 'ecnet') > m(plain, 'c cps 4', 'ecnet'))}`);
    console.log(`    bulk ≥ 0.6× (stretch 0.8): ${f(ratio(plain, 'c bulk'), 2)}×: ${goal(ratio(plain, 'c bulk') >= 0.6)}`);
    console.log(`    added latency p50 ≤ 60 µs: ${f(added('c p50'))} µs: ${goal(added('c p50') <= 60)}; p99 ≤ 400 µs: ${f(added('c p99'))} µs: ${goal(added('c p99') <= 400)}`);
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
}

await main();
