// End to end on `ecnet local`: the seed's layout (control-plane, cluster-1..3), a server answering with its
// pod name in cluster-1 and cluster-3, a client pod in cluster-2 calling http://httpbin.httpbin:8080 by name.
// Everything through the CLI, as a user would; `down` must leave nothing. Root only.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { packageRoot } from '../src/paths.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { type Family, parseMetrics, sumOf } from '../src/metrics/parse.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');
const examples = join(packageRoot, 'examples');
const stateDir = join(tmpdir(), `ecnet-local-e2e-${process.pid}`);
const env = { ...process.env, ECNET_LOCAL_DIR: stateDir };
const ecnet = (...args: string[]) => {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`ecnet ${args.join(' ')} → ${r.status}: ${r.stderr}`);
  return r.stdout;
};
/**
 * The same, without blocking this worker: a command that runs for many seconds (the demo, 1,000 requests) must
 * leave the worker's event loop free, or vitest's calls to it time out on a busy machine.
 */
const ecnetAsync = (...args: string[]) =>
  new Promise<string>((resolve, reject) => {
    const c = spawn(process.execPath, [cli, ...args], { env });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`ecnet ${args.join(' ')} → ${code}: ${err}`))));
  });
/** n calls from a throwaway pod of cluster-2, one line each: the answer, or FAIL. */
const calls = (n: number) =>
  ecnet('local', 'exec', '--cluster', 'cluster-2', '--', 'sh', '-c', `for i in $(seq ${n}); do curl -s -m 2 http://httpbin.httpbin:8080/ || echo FAIL; done`)
    .trim()
    .split('\n');

/**
 * A component's /metrics on port 15090 (ECNET_METRICS, as the manifests set it), read from inside its network
 * namespace the way a Prometheus in the cluster reaches it: a cluster's node (its agent) or its gateway pod.
 */
const scrape = (cluster: string, component: 'agent' | 'gateway'): Map<string, Family> => {
  const state = JSON.parse(readFileSync(join(stateDir, 'set.json'), 'utf8')) as { gateways: Record<string, { netns: string; ip: string }> };
  const [netns, ip] = component === 'agent' ? [`ecnet-l-${cluster}`, '127.0.0.1'] : [state.gateways[cluster]!.netns, state.gateways[cluster]!.ip];
  return parseMetrics(execFileSync('nsenter', [`--net=/run/netns/${netns}`, 'curl', '-sf', '-m', '5', `http://${ip}:15090/metrics`], { encoding: 'utf8' }));
};

/** Files the tests write beside the state directory, removed in afterAll even when a test fails. */
const scratch: string[] = [];
const scratchFile = (name: string) => {
  const f = join(stateDir, '..', `ecnet-e2e-${name}-${process.pid}.yaml`);
  scratch.push(f);
  return f;
};

