// `ecnet local up|down|run|exec`: the cluster set's lifecycle. `up` builds the namespaces and starts the
// processes (the supervisor with the controller; per member an agent and a gateway in its node namespace);
// `down` removes everything up and run made, found by name, so it also cleans after a crash.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
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
import { ADMIN_PORT, GATEWAY_PORT, HUB, PROXY_PORT, type MemberTopology, member, pod } from './topology.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');
const BPFFS = '/sys/fs/bpf/ecnet-local';

export class LocalError extends Error {
  readonly code = 'ECNET_LOCAL' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LocalError';
  }
}

interface SetState {
  members: string[];
  pids: Record<string, number>;
}

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

  state(): SetState | undefined {
    return existsSync(this.#stateFile) ? (JSON.parse(readFileSync(this.#stateFile, 'utf8')) as SetState) : undefined;
  }

  #member(name: string): MemberTopology {
    const s = this.state();
    const i = s?.members.indexOf(name) ?? -1;
    if (!s || i < 0) throw new LocalError(`no member ${JSON.stringify(name)} in the local cluster set${s ? ` (members: ${s.members.join(', ')})` : ' (run `ecnet local up`)'}`);
    return member(name, i);
  }

  #start(name: string, args: string[], netns?: string): number {
    mkdirSync(this.#runDir, { recursive: true });
    const log = openSync(join(this.#runDir, `${name}.log`), 'a');
    const argv = netns ? ['nsenter', `--net=/run/netns/${netns}`, process.execPath, cli, ...args] : [process.execPath, cli, ...args];
    const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', log, log] });
    closeSync(log);
    child.unref();
    return child.pid!;
  }

  async up(members: string[], progress: (line: string) => void): Promise<void> {
    if (this.state()) throw new LocalError(`a local cluster set is already up in ${this.stateDir} (\`ecnet local down\` first)`);
    for (const d of [HUB, ...members]) mkdirSync(join(this.clustersDir, d), { recursive: true });
    const hub = new LocalSource({ dir: join(this.clustersDir, HUB), watch: false });
    try {
      for (const [i, m] of members.entries()) {
        const t = member(m, i);
        await hub.apply({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: m }, spec: { gatewayHost: t.underlayIp, gatewayPort: GATEWAY_PORT } }, { manager: 'ecnet-local' });
      }
    } finally {
      hub.destroy();
    }
    const state: SetState = { members, pids: {} };
    writeFileSync(this.#stateFile, JSON.stringify(state));
    progress('underlay 10.0.2.0/24');
    createUnderlay();
    for (const [i, m] of members.entries()) {
      const t = member(m, i);
      createNode(t);
      mkdirSync(join(this.#cgroupRoot, m), { recursive: true });
      progress(`${m}: node ${t.underlayIp}, pods ${t.podPrefix}.0/24`);
    }
    state.pids.supervisor = this.#start('supervisor', ['local', 'supervise', '--state', this.stateDir]);
    for (const [i, m] of members.entries()) {
      for (const c of ['gateway', 'agent'] as const) state.pids[`${m}-${c}`] = this.#startComponent(member(m, i), c);
    }
    writeFileSync(this.#stateFile, JSON.stringify(state));
    for (const name of Object.keys(state.pids)) {
      await this.#waitServing(name, state.pids[name]!);
      progress(`${name} running (pid ${state.pids[name]})`);
    }
  }

  #startComponent(t: MemberTopology, component: 'gateway' | 'agent'): number {
    const dir = join(this.clustersDir, t.name);
    const args =
      component === 'gateway'
        ? ['gateway', '--cluster', dir, '--listen', `${t.underlayIp}:${GATEWAY_PORT}`]
        : ['agent', '--cluster', dir, '--bpffs', join(BPFFS, t.name), '--cgroup', join(this.#cgroupRoot, t.name), '--proxy', `${t.nodePodIp}:${PROXY_PORT}`, '--admin', `127.0.0.1:${ADMIN_PORT}`];
    return this.#start(`${t.name}-${component}`, args, t.nodeNs);
  }

  /** Serving means the process said so in its log (each prints one line once it serves). */
  async #waitServing(name: string, pid: number, since = 0): Promise<void> {
    const ready = name === 'supervisor' ? /controller|watching/ : name.endsWith('gateway') ? /ecnet gateway: listening/ : /ecnet agent:/;
    const deadline = Date.now() + 20_000;
    for (;;) {
      const file = join(this.#runDir, `${name}.log`);
      const log = existsSync(file) ? readFileSync(file, 'utf8').slice(since) : '';
      if (ready.test(log)) return;
      if (!pidAlive(pid) || Date.now() > deadline) throw new LocalError(`${name} did not start: ${log.trim().split('\n').slice(-3).join(' | ') || 'no output'}`);
      await new Promise((r) => setTimeout(r, 50));
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
    const pid = this.#startComponent(t, component);
    s.pids[name] = pid;
    writeFileSync(this.#stateFile, JSON.stringify(s));
    await this.#waitServing(name, pid, since);
    return pid;
  }

  /** Removes everything `up` and `run` made; safe to run any time. Returns what it removed. */
  async down(): Promise<string[]> {
    const done: string[] = [];
    const s = this.state();
    const pids = new Set<number>(Object.values(s?.pids ?? {}));
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
        try {
          Datapath.uninstall(join(BPFFS, d));
        } catch {
          // partly gone; the directory removal below takes the rest
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
  #freeSlot(t: MemberTopology): number {
    let slot = 2;
    while (netnsExists(pod(t, slot).ns)) slot++;
    if (slot > 254) throw new LocalError(`${t.name} has no pod address left`);
    return slot;
  }

  /** Starts CMD as a pod of `cluster`; returns its name. */
  async run(cluster: string, namespace: string, labels: Record<string, string>, name: string | undefined, cmd: string[]): Promise<string> {
    const t = this.#member(cluster);
    const slot = this.#freeSlot(t);
    const podName = name ?? `${Object.values(labels)[0] ?? 'pod'}-${randomBytes(3).toString('hex')}`;
    const { ns, ip } = createPod(t, slot, podName);
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
      const slot = this.#freeSlot(t);
      const name = `exec-${randomBytes(3).toString('hex')}`;
      ns = createPod(t, slot, name).ns;
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
