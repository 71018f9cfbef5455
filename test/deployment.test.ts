// Tier 5, the deployment's shape: the agent, the gateway and the controller started from daemonset/'s own
// manifests (args and env resolved as the kubelet does; only host paths and `--in-cluster` swapped for a
// kubeconfig), against in-memory API servers speaking list/watch. Two member clusters, each a node network
// namespace on an underlay; pods are network namespaces behind veths routed through their node, each in its own
// cgroup below the one the agent attaches to; the node does kube-proxy's job with nftables. A manifest that
// cannot carry an ordinary pod's connection (e.g. a loopback --proxy) fails here. Root only.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Service } from '../src/api/core.js';
import type { EndpointSlice } from '../src/api/core.js';
import { Datapath } from '../src/bpf/datapath.js';
import { detectCgroup2 } from '../src/bpf/host.js';
import { setNetns } from '../src/native/libc.js';
import { type Component, type ProcessPlan, asUser, generatedConfigMaps, hostPathsUnder, planProcess, readManifest, readWorkload } from '../src/kubelet/workload.js';
import { hostsText } from '../src/local/endpoints.js';
import { kubeProxyRuleset } from '../src/local/kube-proxy.js';
import { createNode, createPod, createUnderlay, deleteNetns, hostsFile } from '../src/local/net.js';
import { type MemberTopology, member, pod } from '../src/local/topology.js';
import { packageRoot } from '../src/paths.js';
import { Kinds, type KubeObject } from '../src/sources/source.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { project, secretVolumesOf } from '../src/local/secret-volumes.js';
import { suffix } from './helpers/host.js';
import { KubeApiServer } from './helpers/kube-api-server.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');
const sfx = suffix().slice(0, 4);
const PREFIX = `ecnet-d${sfx}`;
const API_IP = '10.0.2.1'; // on the underlay's bridge: every node reaches the API servers there
const SERVICE_CIDR = '10.96.0.0/16';
const SERVER = "require('http').createServer((q, s) => s.end(process.env.HOSTNAME + '\\n')).listen(8080)";
const key = (c: string) => `default/default/default/${c}`;

/** Runs `fn` with this thread in network namespace `ns` (a server listening meanwhile stays there). */
async function inNetns<T>(ns: string, fn: () => Promise<T>): Promise<T> {
  const original = openSync('/proc/thread-self/ns/net', 'r');
  const fd = openSync(`/run/netns/${ns}`, 'r');
  try {
    setNetns(fd);
    return await fn();
  } finally {
    setNetns(original);
    closeSync(fd);
    closeSync(original);
  }
}

interface Cluster {
  t: MemberTopology;
  api: KubeApiServer;
  kubeconfig: string;
  cgroup: string;
  pins: string;
  gateway: { name: string; ns: string; ip: string };
}