describeKernel('ecnet local: the seed walkthrough end to end', () => {
  const server = join(stateDir, '..', `ecnet-e2e-server-${process.pid}.mjs`);

  beforeAll(async () => {
    writeFileSync(server, "import http from 'node:http';\nhttp.createServer((q, s) => s.end(`${process.env.HOSTNAME}\\n`)).listen(8080);\n");
    await ecnetAsync('local', 'up');
    for (const c of ['cluster-1', 'cluster-3']) {
      ecnet('local', 'run', '--cluster', c, '--namespace', 'httpbin', '--labels', 'app=pipy', '--name', `httpbin-${c}`, '--', process.execPath, server);
      ecnet('local', 'apply', '--cluster', c, '-n', 'httpbin', '-f', join(examples, 'httpbin.yaml'));
    }
    for (const c of ['cluster-1', 'cluster-2', 'cluster-3']) ecnet('local', 'apply', '--cluster', c, '-n', 'httpbin', '-f', join(examples, 'httpbin-export.yaml'));
  });
  afterAll(() => {
    spawnSync(process.execPath, [cli, 'local', 'down'], { env });
    for (const f of scratch) rmSync(f, { force: true });
    try {
      execFileSync('rm', ['-f', server]);
    } catch {
      // gone
    }
  });

  it('without a policy the call from cluster-2 fails fast', async () => {
    // Wait until the import has its address in cluster-2 (the controller has run).
    const end = Date.now() + 15_000;
    while (!/ClusterSetIP\s+10\.96\./.test(ecnet('local', 'get', 'simp', '-n', 'httpbin', '--cluster', 'cluster-2')) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    expect(calls(3)).toEqual(['FAIL', 'FAIL', 'FAIL']);
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('ActiveActive over cluster-1 and cluster-3: answers from pods of both', async () => {
    ecnet('local', 'apply', '--cluster', 'cluster-2', '-n', 'httpbin', '-f', join(examples, 'httpbin-gtp-active-active.yaml'));
    await new Promise((r) => setTimeout(r, 500));
    const answers = calls(30);
    expect(answers.filter((a) => a === 'FAIL')).toEqual([]);
    expect(new Set(answers)).toEqual(new Set(['httpbin-cluster-1', 'httpbin-cluster-3']));
    // The clusterset.local name (docs/dns.md) reaches the same import.
    const byClusterset = ecnet('local', 'exec', '--cluster', 'cluster-2', '--', 'sh', '-c', 'for i in $(seq 6); do curl -s -m 2 http://httpbin.httpbin.svc.clusterset.local:8080/ || echo FAIL; done').trim().split('\n');
    expect(byClusterset.filter((a) => a === 'FAIL')).toEqual([]);
    expect(byClusterset.every((a) => a.startsWith('httpbin-cluster-'))).toBe(true);
  });

  it('ActiveActive with weights 3:1: the answers follow them within ±10% over 1,000 requests', async () => {
    const policy = scratchFile('weights');
    writeFileSync(
      policy,
      'apiVersion: flomesh.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: httpbin}\nspec:\n  lbType: ActiveActive\n  targets: [{clusterKey: default/default/default/cluster-1, weight: 75}, {clusterKey: default/default/default/cluster-3, weight: 25}]\n',
    );
    ecnet('local', 'apply', '--cluster', 'cluster-2', '-n', 'httpbin', '-f', policy);
    await new Promise((r) => setTimeout(r, 500));
    const before = { agent: scrape('cluster-2', 'agent'), 'cluster-1': scrape('cluster-1', 'gateway'), 'cluster-3': scrape('cluster-3', 'gateway') };
    // One client process, a new connection per request (each is a routing decision).
    const client =
      "const http=require('http');let n=0,c={};const go=()=>http.get({host:'httpbin.httpbin',port:8080,agent:false},r=>{let b='';r.on('data',d=>b+=d);r.on('end',()=>{c[b.trim()]=(c[b.trim()]||0)+1;++n<1000?go():console.log(JSON.stringify(c))})}).on('error',e=>{c.error=(c.error||0)+1;++n<1000?go():console.log(JSON.stringify(c))});go()";
    const counts = JSON.parse(await ecnetAsync('local', 'exec', '--cluster', 'cluster-2', '--', process.execPath, '-e', client)) as Record<string, number>;
    expect(counts.error).toBeUndefined();
    expect(Math.abs((counts['httpbin-cluster-1'] ?? 0) / 1000 - 0.75)).toBeLessThan(0.075);
    expect(Math.abs((counts['httpbin-cluster-3'] ?? 0) / 1000 - 0.25)).toBeLessThan(0.025);
    execFileSync('rm', ['-f', policy]);
    // The metrics tell the same story: cluster-2's node proxy opened exactly the connections each cluster answered,
    // each cluster's gateway opened as many tunnels, and both ends counted the same bytes each way.
    const svc = { namespace: 'httpbin', service: 'httpbin' };
    let agent = scrape('cluster-2', 'agent');
    for (let i = 0; i < 100 && sumOf(agent, 'ecnet_proxy_connections_active', svc) > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      agent = scrape('cluster-2', 'agent');
    }
    const delta = (now: Map<string, Family>, was: Map<string, Family>, name: string, match: Record<string, string>) => sumOf(now, name, match) - sumOf(was, name, match);
    for (const c of ['cluster-1', 'cluster-3'] as const) {
      const cluster = `default/default/default/${c}`;
      const gw = scrape(c, 'gateway');
      expect(delta(agent, before.agent, 'ecnet_proxy_connections_opened_total', { ...svc, cluster }), c).toBe(counts[`httpbin-${c}`]);
      expect(delta(gw, before[c], 'ecnet_gateway_tunnels_opened_total', svc), c).toBe(counts[`httpbin-${c}`]);
      for (const direction of ['sent', 'received']) {
        const proxyBytes = delta(agent, before.agent, 'ecnet_proxy_bytes_total', { ...svc, cluster, direction });
        expect(proxyBytes, `${c} ${direction}`).toBeGreaterThan(0);
        expect(delta(gw, before[c], 'ecnet_gateway_bytes_total', { ...svc, direction }), `${c} ${direction}`).toBe(proxyBytes);
      }
    }
    expect(delta(agent, before.agent, 'ecnet_proxy_connection_attempts_failed_total', svc)).toBe(0);
    expect(delta(agent, before.agent, 'ecnet_proxy_connections_accepted_total', {})).toBe(1000);
    expect(sumOf(agent, 'ecnet_proxy_target_healthy', svc)).toBe(2);
  });

  it('not only HTTP: redis-benchmark in cluster-2 against the imported name, served by redis-server in cluster-1', () => {
    // Debian ships the server as redis-check-rdb, which acts as the server when called redis-server.
    ecnet('local', 'run', '--cluster', 'cluster-1', '--namespace', 'cache', '--labels', 'app=redis', '--name', 'redis-0', '--', 'bash', '-c', 'exec -a redis-server /usr/bin/redis-check-rdb --port 6379 --protected-mode no --save "" --appendonly no');
    const manifests = scratchFile('redis');
    writeFileSync(
      manifests,
      'apiVersion: v1\nkind: Service\nmetadata: {name: redis, namespace: cache}\nspec: {ports: [{name: redis, port: 6379}], selector: {app: redis}}\n---\napiVersion: flomesh.io/v1alpha1\nkind: ServiceExport\nmetadata: {name: redis, namespace: cache}\nspec: {}\n',
    );
    ecnet('local', 'apply', '--cluster', 'cluster-1', '-f', manifests);
    writeFileSync(manifests, 'apiVersion: flomesh.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: redis, namespace: cache}\nspec: {lbType: Locality, targets: [{clusterKey: default/default/default/cluster-1}]}\n');
    ecnet('local', 'apply', '--cluster', 'cluster-2', '-f', manifests);
    execFileSync('rm', ['-f', manifests]);
    const end = Date.now() + 15_000;
    let out = '';
    while (Date.now() < end) {
      const r = spawnSync(process.execPath, [cli, 'local', 'exec', '--cluster', 'cluster-2', '--', 'redis-benchmark', '-h', 'redis.cache', '-p', '6379', '-n', '2000', '-c', '10', '-t', 'set,get,incr,lpush', '-q'], { encoding: 'utf8', env, timeout: 30_000 });
      out = `${r.stdout}${r.stderr}`;
      if (r.status === 0 && /LPUSH: [\d.]+ requests per second/.test(out)) break;
      spawnSync('sleep', ['0.3']);
    }
    expect(out).not.toMatch(/error/i);
    expect(out.split(/\r|\n/).filter((l) => /requests per second/.test(l)).map((l) => l.split(':')[0])).toEqual(['SET', 'GET', 'INCR', 'LPUSH']);
  });

  it("upgrades lose nothing: through 3 hand-overs of cluster-2's agent and a rolling update of cluster-1's gateway, a long-lived connection byte for byte, 0 failed new connections, redis-benchmark without an error; after a crash the proxy listens within 1 s of the process start", async () => {
    // An echo service in cluster-1, called from cluster-2 (redis, above, is imported the same way).
    ecnet('local', 'run', '--cluster', 'cluster-1', '--namespace', 'echo', '--labels', 'app=echo', '--name', 'echo-0', '--', process.execPath, '-e', "require('net').createServer({allowHalfOpen:true},c=>{c.on('data',d=>c.write(d));c.on('end',()=>c.end());c.on('error',()=>{})}).listen(9302)");
    const manifests = scratchFile('echo');
    writeFileSync(manifests, 'apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: echo}\nspec: {ports: [{name: tcp, port: 8082, targetPort: 9302}], selector: {app: echo}}\n---\napiVersion: flomesh.io/v1alpha1\nkind: ServiceExport\nmetadata: {name: echo, namespace: echo}\nspec: {}\n');
    ecnet('local', 'apply', '--cluster', 'cluster-1', '-f', manifests);
    writeFileSync(manifests, 'apiVersion: flomesh.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: echo, namespace: echo}\nspec: {lbType: Locality, targets: [{clusterKey: default/default/default/cluster-1}]}\n');
    ecnet('local', 'apply', '--cluster', 'cluster-2', '-f', manifests);
    const probe = "require('net').connect(8082,'echo.echo').on('connect',function(){this.write('x')}).on('data',()=>process.exit(0)).on('error',()=>process.exit(1))";
    for (let i = 0; i < 50 && spawnSync(process.execPath, [cli, 'local', 'exec', '--cluster', 'cluster-2', '--', process.execPath, '-e', probe], { env, timeout: 5_000 }).status !== 0; i++) spawnSync('sleep', ['0.3']);
    const client = join(packageRoot, 'test', 'fixtures', 'restart-client.mjs');
    const traffic = ecnetAsync('local', 'exec', '--cluster', 'cluster-2', '--', process.execPath, client, 'echo.echo:8082', '16000');
    // (What a failing run printed is kept, to be seen in the assertion.)
    const redis = ecnetAsync('local', 'exec', '--cluster', 'cluster-2', '--', 'bash', '-c', 'end=$((SECONDS+14)); n=0; while [ $SECONDS -lt $end ]; do out=$(redis-benchmark -h redis.cache -p 6379 -n 2000 -c 10 -t set,get -q 2>&1) || { echo "FAILED after $n runs: $out"; exit 0; }; n=$((n+1)); done; echo "runs $n"');
    await new Promise((r) => setTimeout(r, 2_000));
    const restarts: string[] = [];
    for (let i = 0; i < 3; i++) restarts.push((await ecnetAsync('local', 'restart', '--cluster', 'cluster-2', '--component', 'agent')).trim());
    // And the gateway the tunnels go to: a new pod first, then the old one leaves the endpoints and drains (its
    // open tunnels, the long-lived one among them, run until they end).
    restarts.push((await ecnetAsync('local', 'restart', '--cluster', 'cluster-1', '--component', 'gateway')).trim());
    const r = JSON.parse((await traffic).trim().split('\n').pop()!) as { longSent: number; longGot: number; longMismatch: number; longError: string | null; ok: number; fail: number; errors: Record<string, number> };
    const bench = await redis;
    expect(restarts.every((l) => /ready in \d+ ms/.test(l)), restarts.join('\n')).toBe(true);
    expect(restarts.at(-1)).toMatch(/^cluster-1 gateway: pid \d+ → \d+/);
    expect(r.longError).toBeNull();
    expect(r.longMismatch).toBe(0);
    expect(r.longSent).toBeGreaterThan(1_000_000);
    expect(r.longGot).toBe(r.longSent);
    expect(r.fail, JSON.stringify(r.errors)).toBe(0);
    expect(r.ok).toBeGreaterThan(100);
    expect(bench).not.toMatch(/FAILED|error|refused|reset/i);
    expect(bench).toMatch(/runs [1-9]/);
    // The successor took the established connections (sealed tunnels included) from its predecessor.
    const log = readFileSync(join(stateDir, 'run', 'cluster-2-agent.log'), 'utf8');
    expect(log.match(/"msg":"hand-over: this agent has the node"/g)?.length ?? 0).toBeGreaterThanOrEqual(3);
    // A crash: new connections fail only until the new agent listens, which it does within 1 s of its start.
    await ecnetAsync('local', 'restart', '--cluster', 'cluster-2', '--component', 'agent', '--crash');
    const listening = [...readFileSync(join(stateDir, 'run', 'cluster-2-agent.log'), 'utf8').matchAll(/"msSinceProcessStart":(\d+),"handedOver":false/g)].map((m) => Number(m[1]));
    expect(listening.at(-1)).toBeLessThan(1000);
    expect(spawnSync(process.execPath, [cli, 'local', 'exec', '--cluster', 'cluster-2', '--', process.execPath, '-e', probe], { env, timeout: 10_000 }).status).toBe(0);
  }, 120_000);

  it('Locality: a client in a cluster with its own endpoints never leaves it', () => {
    const answers = ecnet('local', 'exec', '--cluster', 'cluster-1', '--', 'sh', '-c', 'for i in $(seq 10); do curl -s -m 2 http://httpbin.httpbin:8080/ || echo FAIL; done').trim().split('\n');
    expect(answers).toEqual(Array(10).fill('httpbin-cluster-1'));
  });

  it("an export for one ServiceAccount: cluster-2's pod running as it is answered, a pod running as another is refused", async () => {
    ecnet('local', 'apply', '--cluster', 'cluster-2', '-n', 'httpbin', '-f', join(examples, 'httpbin-gtp-active-active.yaml'));
    ecnet('local', 'run', '--cluster', 'cluster-2', '--namespace', 'curl', '--service-account', 'caller', '--name', 'as-caller', '--', 'sleep', '600');
    ecnet('local', 'run', '--cluster', 'cluster-2', '--namespace', 'curl', '--name', 'as-default', '--', 'sleep', '600');
    const only = scratchFile('sa-export');
    writeFileSync(only, readFileSync(join(examples, 'httpbin-export.yaml'), 'utf8').replace('serviceAccountName: "*"', 'serviceAccountName: curl/caller'));
    for (const c of ['cluster-1', 'cluster-3']) ecnet('local', 'apply', '--cluster', c, '-n', 'httpbin', '-f', only);
    const from = (pod: string, n: number) =>
      ecnet('local', 'exec', '--cluster', 'cluster-2', '--pod', pod, '--', 'sh', '-c', `for i in $(seq ${n}); do curl -s -m 2 http://httpbin.httpbin:8080/ || echo FAIL; done`).trim().split('\n');
    try {
      // The gateways follow the exports within their debounce; the agent knows the pods once their objects are in.
      const end = Date.now() + 10_000;
      while (!from('as-default', 1).includes('FAIL') && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
      expect(from('as-default', 6)).toEqual(Array(6).fill('FAIL'));
      const answered = from('as-caller', 10);
      expect(answered.filter((a) => a === 'FAIL')).toEqual([]);
    } finally {
      for (const c of ['cluster-1', 'cluster-3']) ecnet('local', 'apply', '--cluster', c, '-n', 'httpbin', '-f', join(examples, 'httpbin-export.yaml'));
    }
  });

  it('FailOver: the first target only; when its gateway stops, every call is answered by the other', async () => {
    const policy = scratchFile('failover');
    writeFileSync(
      policy,
      'apiVersion: flomesh.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: httpbin}\nspec:\n  lbType: FailOver\n  targets: [{clusterKey: default/default/default/cluster-1}, {clusterKey: default/default/default/cluster-3}]\n',
    );
    ecnet('local', 'apply', '--cluster', 'cluster-2', '-n', 'httpbin', '-f', policy);
    await new Promise((r) => setTimeout(r, 500));
    expect(new Set(calls(10))).toEqual(new Set(['httpbin-cluster-1']));
    ecnet('local', 'stop', '--cluster', 'cluster-1', '--component', 'gateway');
    expect(calls(20)).toEqual(Array(20).fill('httpbin-cluster-3'));
    // Back when it returns: the agent's active check sees /healthz again.
    ecnet('local', 'start', '--cluster', 'cluster-1', '--component', 'gateway');
    const end = Date.now() + 10_000;
    let last: string[] = [];
    while (Date.now() < end) {
      last = calls(3);
      if (last.every((a) => a === 'httpbin-cluster-1')) break;
      expect(last.filter((a) => a === 'FAIL')).toEqual([]);
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(last).toEqual(Array(3).fill('httpbin-cluster-1'));
    execFileSync('rm', ['-f', policy]);
  });

  it("the exporting cluster keeps its own: 0 failed connections from its pod while the export comes and goes and the policy changes", async () => {
    // echo in cluster-1 and cluster-3; a loop of new connections from a cluster-1 pod to cluster-1's own ClusterIP.
    const manifests = scratchFile('loop');
    writeFileSync(manifests, 'apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: loop}\nspec: {ports: [{name: http, port: 8080}], selector: {app: echo}}\n');
    for (const c of ['cluster-1', 'cluster-3']) {
      ecnet('local', 'run', '--cluster', c, '--namespace', 'loop', '--labels', 'app=echo', '--name', `echo-${c}`, '--', process.execPath, server);
      ecnet('local', 'apply', '--cluster', c, '-f', manifests);
    }
    const ip = (JSON.parse(ecnet('local', 'get', 'svc', 'echo', '-n', 'loop', '--cluster', 'cluster-1', '-o', 'json')) as { spec: { clusterIP: string } }).spec.clusterIP;
    const result = join(stateDir, '..', `ecnet-e2e-loop-${process.pid}.json`);
    const stop = `${result}.stop`;
    scratch.push(result, stop);
    // Sequential new connections until the stop file appears; every failure is counted with its code.
    const client = `const http=require('http'),fs=require('fs');const c={ok:0,fail:0,errors:{},from:{},started:Date.now()};
const go=()=>{if(fs.existsSync(${JSON.stringify(stop)})){c.seconds=(Date.now()-c.started)/1000;fs.writeFileSync(${JSON.stringify(result)},JSON.stringify(c));process.exit(0)}
http.get({host:${JSON.stringify(ip)},port:8080,agent:false,timeout:3000},r=>{let b='';r.on('data',d=>b+=d);r.on('end',()=>{c.ok++;c.from[b.trim()]=(c.from[b.trim()]||0)+1;setImmediate(go)})})
.on('timeout',function(){this.destroy(new Error('ETIMEDOUT'))}).on('error',e=>{c.fail++;c.errors[e.code||e.message]=(c.errors[e.code||e.message]||0)+1;setImmediate(go)})};go()`;
    ecnet('local', 'run', '--cluster', 'cluster-1', '--namespace', 'loop', '--labels', 'app=loop', '--name', 'loop', '--', process.execPath, '-e', client);
    const node1 = 'ecnet-l-cluster-1';
    /** cluster-1's agent's view of the echo ClusterIP now: its policy and whether it redirects it (ecnet routes). */
    const route = () => {
      const r = spawnSync('ip', ['netns', 'exec', node1, process.execPath, cli, 'routes', '-o', 'json'], { encoding: 'utf8', env });
      return (JSON.parse(r.stdout || '[]') as { address: string; policy: string; redirected: boolean }[]).find((x) => x.address === `${ip}:8080`);
    };
    /** Waits until the agent's view is `want` (undefined: no route), then lets the loop run a second in that state. */
    const until = async (what: string, want: { policy: string; redirected: boolean } | undefined) => {
      const end = Date.now() + 15_000;
      for (;;) {
        const now = route();
        if (want === undefined ? now === undefined : now?.policy === want.policy && now.redirected === want.redirected) break;
        if (Date.now() > end) throw new Error(`${what}: the agent says ${JSON.stringify(now)} after 15 s`);
        await new Promise((r) => setTimeout(r, 100));
      }
      await new Promise((r) => setTimeout(r, 1000));
    };
    const policy = (spec: string) => {
      writeFileSync(manifests, `apiVersion: flomesh.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: echo, namespace: loop}\nspec: ${spec}\n`);
      ecnet('local', 'apply', '--cluster', 'cluster-1', '-f', manifests);
    };
    await new Promise((r) => setTimeout(r, 1000));
    for (const c of ['cluster-1', 'cluster-3']) {
      writeFileSync(manifests, 'apiVersion: flomesh.io/v1alpha1\nkind: ServiceExport\nmetadata: {name: echo, namespace: loop}\nspec: {}\n');
      ecnet('local', 'apply', '--cluster', c, '-f', manifests);
    }
    // Exported by cluster-1 and cluster-3: the import reaches cluster-1, and kube-proxy keeps serving it.
    await until('exported, no policy', { policy: 'Locality (no policy)', redirected: false });
    policy('{lbType: Locality}');
    await until('Locality', { policy: 'Locality', redirected: false });
    policy('{lbType: ActiveActive}');
    await until('ActiveActive', { policy: 'ActiveActive', redirected: true });
    policy('{lbType: FailOver, targets: [{clusterKey: default/default/default/cluster-3}]}');
    await until('FailOver', { policy: 'FailOver', redirected: true });
    ecnet('local', 'delete', '--cluster', 'cluster-1', '-n', 'loop', 'gtp', 'echo');
    await until('no policy again', { policy: 'Locality (no policy)', redirected: false });
    for (const c of ['cluster-1', 'cluster-3']) ecnet('local', 'delete', '--cluster', c, '-n', 'loop', 'sexp', 'echo');
    await until('export deleted', undefined);
    writeFileSync(stop, '');
    const end = Date.now() + 10_000;
    while (!existsSync(result) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    const counts = JSON.parse(readFileSync(result, 'utf8')) as { ok: number; fail: number; errors: Record<string, number>; from: Record<string, number>; seconds: number };
    console.log(`exporting-cluster loop: ${JSON.stringify(counts)}`);
    expect(counts.errors).toEqual({});
    expect(counts.fail).toBe(0);
    // The loop ran all along (a rate, not a count: the machine may be busy).
    expect(counts.ok / counts.seconds).toBeGreaterThan(10);
    // ActiveActive really went through the node proxy: some answers came from cluster-3.
    expect(counts.from['echo-cluster-3'] ?? 0).toBeGreaterThan(0);
  }, 90_000);

  it('the MCS API: a multicluster.x-k8s.io ServiceExport in cluster-1 alone is imported everywhere and routed by the GlobalTrafficPolicy of its name, by its clusterset.local name too', async () => {
    const ns = 'mcs';
    ecnet('local', 'run', '--cluster', 'cluster-1', '--namespace', ns, '--labels', 'app=pipy', '--name', 'mcs-web-cluster-1', '--', process.execPath, server);
    const svcFile = scratchFile('mcs-service');
    writeFileSync(svcFile, 'apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 8080, targetPort: 8080, protocol: TCP}]\n  selector: {app: pipy}\n');
    ecnet('local', 'apply', '--cluster', 'cluster-1', '-n', ns, '-f', svcFile);
    const exportFile = scratchFile('mcs-export');
    writeFileSync(exportFile, readFileSync(join(examples, 'httpbin-mcs-export.yaml'), 'utf8').replace('name: httpbin', 'name: web'));
    ecnet('local', 'apply', '--cluster', 'cluster-1', '-n', ns, '-f', exportFile);
    const end = Date.now() + 20_000;
    while (!/ClusterSetIP\s+10\.96\./.test(ecnet('local', 'get', 'svcim', '-n', ns, '--cluster', 'cluster-2')) && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
    expect(ecnet('local', 'get', 'svcim', '-n', ns, '--cluster', 'cluster-2')).toMatch(/web\s+ClusterSetIP\s+10\.96\./);
    // A GlobalTrafficPolicy applies to it by namespace and name, as to a flomesh.io import.
    const policy = scratchFile('mcs-gtp');
    writeFileSync(policy, readFileSync(join(examples, 'httpbin-gtp-active-active.yaml'), 'utf8').replace('name: httpbin', 'name: web'));
    ecnet('local', 'apply', '--cluster', 'cluster-2', '-n', ns, '-f', policy);
    await new Promise((r) => setTimeout(r, 500));
    const answers = ecnet('local', 'exec', '--cluster', 'cluster-2', '--', 'sh', '-c', 'for n in web.mcs web.mcs.svc.clusterset.local web.mcs web.mcs.svc.clusterset.local; do curl -s -m 2 http://$n:8080/ || echo FAIL; done').trim().split('\n');
    expect(answers).toEqual(['mcs-web-cluster-1', 'mcs-web-cluster-1', 'mcs-web-cluster-1', 'mcs-web-cluster-1']);
  });

  it('down removes everything', () => {
    ecnet('local', 'down');
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toMatch(/ecnet-l-/);
    expect(existsSync(stateDir)).toBe(false);
    expect(existsSync('/sys/fs/bpf/ecnet-local')).toBe(false);
    expect(readdirSync('/etc/netns').filter((n) => n.startsWith('ecnet-l-'))).toEqual([]);
  });

  it('`ecnet demo` walks the seed end to end, twice in a row, leaving nothing', async () => {
    for (let i = 0; i < 2; i++) {
      const out = await ecnetAsync('demo');
      const section = (from: string, to: string) => out.slice(out.indexOf(from), out.indexOf(to));
      // The members registered with Cluster resources, each Managed by the controller (the seed's `kubectl get cluster`).
      for (const c of ['cluster-1', 'cluster-2', 'cluster-3']) expect(section('== 1.', '== 2.')).toMatch(new RegExp(`${c}\\s+default\\s+default\\s+default\\s+10\\.0\\.2\\.\\d\\s+80\\s+True`));
      expect(section('== 4.', '== 5.')).toMatch(/\(call failed/);
      expect(section('== 4.', '== 5.')).not.toMatch(/httpbin-\d-\d/);
      const aa = section('== 5.', '== 6.');
      expect(aa).toMatch(/httpbin-1-\d/);
      expect(aa).toMatch(/httpbin-3-\d/);
      // Mutual TLS: cluster-2's certificate refused by cluster-3's gateway (export for cluster-1 only), accepted by
      // cluster-1's; no certificate, refused.
      expect(section('== 6.', '== 7.').match(/CONNECT answered \d+/g)?.slice(-3)).toEqual(['CONNECT answered 403', 'CONNECT answered 200', 'CONNECT answered 403']);
      const afterKill = out.slice(out.indexOf('kill <cluster-1'), out.indexOf('== 8.'));
      expect(afterKill.match(/httpbin-3-\d/g)).toHaveLength(6);
      expect(afterKill).not.toMatch(/httpbin-1-\d|call failed/);
      expect(out).toMatch(/demo done in [\d.]+ s/);
      expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toMatch(/ecnet-l-/);
    }
    // Two demos of ~25 s each, more on a busy machine.
  }, 180_000);
});
