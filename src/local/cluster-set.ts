// `ecnet local up|down|run|exec`: the cluster set's lifecycle. `up` builds the namespaces and starts the
// processes: the supervisor (the controller, and per member what Kubernetes itself would do: EndpointSlices,
// names, kube-proxy's rules), and per member its agent and gateway exactly as daemonset/ declares them (args and
// env resolved as the kubelet does; only host paths and the resource source swapped): the agent in the node's
// network namespace (hostNetwork), the gateway as a pod behind the node's address (its LoadBalancer Service).
// `down` removes everything up and run made, found by name, so it also cleans after a crash.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Datapath } from '../bpf/datapath.js';
import { detectCgroup2 } from '../bpf/host.js';
import { packageRoot } from '../paths.js';
import { LocalSource } from '../sources/local.js';
import { Kinds } from '../sources/source.js';
import type { Service } from '../api/core.js';
import { type LocalPod, NETNS_ANNOTATION, PID_ANNOTATION, hostsText } from './endpoints.js';
import { createNode, createPod, createUnderlay, deleteNetns, hostsFile, netnsExists, sweepNetns } from './net.js';
import { pidAlive } from './supervisor.js';
import { type Component, type ProcessPlan, asUser, generatedConfigMaps, hostPathsUnder, planProcess, readManifest, readWorkload } from '../kubelet/workload.js';
import { CONTROL_PLANE, type MemberTopology, member, pod } from './topology.js';
import { LocalError } from './errors.js';
import { secretVolumeDir, secretVolumesOf } from './secret-volumes.js';
import { waitLog, waitProbes } from './readiness.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');
const BPFFS = '/sys/fs/bpf/ecnet-local';

interface SetState {
  members: string[];
  pids: Record<string, number>;
  /** Each member's gateway pod: its name, namespace and address. */
  gateways?: Record<string, { name: string; netns: string; ip: string }>;
  /** Agents and gateways run with plain tunnels (`up --plain-tunnels`). */
  plainTunnels?: boolean;
  /** Agents and gateways set connections up in Node (`up --fast-path node`): what benchmarks compare with. */
  nodeFastPath?: boolean;
  /** Replaced gateways still draining their tunnels: their pid and pod namespace (removed once they exit). */
  draining?: { pid: number; netns: string }[];
}

/**
 * A component as docs/identity.md says to install it without mTLS: no --identity-dir, --plain-tunnels, and its
 * probes over HTTP (the Secret volume stays mounted and unused).
 */
function withPlainTunnels(plan: ProcessPlan): ProcessPlan {
  const argv = plan.argv.filter((a) => !a.startsWith('--identity-dir'));
  return { ...plan, argv: [...argv, '--plain-tunnels'], probes: plan.probes.map((p) => ({ ...p, url: p.url.replace(/^https:/, 'http:') })) };
}

/** Waits (at most 10 s) until the node's kube-proxy rules send nothing (`present` false) or something to `ip`. */
async function waitRules(nodeNs: string, ip: string, present: boolean): Promise<void> {
  const until = Date.now() + 10_000;
  const mentions = new RegExp(`(^|[^.\\d])${ip.replace(/\./g, '\\.')}(?![.\\d])`);
  while (Date.now() < until) {
    const r = spawnSync('ip', ['netns', 'exec', nodeNs, 'nft', 'list', 'ruleset'], { encoding: 'utf8' });
    if (r.status === 0 && mentions.test(r.stdout) === present) return;
    await new Promise((res) => setTimeout(res, 100));
  }
}
const waitRulesWith = (nodeNs: string, ip: string) => waitRules(nodeNs, ip, true);
const waitRulesWithout = (nodeNs: string, ip: string) => waitRules(nodeNs, ip, false);

/** The gateway's LoadBalancer Service as daemonset/ declares it: the Cluster's gatewayPort is its port. */
const gatewayService = (): Service & { apiVersion: string } => {
  const svc = readManifest('gateway/service.yaml', 'Service', 'ecnet-gateway');
  if (!svc) throw new LocalError('daemonset/gateway/service.yaml has no Service ecnet-gateway');
  return svc as Service & { apiVersion: string };
};