describeKernel('deployment shape: agent, gateway and controller as daemonset/ starts them, pods behind nodes', () => {
  const work = mkdtempSync(join(tmpdir(), 'ecnet-deploy-'));
  chmodSync(work, 0o755); // the gateway and the controller run as uid 65532 and read their kubeconfigs here
  const cgroupRoot = join(detectCgroup2() ?? '/nonexistent', `ecnet-deploy-${sfx}`);
  const pinRoot = `/sys/fs/bpf/ecnet-deploy-${sfx}`;
  const netns: string[] = [];
  const children: ChildProcess[] = [];
  const clusters = new Map<string, Cluster>();
  let hub: KubeApiServer | undefined;
  const probes: { what: string; url: string; nodeNs: string }[] = [];
  let client: { ns: string; cgroup: string } | undefined;
  let plainIp = '';

  /** Starts `cmd` in the background (its own process group), in a network namespace and a cgroup, logging to a file. */
  const start = (name: string, cmd: string[], where: { ns: string; cgroup?: string; env?: Record<string, string>; as?: ProcessPlan }) => {
    const log = openSync(join(work, `${name}.log`), 'a');
    // As the manifest's securityContext says (gateway and controller: uid 65532), once in its namespace.
    const readable = [cli, ...cmd.filter((a) => a.endsWith('.kubeconfig')), ...cmd.filter((a) => a.startsWith(`--identity-dir=`)).map((a) => join(a.slice('--identity-dir='.length), 'tls.key'))];
    const user = where.as ? asUser(where.as, cmd, readable) : { argv: cmd };
    if (user.warning) console.warn(`deployment.test.ts: ${name} ${user.warning}`);
    const argv = ['nsenter', `--net=/run/netns/${where.ns}`, ...user.argv];
    const full = where.cgroup ? ['sh', '-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'sh', where.cgroup, ...argv] : argv;
    const child = spawn(full[0]!, full.slice(1), { detached: true, stdio: ['ignore', log, log], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...where.env } });
    closeSync(log);
    children.push(child);
    return child;
  };
  const logs = () => ['controller', 'cluster-1-agent', 'cluster-1-gateway', 'cluster-2-agent', 'cluster-2-gateway'].map((n) => `--- ${n}\n${existsSync(join(work, `${n}.log`)) ? readFileSync(join(work, `${n}.log`), 'utf8').slice(-1500) : ''}`).join('\n');

  /** The process the kubelet would start for `component` of cluster `c` (podIP: the pod's, or the node's for hostNetwork). */
  const planFor = (component: Component, c: Cluster | undefined, podName: string, podIP: string, kubeconfig: string) => {
    const w = readWorkload(component);
    return planProcess(w, {
      pod: { name: podName, namespace: w.namespace, nodeName: c ? `${c.t.name}-node` : 'hub-node', hostIP: c?.t.underlayIp ?? API_IP, podIP, labels: w.labels },
      configMaps: { ...generatedConfigMaps(), ...(c ? { 'ecnet-cluster': { clusterKey: key(c.t.name) } } : {}) },
      // Host paths: this node's own cgroup subtree and pin directory (the controller mounts none).
      hostPath: hostPathsUnder(c ? { '/sys/fs/cgroup': c.cgroup, '/sys/fs/bpf': c.pins, '/var/run/ecnet-agent': join(work, 'nodes', c.t.name) } : {}),
      // Secret volumes, where the test projected them as the kubelet would (projectSecrets below).
      secretDir: (name) => join(work, 'volumes', c?.t.name ?? 'hub', component, name),
      source: ['--kubeconfig', kubeconfig],
    });
  };

  /** kube-proxy's rules in a node, from its API server. */
  const syncRules = (c: Cluster) => {
    const rules = kubeProxyRuleset({
      services: c.api.objects<Service & KubeObject>(Kinds.Service),
      endpointSlices: c.api.objects<EndpointSlice & KubeObject>(Kinds.EndpointSlice),
      nodeIp: c.t.underlayIp,
      serviceCidr: SERVICE_CIDR,
    });
    execFileSync('ip', ['netns', 'exec', c.t.nodeNs, 'nft', '-f', '-'], { input: rules });
  };

  const slice = (service: string, namespace: string, ips: string[], port: { name: string; port: number }): KubeObject =>
    ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${service}-x`, namespace, labels: { 'kubernetes.io/service-name': service } },
      addressType: 'IPv4',
      endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
      ports: [{ ...port, protocol: 'TCP' }],
    }) as unknown as KubeObject;
  const ns = (name: string) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } }) as KubeObject;

  /** Runs `cmd` in the client pod (its cgroup first, then its namespace); stdout, or throws with stderr. */
  const inClient = (cmd: string[]): string => {
    const r = spawnSync('sh', ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec ip netns exec "$@"', 'sh', client!.cgroup, client!.ns, ...cmd], { encoding: 'utf8', timeout: 15_000 });
    if (r.status !== 0) throw new Error(`${cmd.join(' ')} → ${r.status}: ${r.stderr}${r.stdout}`);
    return r.stdout.trim();
  };
  const agentHealth = (c: Cluster) =>
    JSON.parse(execFileSync('ip', ['netns', 'exec', c.t.nodeNs, 'curl', '-s', '-m', '2', 'http://127.0.0.1:15000/healthz'], { encoding: 'utf8' })) as { proxy: { accepted: number; proxied: number } };

  beforeAll(async () => {
    const underlay = `${PREFIX}-underlay`;
    netns.push(underlay); // listed before it is made: a failure part-way still removes it
    createUnderlay(underlay);
    execFileSync('ip', ['-n', underlay, 'addr', 'add', `${API_IP}/24`, 'dev', 'br0']);
    // The API servers listen on the underlay, where the nodes reach them.
    hub = await inNetns(underlay, () => new KubeApiServer({ host: API_IP, bookmarkIntervalMs: 500 }).listen());
    const gwService = readManifest('gateway/service.yaml', 'Service', 'ecnet-gateway') as KubeObject;
    const gwPort = (gwService as unknown as Service).spec.ports![0]!.port;
    for (const n of ['ecnet-system']) hub.put(ns(n));
    for (const [i, name] of ['cluster-1', 'cluster-2'].entries()) {
      const t = member(name, i, PREFIX);
      netns.push(t.nodeNs);
      createNode(t);
      const api = await inNetns(underlay, () => new KubeApiServer({ host: API_IP, bookmarkIntervalMs: 500 }).listen());
      const kubeconfig = join(work, `${name}.kubeconfig`);
      writeFileSync(kubeconfig, api.kubeconfig);
      const cgroup = join(cgroupRoot, name);
      mkdirSync(cgroup, { recursive: true });
      // The agent's hostPath for its hand-over socket (DirectoryOrCreate).
      mkdirSync(join(work, 'nodes', name), { recursive: true });
      // The gateway is a pod (slot 2) behind its LoadBalancer Service on the node's address.
      const gwName = `ecnet-gateway-${name}`;
      netns.push(pod(t, 2).ns);
      const gw = createPod(t, 2, gwName);
      const c: Cluster = { t, api, kubeconfig, cgroup, pins: join(pinRoot, name), gateway: { name: gwName, ns: gw.ns, ip: gw.ip } };
      clusters.set(name, c);
      for (const n of ['ecnet-system', 'httpbin', 'default']) api.put(ns(n));
      // put() stores as given: the ClusterIP the API server would have allocated.
      const svc = structuredClone(gwService) as unknown as Service & KubeObject;
      svc.spec.clusterIP = '10.96.100.3';
      api.put(svc);
      api.put(slice('ecnet-gateway', 'ecnet-system', [gw.ip], { name: 'tunnel', port: 8080 }));
      // Registered on the hub with a kubeconfig in a Secret, as the README says.
      hub.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: `${name}-kubeconfig`, namespace: 'ecnet-system' }, data: { kubeconfig: Buffer.from(api.kubeconfig).toString('base64') } } as unknown as KubeObject);
      hub.put({
        apiVersion: 'flomesh.io/v1alpha1',
        kind: 'Cluster',
        metadata: { name },
        spec: { region: 'default', zone: 'default', group: 'default', gatewayHost: t.underlayIp, gatewayPort: gwPort, kubeconfigSecretRef: { namespace: 'ecnet-system', name: `${name}-kubeconfig`, key: 'kubeconfig' } },
      } as unknown as KubeObject);
    }
    const c1 = clusters.get('cluster-1')!;
    const c2 = clusters.get('cluster-2')!;
    // httpbin in cluster-1, exported; cluster-2 sends its calls there (ActiveActive over the exporters).
    netns.push(pod(c1.t, 3).ns);
    const backend = createPod(c1.t, 3, 'httpbin-1');
    start('httpbin-1', [process.execPath, '-e', SERVER], { ns: backend.ns, env: { HOSTNAME: 'httpbin-1' } });
    c1.api.put({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'httpbin', namespace: 'httpbin' }, spec: { clusterIP: '10.96.100.2', selector: { app: 'httpbin' }, ports: [{ name: 'http', port: 8080, targetPort: 8080 }] } } as unknown as KubeObject);
    c1.api.put(slice('httpbin', 'httpbin', [backend.ip], { name: 'http', port: 8080 }));
    c1.api.put({ apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceExport', metadata: { name: 'httpbin', namespace: 'httpbin' }, spec: { serviceAccountName: '*', rules: [{ portNumber: 8080, path: '/httpbin', pathType: 'Prefix' }] } } as unknown as KubeObject);
    c2.api.put({ apiVersion: 'flomesh.io/v1alpha1', kind: 'GlobalTrafficPolicy', metadata: { name: 'httpbin', namespace: 'httpbin' }, spec: { lbType: 'ActiveActive' } } as unknown as KubeObject);
    // A plain Service of cluster-2 that nothing imports: kube-proxy's.
    netns.push(pod(c2.t, 3).ns);
    const plain = createPod(c2.t, 3, 'plain-1');
    start('plain-1', [process.execPath, '-e', SERVER], { ns: plain.ns, env: { HOSTNAME: 'plain-1' } });
    c2.api.put({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'plain', namespace: 'default' }, spec: { clusterIP: '10.96.100.1', selector: { app: 'plain' }, ports: [{ name: 'http', port: 8080, targetPort: 8080 }] } } as unknown as KubeObject);
    c2.api.put(slice('plain', 'default', [plain.ip], { name: 'http', port: 8080 }));
    plainIp = (c2.api.object<Service & KubeObject>(Kinds.Service, 'default', 'plain')!.spec.clusterIP)!;
    netns.push(pod(c2.t, 4).ns);
    const cl = createPod(c2.t, 4, 'curl');
    client = { ns: cl.ns, cgroup: join(c2.cgroup, 'curl') };
    mkdirSync(client.cgroup);
    for (const c of clusters.values()) syncRules(c);

    // The components, from their manifests.
    const hubKubeconfig = join(work, 'hub.kubeconfig');
    writeFileSync(hubKubeconfig, hub.kubeconfig);
    const controller = planFor('controller', undefined, 'ecnet-controller-0', API_IP, hubKubeconfig);
    expect(controller.user.uid).not.toBe(0);
    start('controller', [process.execPath, cli, ...controller.argv], { ns: underlay, env: controller.env, as: controller });
    // As the kubelet: a pod that mounts a Secret starts once it exists; its files are the Secret's keys.
    for (const c of clusters.values()) {
      const until = Date.now() + 30_000;
      let secret: (KubeObject & { data?: Record<string, string> }) | undefined;
      while (!(secret = c.api.object(Kinds.Secret, 'ecnet-system', 'ecnet-identity'))) {
        if (Date.now() > until) throw new Error(`the controller issued no ecnet-identity in ${c.t.name} after 30 s\n${logs()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      for (const m of secretVolumesOf(['agent', 'gateway'])) project(join(work, 'volumes', c.t.name, m.component, m.secretName), secret.data ?? {}, m.mode, m.gid);
    }
    for (const c of clusters.values()) {
      const agent = planFor('agent', c, `ecnet-agent-${c.t.name}`, c.t.underlayIp, c.kubeconfig);
      expect(agent.hostNetwork).toBe(true);
      start(`${c.t.name}-agent`, [process.execPath, cli, ...agent.argv], { ns: c.t.nodeNs, env: agent.env, as: agent });
      const gateway = planFor('gateway', c, c.gateway.name, c.gateway.ip, c.kubeconfig);
      expect(gateway.hostNetwork).toBe(false);
      const gwCgroup = join(c.cgroup, c.gateway.name);
      mkdirSync(gwCgroup);
      expect(gateway.user.uid).not.toBe(0);
      start(`${c.t.name}-gateway`, [process.execPath, cli, ...gateway.argv], { ns: c.gateway.ns, cgroup: gwCgroup, env: gateway.env, as: gateway });
      for (const p of [...agent.probes.map((x) => ({ ...x, who: 'agent' })), ...gateway.probes.map((x) => ({ ...x, who: 'gateway' }))]) {
        probes.push({ what: `${c.t.name} ${p.who} ${p.kind}Probe`, url: p.url, nodeNs: c.t.nodeNs });
      }
    }
    // The import and its derived Service reach cluster-2; then its pod resolves the name as cluster DNS would.
    const end = Date.now() + 30_000;
    let derived: (Service & KubeObject) | undefined;
    while (Date.now() < end) {
      derived = c2.api.object<Service & KubeObject>(Kinds.Service, 'httpbin', 'httpbin');
      const imp = c2.api.object(Kinds.ServiceImport, 'httpbin', 'httpbin') as { spec?: { ips?: string[] } } | undefined;
      if (derived?.spec.clusterIP && imp?.spec?.ips?.length) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    if (!derived?.spec.clusterIP) throw new Error(`no import of httpbin in cluster-2 after 30 s\n${logs()}`);
    // ... and cluster-2's agent redirects it (its admin /routes, from the node).
    const address = `${derived.spec.clusterIP}:8080`;
    for (;;) {
      const r = spawnSync('ip', ['netns', 'exec', c2.t.nodeNs, 'curl', '-s', '-m', '1', 'http://127.0.0.1:15000/routes'], { encoding: 'utf8' });
      if (r.status === 0 && (JSON.parse(r.stdout || '[]') as { address: string; redirected: boolean }[]).some((x) => x.address === address && x.redirected)) break;
      if (Date.now() > end) throw new Error(`cluster-2's agent does not redirect ${address} after 30 s\n${logs()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    syncRules(c2);
    writeFileSync(hostsFile(cl.ns), hostsText({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'curl', namespace: 'default' }, status: { podIP: cl.ip } }, c2.api.objects<Service & KubeObject>(Kinds.Service)));
  }, 90_000);

  afterAll(() => {
    for (const c of children) {
      try {
        process.kill(-c.pid!, 'SIGKILL');
      } catch {
        // ended
      }
    }
    for (const c of clusters.values()) {
      try {
        if (existsSync(join(c.pins, 'ecnet'))) Datapath.uninstall(join(c.pins, 'ecnet'));
      } catch {
        // the directory removal below takes the rest
      }
    }
    rmSync(pinRoot, { recursive: true, force: true });
    for (const n of netns.reverse()) deleteNetns(n);
    const rmCgroup = (dir: string) => {
      if (!existsSync(dir)) return;
      if (existsSync(join(dir, 'cgroup.kill'))) writeFileSync(join(dir, 'cgroup.kill'), '1');
      // Killed processes leave the cgroup when they have exited, which on a busy machine can take seconds.
      // find exits 0 even when an rmdir fails: whether the directory is gone is what says it worked.
      for (let i = 0; i < 300 && existsSync(dir); i++) {
        try {
          execFileSync('find', [dir, '-depth', '-type', 'd', '-exec', 'rmdir', '{}', ';'], { stdio: 'ignore' });
        } catch {
          // a directory went meanwhile
        }
        if (existsSync(dir)) execFileSync('sleep', ['0.1']);
      }
    };
    rmCgroup(cgroupRoot);
    void hub?.close();
    for (const c of clusters.values()) void c.api.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('every probe the manifests declare (httpGet host/port/path) succeeds from the node, as the kubelet asks', async () => {
    expect(probes.map((p) => p.what).sort()).toEqual(
      ['cluster-1', 'cluster-2'].flatMap((c) => [`${c} agent livenessProbe`, `${c} agent readinessProbe`, `${c} agent startupProbe`, `${c} gateway livenessProbe`, `${c} gateway readinessProbe`]).sort(),
    );
    for (const p of probes) {
      const end = Date.now() + 20_000;
      let code = '';
      while (Date.now() < end) {
        code = spawnSync('ip', ['netns', 'exec', p.nodeNs, 'curl', '-sk', '-o', '/dev/null', '-w', '%{http_code}', '-m', '1', p.url], { encoding: 'utf8' }).stdout;
        if (code === '200') break;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(code, `${p.what} ${p.url}\n${code === '200' ? '' : logs()}`).toBe('200');
    }
  });

  it('a pod of cluster-2 reaches the service cluster-1 exports, by ClusterIP and by name, through the node proxy', () => {
    const c2 = clusters.get('cluster-2')!;
    const ip = c2.api.object<Service & KubeObject>(Kinds.Service, 'httpbin', 'httpbin')!.spec.clusterIP!;
    const before = agentHealth(c2).proxy.proxied;
    expect(inClient(['curl', '-s', '-m', '5', `http://${ip}:8080/`]), logs()).toBe('httpbin-1');
    expect(inClient(['curl', '-s', '-m', '5', 'http://httpbin.httpbin.svc.cluster.local:8080/'])).toBe('httpbin-1');
    expect(inClient(['curl', '-s', '-m', '5', 'http://httpbin.httpbin:8080/'])).toBe('httpbin-1');
    expect(agentHealth(c2).proxy.proxied - before).toBe(3);
  });

  it('a connection to a ClusterIP that nothing imports is untouched: kube-proxy serves it, the node proxy never sees it', () => {
    const c2 = clusters.get('cluster-2')!;
    const before = agentHealth(c2).proxy.accepted;
    expect(inClient(['curl', '-s', '-m', '5', `http://${plainIp}:8080/`])).toBe('plain-1');
    expect(agentHealth(c2).proxy.accepted).toBe(before);
  });
});
