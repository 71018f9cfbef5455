// ecnet's workloads as daemonset/ declares them (the agent DaemonSet, the gateway and controller Deployments),
// and the process the kubelet would start for one on a given node: argv, environment and probe URLs. Two things
// are swapped, and only these: paths under hostPath mounts become the caller's host paths (a node of
// `ecnet local` keeps its pins and cgroups in its own directories), and `--in-cluster` becomes the caller's
// resource source (a local directory, or a kubeconfig of a test API server).
import { CONTROLLER_NAME } from '../defaults.js';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { packageRoot } from '../paths.js';
import { type ContainerSpec, type KeyedData, KubeletError, type PodFacts, type PodSpec, hostMounts, onHost, probeUrl, resolveArgs, resolveEnv, runAs, secretMounts } from './container.js';

export const MANIFESTS_DIR = join(packageRoot, 'daemonset');

export type Component = 'agent' | 'gateway' | 'controller';

const WHERE: Record<Component, { file: string; kind: string; name: string }> = {
  agent: { file: 'agent/daemonset.yaml', kind: 'DaemonSet', name: 'ecnet-agent' },
  gateway: { file: 'gateway/deployment.yaml', kind: 'Deployment', name: 'ecnet-gateway' },
  controller: { file: 'control-plane/deployment.yaml', kind: 'Deployment', name: CONTROLLER_NAME },
};

export interface Workload {
  component: Component;
  kind: string;
  name: string;
  namespace: string;
  /** The pod template's labels. */
  labels: Record<string, string>;
  serviceAccountName: string | undefined;
  pod: PodSpec;
}

// Manifests are untyped YAML: the fields read are checked where they are used.
type Json = Record<string, any>;

/** One document of a manifest file under `dir`, by kind and name. */
export function readManifest(file: string, kind: string, name: string, dir = MANIFESTS_DIR): Json | undefined {
  let docs: Json[];
  try {
    docs = parseAllDocuments(readFileSync(join(dir, file), 'utf8')).map((d) => d.toJS() as Json);
  } catch (cause) {
    throw new KubeletError(`cannot read ${join(dir, file)}`, { cause });
  }
  return docs.find((x) => x?.kind === kind && x?.metadata?.name === name);
}

export function readWorkload(component: Component, dir = MANIFESTS_DIR): Workload {
  const w = WHERE[component];
  const d = readManifest(w.file, w.kind, w.name, dir);
  const spec = d?.spec?.template?.spec as Json | undefined;
  if (!d || !spec || !Array.isArray(spec.containers) || !spec.containers.length) throw new KubeletError(`no ${w.kind} ${w.name} with containers in ${join(dir, w.file)}`);
  return {
    component,
    kind: w.kind,
    name: w.name,
    namespace: String(d.metadata.namespace ?? 'default'),
    labels: (d.spec.template.metadata?.labels ?? {}) as Record<string, string>,
    serviceAccountName: spec.serviceAccountName as string | undefined,
    pod: spec as PodSpec,
  };
}

/** The ConfigMaps the base kustomization generates (configMapGenerator literals), by name. */
export function generatedConfigMaps(dir = MANIFESTS_DIR): KeyedData {
  const k = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Json;
  const out: KeyedData = {};
  for (const g of (k.configMapGenerator ?? []) as Json[]) {
    const data: Record<string, string> = {};
    for (const l of (g.literals ?? []) as string[]) {
      const i = l.indexOf('=');
      if (i > 0) data[l.slice(0, i)] = l.slice(i + 1);
    }
    out[g.name as string] = data;
  }
  return out;
}

export interface ProcessPlan {
  /** ecnet's arguments (the image's entrypoint is `node dist/cli/main.js`). */
  argv: string[];
  env: Record<string, string>;
  hostNetwork: boolean;
  /** The securityContext's user and group (0: root). */
  user: { uid: number; gid: number };
  /** httpGet probes by kind, as URLs the kubelet would request. */
  probes: { kind: 'startup' | 'readiness' | 'liveness'; url: string }[];
  container: ContainerSpec;
  /** The pod's sysctls (`securityContext.sysctls`), to set in its network namespace. */
  sysctls: { name: string; value: string }[];
}

/** What a kubelet allows a pod to set without --allowed-unsafe-sysctls (those of them a pod network namespace has). */
const SAFE_SYSCTLS = new Set(['net.ipv4.ip_local_port_range', 'net.ipv4.tcp_syncookies', 'net.ipv4.ping_group_range', 'net.ipv4.ip_unprivileged_port_start']);