export class ClusterSet {
  readonly clustersDir: string;
  readonly #runDir: string;
  readonly #stateFile: string;
  readonly #cgroupRoot: string;

  constructor(readonly stateDir: string) {
    this.clustersDir = join(stateDir, 'clusters');
    this.#runDir = join(stateDir, 'run');
    this.#stateFile = join(stateDir, 'set.json');
    const cg = detectCgroup2();
    if (!cg) throw new LocalError('no cgroup v2 hierarchy is mounted');
    this.#cgroupRoot = join(cg, 'ecnet-local');
  }

  /** Replaces the state file in one rename: the supervisor and other commands read it meanwhile. */
  #save(state: SetState): void {
    const tmp = `${this.#stateFile}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(state));
    renameSync(tmp, this.#stateFile);
  }

  state(): SetState | undefined {
    return existsSync(this.#stateFile) ? (JSON.parse(readFileSync(this.#stateFile, 'utf8')) as SetState) : undefined;
  }

  #member(name: string): MemberTopology {
    const s = this.state();
    const i = s?.members.indexOf(name) ?? -1;
    if (!s || i < 0) throw new LocalError(`no member ${JSON.stringify(name)} in the local cluster set${s ? ` (members: ${s.members.join(', ')})` : ' (run `ecnet local up`)'}`);
    return member(name, i);
  }

  /** Starts `ecnet ARGS` in the background: in a network namespace and cgroup if given, with only `env` (and PATH) when given. */
  #start(name: string, args: string[], where: { netns?: string; cgroup?: string; env?: Record<string, string>; as?: { plan: ProcessPlan; readable: string[] } } = {}): { pid: number; warning?: string } {
    mkdirSync(this.#runDir, { recursive: true });
    const log = openSync(join(this.#runDir, `${name}.log`), 'a');
    // As the manifest's securityContext says (the gateway is uid 65532), once in its namespace and cgroup.
    const user = where.as ? asUser(where.as.plan, [process.execPath, cli, ...args], where.as.readable) : { argv: [process.execPath, cli, ...args] };
    let argv = where.netns ? ['nsenter', `--net=/run/netns/${where.netns}`, ...user.argv] : user.argv;
    // Into the pod's cgroup before anything runs (the agent's programs see its connects), as `run` does.
    if (where.cgroup) argv = ['sh', '-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'sh', where.cgroup, ...argv];
    const env = where.env ? { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...where.env } : process.env;
    const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', log, log], env });
    closeSync(log);
    child.unref();
    return { pid: child.pid!, ...(user.warning ? { warning: user.warning } : {}) };
  }

  async up(members: string[], progress: (line: string) => void, o: { plainTunnels?: boolean; nodeFastPath?: boolean } = {}): Promise<void> {
    if (this.state()) throw new LocalError(`a local cluster set is already up in ${this.stateDir} (\`ecnet local down\` first)`);
    for (const d of [CONTROL_PLANE, ...members]) mkdirSync(join(this.clustersDir, d), { recursive: true });
    const controlPlane = new LocalSource({ dir: join(this.clustersDir, CONTROL_PLANE), watch: false });
    const svc = gatewayService();
    try {
      for (const [i, m] of members.entries()) {
        const t = member(m, i);
        // The gateway's Service is a LoadBalancer whose address is the node's: what the Cluster points at.
        const gatewayPort = svc.spec.ports?.[0]?.port ?? 80;
        await controlPlane.apply({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: m }, spec: { gatewayHost: t.underlayIp, gatewayPort } }, { manager: 'ecnet-local' });
        const src = new LocalSource({ dir: join(this.clustersDir, m), watch: false });
        try {
          await src.apply({ ...svc, metadata: { ...svc.metadata } } as never, { manager: 'ecnet-local' });
        } finally {
          src.destroy();
        }
      }
    } finally {
      controlPlane.destroy();
    }
    const state: SetState = { members, pids: {}, ...(o.plainTunnels ? { plainTunnels: true } : {}), ...(o.nodeFastPath ? { nodeFastPath: true } : {}) };
    this.#save(state);
    progress('underlay 10.0.2.0/24');
    createUnderlay();
    for (const [i, m] of members.entries()) {
      const t = member(m, i);
      createNode(t);
      mkdirSync(join(this.#cgroupRoot, m), { recursive: true });
      progress(`${m}: node ${t.underlayIp}, pods ${t.podPrefix}.0/24`);
    }
    state.pids.supervisor = this.#start('supervisor', ['local', 'supervise', '--state', this.stateDir]).pid;
    state.gateways = {};
    for (const [i, m] of members.entries()) {
      const t = member(m, i);
      const slot = this.#freeSlot(t);
      const name = `ecnet-gateway-${randomBytes(3).toString('hex')}`;
      const { ns, ip } = createPod(t, slot, name);
      mkdirSync(join(this.#cgroupRoot, m, name), { recursive: true });
      state.gateways[m] = { name, netns: ns, ip };
    }
    this.#save(state);
    const probes: [string, number, string[], string][] = [];
    for (const [i, m] of members.entries()) {
      for (const c of ['gateway', 'agent'] as const) {
        const started = await this.#startComponent(member(m, i), c, state);
        state.pids[`${m}-${c}`] = started.pid;
        if (started.warning) progress(`${m}-${c} ${started.warning}`);
        this.#save(state); // so that `down` finds it if a later start fails
        probes.push([`${m}-${c}`, started.pid, started.urls, member(m, i).nodeNs]);
      }
    }
    this.#save(state);
    await waitLog(this.#runDir, 'supervisor', state.pids.supervisor, /controller|watching/);
    progress(`supervisor running (pid ${state.pids.supervisor})`);
    for (const [name, pid, urls, nodeNs] of probes) {
      await waitProbes(this.#runDir, name, pid, urls, nodeNs);
      progress(`${name} running (pid ${pid})`);
    }
  }

  /** A node's /var/run/ecnet-agent (DirectoryOrCreate, as the kubelet makes it): the agents' hand-over socket. */
  #hostRunDir(member: string): string {
    const dir = join(this.#runDir, 'nodes', member, 'ecnet-agent');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  /** The process the kubelet would start for `component` on this member's node. */
  #plan(t: MemberTopology, component: Component, podName: string, podIP: string): ProcessPlan {
    const w = readWorkload(component);
    const plan = planProcess(w, {
      pod: { name: podName, namespace: w.namespace, nodeName: `${t.name}-node`, hostIP: t.underlayIp, podIP, labels: w.labels, ...(w.serviceAccountName ? { serviceAccountName: w.serviceAccountName } : {}) },
      // What the per-cluster overlay does: this member's key.
      configMaps: { ...generatedConfigMaps(), 'ecnet-cluster': { clusterKey: `default/default/default/${t.name}` } },
      // Host paths of the manifests' hostPath volumes: this node's own cgroup subtree and pin directory.
      hostPath: hostPathsUnder({ '/sys/fs/cgroup': join(this.#cgroupRoot, t.name), '/sys/fs/bpf': join(BPFFS, t.name), '/var/run/ecnet-agent': this.#hostRunDir(t.name) }),
      // Secret volumes: where the supervisor projects them for this member's pod of `component`.
      secretDir: (name) => secretVolumeDir(this.stateDir, t.name, component, name),
      source: ['--cluster', join(this.clustersDir, t.name)],
    });
    const st = this.state();
    const planned = st?.plainTunnels ? withPlainTunnels(plan) : plan;
    return st?.nodeFastPath ? { ...planned, argv: [...planned.argv, '--fast-path=node'] } : planned;
  }

  /** As the kubelet, a pod starts once the Secrets it mounts exist (the controller issues ecnet-identity). */
  async #waitSecrets(t: MemberTopology, component: Component): Promise<string[]> {
    const dirs = secretVolumesOf([component]).map((m) => secretVolumeDir(this.stateDir, t.name, component, m.secretName));
    const deadline = Date.now() + 60_000;
    while (!dirs.every((d) => existsSync(d))) {
      if (Date.now() > deadline) throw new LocalError(`${t.name}-${component}: its Secret volumes (${dirs.join(', ')}) never appeared: did the supervisor's controller issue the identity? (see ${join(this.#runDir, 'supervisor.log')})`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return dirs;
  }

  /** Starts a member's agent (in the node's namespace) or gateway (in its pod); returns the pid and probe URLs. */
  async #startComponent(t: MemberTopology, component: 'gateway' | 'agent', state: SetState, gwPod?: { name: string; netns: string; ip: string }): Promise<{ pid: number; urls: string[]; warning?: string; container?: ProcessPlan['container'] }> {
    const volumes = await this.#waitSecrets(t, component);
    const gw = gwPod ?? state.gateways?.[t.name];
    if (component === 'agent') {
      const w = readWorkload('agent');
      if (!w.pod.hostNetwork) throw new LocalError('the agent DaemonSet is not hostNetwork: ecnet local runs it in the node\'s network namespace');
      const plan = this.#plan(t, 'agent', `ecnet-agent-${t.name}`, t.underlayIp);
      const started = this.#start(`${t.name}-agent`, plan.argv, { netns: t.nodeNs, env: plan.env, as: { plan, readable: [cli, join(this.clustersDir, t.name), ...volumes] } });
      return { ...started, urls: plan.probes.filter((p) => p.kind !== 'liveness').map((p) => p.url) };
    }
    if (!gw) throw new LocalError(`${t.name} has no gateway pod (run \`ecnet local down\` and \`up\` again)`);
    const plan = this.#plan(t, 'gateway', gw.name, gw.ip);
    // As the kubelet (its runtime): the pod's sysctls in its network namespace, before the container starts.
    for (const sc of plan.sysctls) execFileSync('ip', ['netns', 'exec', gw.netns, 'sysctl', '-qw', `${sc.name}=${sc.value}`]);
    const started = this.#start(`${t.name}-gateway`, plan.argv, { netns: gw.netns, env: plan.env, cgroup: join(this.#cgroupRoot, t.name, gw.name), as: { plan, readable: [cli, join(this.clustersDir, t.name), ...volumes.map((d) => join(d, 'tls.key'))] } });
    // (A replacement pod joins the endpoints only once it is ready: restartGateway registers it then.)
    if (!gwPod) await this.#registerGateway(t, gw, started.pid, plan.container);
    return { ...started, urls: plan.probes.filter((p) => p.kind !== 'liveness').map((p) => p.url), container: plan.container };
  }

  /** The gateway's Pod object, Running: from now on its node's kube-proxy sends the LoadBalancer's connections to it too. */
  async #registerGateway(t: MemberTopology, gw: { name: string; netns: string; ip: string }, pid: number, container: ProcessPlan['container']): Promise<void> {
    const w = readWorkload('gateway');
    const src = new LocalSource({ dir: join(this.clustersDir, t.name), watch: false });
    try {
      await src.apply(
        {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: gw.name, namespace: w.namespace, labels: w.labels, annotations: { [PID_ANNOTATION]: String(pid), [NETNS_ANNOTATION]: gw.netns } },
          spec: { containers: [{ name: container.name, ports: container.ports ?? [] }] },
        } as never,
        { manager: 'ecnet-local' },
      );
      await src.writeStatus(Kinds.Pod, gw.name, w.namespace, { podIP: gw.ip, phase: 'Running' });
    } finally {
      src.destroy();
    }
  }

  /** Stops a member's gateway or agent (as a node failure would), or starts it again. */
  async component(cluster: string, component: 'gateway' | 'agent', action: 'stop' | 'start'): Promise<number | undefined> {
    const t = this.#member(cluster);
    const s = this.state()!;
    const name = `${cluster}-${component}`;
    const old = s.pids[name];
    if (action === 'stop') {
      if (old && pidAlive(old)) process.kill(old, 'SIGKILL');
      return undefined;
    }
    if (old && pidAlive(old)) throw new LocalError(`${name} is running (pid ${old})`);
    const file = join(this.#runDir, `${name}.log`);
    const since = existsSync(file) ? readFileSync(file, 'utf8').length : 0;
    const { pid, urls } = await this.#startComponent(t, component, s);
    s.pids[name] = pid;
    this.#save(s);
    await waitProbes(this.#runDir, name, pid, urls, t.nodeNs, since);
    return pid;
  }

  /**
   * Replaces a member's agent the way an upgrade does: the new process starts next to the running one (a
   * surge pod), takes the node over through the hand-over socket, answers the probes; then the old one gets
   * SIGTERM and is waited for. With `crash`, the old one is killed first (SIGKILL) and the new one starts
   * afresh. Returns both pids and how long the new one took to answer its probes.
   */
  async restartAgent(cluster: string, o: { crash?: boolean } = {}): Promise<{ old: number | undefined; pid: number; readyMs: number }> {
    const t = this.#member(cluster);
    const s = this.state()!;
    const name = `${cluster}-agent`;
    const old = s.pids[name];
    if (o.crash && old && pidAlive(old)) {
      process.kill(old, 'SIGKILL');
      while (pidAlive(old)) await new Promise((r) => setTimeout(r, 10));
    }
    const file = join(this.#runDir, `${name}.log`);
    const since = existsSync(file) ? readFileSync(file, 'utf8').length : 0;
    const started = Date.now();
    const { pid, urls } = await this.#startComponent(t, 'agent', s);
    // Ready when the probes answer from the new process (the old one answers on the same port until then).
    try {
      await waitProbes(this.#runDir, name, pid, urls, t.nodeNs, since, pid);
    } catch (err) {
      if (pidAlive(pid)) process.kill(pid, 'SIGKILL'); // the running one stays, as a failed surge pod leaves it
      throw err;
    }
    const readyMs = Date.now() - started;
    s.pids[name] = pid;
    this.#save(s);
    if (!o.crash && old && pidAlive(old)) {
      process.kill(old, 'SIGTERM');
      const until = Date.now() + 20_000;
      while (pidAlive(old) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      if (pidAlive(old)) process.kill(old, 'SIGKILL');
    }
    return { old, pid, readyMs };
  }

  /**
   * Replaces a member's gateway the way a Deployment's rolling update does (maxSurge 1, maxUnavailable 0): a new
   * pod starts and answers its probes, the old pod leaves the Service's endpoints (its node's DNAT), then gets
   * SIGTERM and drains: it stops accepting and lets open tunnels finish (up to its drain time) before it exits,
   * in the background, as a terminating pod does; `down` (or the next restart) removes its namespace.
   */
  async restartGateway(cluster: string): Promise<{ old: number | undefined; pid: number; readyMs: number }> {
    const t = this.#member(cluster);
    const s = this.state()!;
    this.#reapDrained(s);
    const name = `${cluster}-gateway`;
    const old = s.pids[name];
    const oldPod = s.gateways?.[cluster];
    const podName = `ecnet-gateway-${randomBytes(3).toString('hex')}`;
    const { ns, ip } = this.#podInFreeSlot(t, podName);
    mkdirSync(join(this.#cgroupRoot, cluster, podName), { recursive: true });
    const pod = { name: podName, netns: ns, ip };
    const file = join(this.#runDir, `${name}.log`);
    const since = existsSync(file) ? readFileSync(file, 'utf8').length : 0;
    const started = Date.now();
    let pid: number;
    try {
      const c = await this.#startComponent(t, 'gateway', s, pod);
      pid = c.pid;
      await waitProbes(this.#runDir, name, pid, c.urls, t.nodeNs, since);
      await this.#registerGateway(t, pod, pid, c.container!);
      await waitRulesWith(t.nodeNs, ip);
    } catch (err) {
      deleteNetns(ns);
      throw err;
    }
    const readyMs = Date.now() - started;
    s.pids[name] = pid;
    s.gateways = { ...s.gateways, [cluster]: pod };
    this.#save(s);
    if (oldPod) {
      // Out of the endpoints first (kube-proxy drops it from the DNAT), then stopped: no new connection reaches
      // a gateway that no longer accepts. Connections already DNATed to it stay with it (conntrack).
      const src = new LocalSource({ dir: join(this.clustersDir, cluster), watch: false });
      try {
        await src.delete(Kinds.Pod, oldPod.name, readWorkload('gateway').namespace);
      } finally {
        src.destroy();
      }
      await waitRulesWithout(t.nodeNs, oldPod.ip);
    }
    if (old && pidAlive(old)) {
      process.kill(old, 'SIGTERM');
      if (oldPod) s.draining = [...(s.draining ?? []), { pid: old, netns: oldPod.netns }];
    } else if (oldPod) {
      deleteNetns(oldPod.netns);
    }
    this.#save(s);
    return { old, pid, readyMs };
  }

  /** Removes the namespaces of replaced gateways that have finished draining. */
  #reapDrained(s: SetState): void {
    const left = (s.draining ?? []).filter((d) => {
      if (pidAlive(d.pid)) return true;
      deleteNetns(d.netns);
      return false;
    });
    s.draining = left;
  }

  /** Removes everything `up` and `run` made; safe to run any time. Returns what it removed. */
  async down(): Promise<string[]> {
    const done: string[] = [];
    const s = this.state();
    const pids = new Set<number>([...Object.values(s?.pids ?? {}), ...(s?.draining ?? []).map((d) => d.pid)]);
    for (const m of s?.members ?? []) {
      const src = new LocalSource({ dir: join(this.clustersDir, m), watch: false });
      try {
        for (const p of await src.list<LocalPod & { apiVersion: string }>(Kinds.Pod)) {
          const pid = Number(p.metadata.annotations?.[PID_ANNOTATION]);
          if (pid) pids.add(-pid); // the pod's process group
        }
      } catch {
        // its directory is gone already
      } finally {
        src.destroy();
      }
    }
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // not running
      }
    }
    const until = Date.now() + 5000;
    while ([...pids].some((p) => pidAlive(Math.abs(p))) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // ended
      }
    }
    if (pids.size) done.push(`${pids.size} processes`);
    done.push(...sweepNetns());
    if (existsSync(BPFFS)) {
      for (const d of readdirSync(BPFFS)) {
        // A node's pin directory is where its agent's --bpffs points, below the node's own bpffs directory.
        for (const pins of [join(BPFFS, d), ...readdirSync(join(BPFFS, d)).map((x) => join(BPFFS, d, x))]) {
          try {
            if (existsSync(join(pins, 'links')) || existsSync(join(pins, 'maps'))) Datapath.uninstall(pins);
          } catch {
            // partly gone; the directory removal below takes the rest
          }
        }
        rmSync(join(BPFFS, d), { recursive: true, force: true });
        done.push(`datapath ${d}`);
      }
      rmdirSync(BPFFS);
    }
    const removeCgroups = (dir: string) => {
      if (!existsSync(dir)) return;
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroups(join(dir, e.name));
      try {
        rmdirSync(dir);
      } catch {
        // a process still inside (reported by the next down)
      }
    };
    if (existsSync(this.#cgroupRoot)) {
      removeCgroups(this.#cgroupRoot);
      done.push('cgroups');
    }
    if (existsSync(this.stateDir)) {
      rmSync(this.stateDir, { recursive: true, force: true });
      done.push(this.stateDir);
    }
    return done;
  }

  /** The first pod address of a member not in use. */
  #freeSlot(t: MemberTopology, from = 2): number {
    let slot = from;
    while (netnsExists(pod(t, slot).ns)) slot++;
    if (slot > 254) throw new LocalError(`${t.name} has no pod address left`);
    return slot;
  }

  /** A pod in the first free slot; another command taking the same slot at the same time moves this one on. */
  #podInFreeSlot(t: MemberTopology, name: string): { slot: number; ns: string; ip: string } {
    for (let slot = this.#freeSlot(t), tries = 0; ; slot = this.#freeSlot(t, slot + 1), tries++) {
      try {
        return { slot, ...createPod(t, slot, name) };
      } catch (err) {
        if (tries >= 20 || !/File exists/.test(String((err as { stderr?: unknown }).stderr ?? (err as Error).message))) throw err;
      }
    }
  }

  /** Starts CMD as a pod of `cluster`; returns its name. */
  async run(cluster: string, namespace: string, labels: Record<string, string>, name: string | undefined, cmd: string[], serviceAccount = 'default'): Promise<string> {
    const t = this.#member(cluster);
    const podName = name ?? `${Object.values(labels)[0] ?? 'pod'}-${randomBytes(3).toString('hex')}`;
    const { ns, ip } = this.#podInFreeSlot(t, podName);
    const cg = join(this.#cgroupRoot, cluster, podName);
    mkdirSync(cg, { recursive: true });
    mkdirSync(this.#runDir, { recursive: true });
    const log = openSync(join(this.#runDir, `${cluster}-${podName}.log`), 'a');
    // Into the pod's cgroup first (the agent's programs see its connects), then its namespace, as HOSTNAME.
    const child = spawn('sh', ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec ip netns exec "$@"', 'sh', cg, ns, 'env', `HOSTNAME=${podName}`, ...cmd], {
      detached: true,
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    child.unref();
    const src = new LocalSource({ dir: join(this.clustersDir, cluster), watch: false });
    try {
      await src.apply(
        {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: podName, namespace, labels, annotations: { [PID_ANNOTATION]: String(child.pid), [NETNS_ANNOTATION]: ns } },
          // On this member's node, as its ServiceAccount: what the node's agent asserts for its connections.
          spec: { nodeName: `${cluster}-node`, serviceAccountName: serviceAccount },
        } as never,
        { manager: 'ecnet-local' },
      );
      // status is the server's: what the pod is, as the kubelet would report it
      await src.writeStatus(Kinds.Pod, podName, namespace, { podIP: ip, phase: 'Running' });
    } finally {
      src.destroy();
    }
    return podName;
  }

  /** Runs CMD in pod `podName` of `cluster` (or in a throwaway pod), returns its exit status. */
  async exec(cluster: string, podName: string | undefined, cmd: string[], namespace = 'default'): Promise<number> {
    const t = this.#member(cluster);
    let ns: string;
    let cg: string;
    let throwaway: { slot: number; name: string } | undefined;
    if (podName) {
      const src = new LocalSource({ dir: join(this.clustersDir, cluster), watch: false });
      const pods = await src.list<LocalPod & { apiVersion: string }>(Kinds.Pod);
      src.destroy();
      const p = pods.find((x) => x.metadata.name === podName);
      if (!p) throw new LocalError(`no pod ${podName} in ${cluster}`);
      ns = p.metadata.annotations![NETNS_ANNOTATION]!;
      cg = join(this.#cgroupRoot, cluster, podName);
    } else {
      const name = `exec-${randomBytes(3).toString('hex')}`;
      const created = this.#podInFreeSlot(t, name);
      const slot = created.slot;
      ns = created.ns;
      cg = join(this.#cgroupRoot, cluster, name);
      mkdirSync(cg, { recursive: true });
      throwaway = { slot, name };
      // The throwaway pod resolves the cluster's names too.
      const svcSrc = new LocalSource({ dir: join(this.clustersDir, cluster), watch: false });
      try {
        const services = await svcSrc.list<Service & { apiVersion: string }>(Kinds.Service);
        writeFileSync(hostsFile(ns), hostsText({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace }, status: { podIP: pod(t, slot).ip } }, services));
      } finally {
        svcSrc.destroy();
      }
    }
    try {
      const r = spawnSync('sh', ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec ip netns exec "$@"', 'sh', cg, ns, ...cmd], { stdio: 'inherit' });
      return r.status ?? 1;
    } finally {
      if (throwaway) {
        deleteNetns(ns);
        try {
          rmdirSync(cg);
        } catch {
          // a background child of CMD still in it; `down` removes it
        }
      }
    }
  }
}