function podSysctls(pod: PodSpec): { name: string; value: string }[] {
  const list = pod.securityContext?.sysctls ?? [];
  for (const s of list) {
    // As a kubelet: an unsafe sysctl keeps the pod from starting; none is allowed with hostNetwork.
    if (!SAFE_SYSCTLS.has(s.name)) throw new KubeletError(`sysctl ${s.name} is not a safe sysctl: a kubelet refuses the pod`);
    if (pod.hostNetwork) throw new KubeletError(`sysctl ${s.name}: a hostNetwork pod cannot set network sysctls`);
    if (!/^[0-9 \t]{1,64}$/.test(s.value) || !/[0-9]/.test(s.value)) throw new KubeletError(`sysctl ${s.name}: value ${JSON.stringify(s.value)} is not numbers`);
  }
  return list.map((s) => ({ name: s.name, value: s.value }));
}

export interface PlanOptions {
  pod: PodFacts;
  configMaps?: KeyedData;
  secrets?: KeyedData;
  /** Where a host path of a hostPath volume is on this machine; without it, paths stay as the container sees them. */
  hostPath?: (path: string) => string;
  /** Where the kubelet projected a Secret volume's files (a directory per Secret); without it, paths stay. */
  secretDir?: (secretName: string) => string;
  /** The arguments that replace `--in-cluster`. */
  source: string[];
  container?: string;
}

export function planProcess(w: Workload, o: PlanOptions): ProcessPlan {
  const c = o.container ? w.pod.containers.find((x) => x.name === o.container) : w.pod.containers[0];
  if (!c) throw new KubeletError(`${w.kind} ${w.name} has no container ${o.container}`);
  const env = resolveEnv(c, o.pod, { ...(o.configMaps ? { configMaps: o.configMaps } : {}), ...(o.secrets ? { secrets: o.secrets } : {}) });
  const mounts = hostMounts(w.pod, c);
  const secrets = secretMounts(w.pod, c);
  const swapPath = (p: string) => {
    // A container path that climbs out (`..`) would leave the mount, and the node's directory with it.
    if ((o.hostPath || o.secretDir) && p.split('/').includes('..')) throw new KubeletError(`${c.name}: argument path ${p} leaves its mount`);
    const s = o.secretDir && secrets.find((m) => p === m.mountPath || p.startsWith(`${m.mountPath}/`));
    if (s) return o.secretDir!(s.secretName) + p.slice(s.mountPath.length);
    const h = o.hostPath && onHost(p, mounts);
    return h ? o.hostPath!(h) : p;
  };
  const argv: string[] = [];
  for (const a of resolveArgs(c, env)) {
    if (a === '--in-cluster') argv.push(...o.source);
    else if (a.startsWith('/')) argv.push(swapPath(a));
    else {
      const m = /^(--[^=]+=)(\/.*)$/.exec(a);
      argv.push(m ? m[1]! + swapPath(m[2]!) : a);
    }
  }
  const probes: ProcessPlan['probes'] = [];
  for (const kind of ['startup', 'readiness', 'liveness'] as const) {
    const p = c[`${kind}Probe`];
    const url = p && probeUrl(p, c, o.pod);
    if (url) probes.push({ kind, url });
  }
  return { argv, env: Object.fromEntries(env), hostNetwork: Boolean(w.pod.hostNetwork), user: runAs(w.pod, c), probes, container: c, sysctls: podSysctls(w.pod) };
}

/**
 * A `hostPath` mapper for a node whose host directories live elsewhere on this machine: `roots` maps each host
 * directory the manifests mount (e.g. /sys/fs/cgroup) to the node's own; any other host path is refused, and
 * so is one that climbs out with `..`.
 */
export function hostPathsUnder(roots: Record<string, string>): (path: string) => string {
  return (p: string) => {
    if (!p.split('/').includes('..')) {
      for (const [host, local] of Object.entries(roots)) {
        if (p === host || p.startsWith(`${host}/`)) return local + p.slice(host.length);
      }
    }
    throw new KubeletError(`the manifests mount host path ${p}, which this node does not have (it has ${Object.keys(roots).join(', ')})`);
  };
}

/**
 * The command that runs `argv` as the plan's user (setpriv, util-linux), or `argv` itself for root. `readable`:
 * paths the process must read; when that user cannot (the checkout under a private home), the process stays
 * root and `warning` says why, rather than failing for a reason no cluster has.
 */
export function asUser(plan: ProcessPlan, argv: string[], readable: string[]): { argv: string[]; warning?: string } {
  const { uid, gid } = plan.user;
  if (uid === 0) return { argv };
  const drop = ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--no-new-privs'];
  const check = spawnSync(drop[0]!, [...drop.slice(1), 'sh', '-c', 'for p; do test -r "$p" || exit 1; done', 'sh', ...readable]);
  if (check.status !== 0) return { argv, warning: `runs as root, not uid ${uid} as its manifest says: uid ${uid} cannot read ${readable.join(' or ')}` };
  return { argv: [...drop, ...argv] };
}
