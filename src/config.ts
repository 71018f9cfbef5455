// The one place that reads flags and environment. Each command hands its parsed flags here and gets one
// typed object back, with defaults applied once. Environment variables fill what flags leave unset.
// Longer than other modules on purpose: every command's flags and their checks are in this one file, so that
// no other module reads process.env or argv.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { formatEndpoint, normalizeIp, parseEndpoint } from './net/address.js';
import type { DatapathSettings } from './bpf/codecs.js';
import { detectCgroup2 } from './bpf/host.js';
import type { ConnectionLimits } from './tunnel/limits.js';
import { EcnetError } from './errors.js';
import { defaults, leaderElectionDefaults } from './defaults.js';

export { defaults, leaderElectionDefaults };


export type OutputFormat = 'table' | 'json';

/** Flags common to the `ecnet bpf` commands, as the CLI parsed them (strings, unvalidated). */
export interface DatapathFlags {
  bpffs?: string;
  cgroup?: string;
  output?: string;
}

export interface DatapathConfig {
  /** Pin directory on bpffs (ECNET_BPFFS). */
  bpffs: string;
  /** cgroup v2 directory programs attach to (ECNET_CGROUP); default: the root of the cgroup v2 hierarchy. */
  cgroup: string | undefined;
  /** Directory of the *.bpf.o files (ECNET_BPF_OBJECTS). */
  objectDir: string;
  output: OutputFormat;
}

export class ConfigError extends EcnetError<'ECNET_CONFIG'> {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ECNET_CONFIG', message, options);
  }
}

function outputFormat(v: string | undefined): OutputFormat {
  if (v === undefined || v === 'table' || v === 'json') return v ?? 'table';
  throw new ConfigError(`-o must be table or json, got ${JSON.stringify(v)}`);
}

export function datapathConfig(flags: DatapathFlags, env: NodeJS.ProcessEnv = process.env): DatapathConfig {
  return {
    bpffs: flags.bpffs ?? env.ECNET_BPFFS ?? defaults.bpffs,
    cgroup: flags.cgroup ?? env.ECNET_CGROUP ?? detectCgroup2(),
    objectDir: env.ECNET_BPF_OBJECTS ?? defaults.objectDir,
    output: outputFormat(flags.output),
  };
}

/** Flags of `ecnet bpf load`. */
export interface LoadFlags {
  proxy?: string;
  proxy6?: string;
  mark?: string;
  maxServices?: string;
}

function parseIntFlag(name: string, v: string, min: number, max: number): number {
  const n = /^0x[0-9a-f]+$/i.test(v) ? parseInt(v, 16) : /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`${name} must be an integer in ${min}..${max} (decimal or 0x hex), got ${JSON.stringify(v)}`);
  }
  return n;
}

export interface LoadConfig {
  settings: DatapathSettings;
  /** Capacity of ecnet_services; undefined keeps the pinned map's (or the compiled default). */
  maxServices: number | undefined;
}

export function loadConfig(flags: LoadFlags, env: NodeJS.ProcessEnv = process.env): LoadConfig {
  const proxy = flags.proxy ?? env.ECNET_PROXY;
  if (!proxy) throw new ConfigError('--proxy IP:PORT is required (the node proxy address connections are sent to)');
  const mark = flags.mark ?? env.ECNET_PROXY_MARK;
  const proxy6 = flags.proxy6 ?? env.ECNET_PROXY6;
  try {
    return {
      settings: {
        proxy: parseEndpoint(proxy),
        ...(proxy6 ? { proxyIp6: normalizeIp(proxy6) } : {}),
        proxyMark: mark === undefined ? defaults.proxyMark : parseIntFlag('--mark', mark, 1, 0xffffffff),
      },
      maxServices: flags.maxServices === undefined ? undefined : parseIntFlag('--max-services', flags.maxServices, 1, 1 << 24),
    };
  } catch (cause) {
    if (cause instanceof ConfigError) throw cause;
    throw new ConfigError((cause as Error).message, { cause });
  }
}

/** The --id of `ecnet bpf service add`: a service id (u32). */
export function serviceIdFlag(v: string): number {
  return parseIntFlag('--id', v, 0, 0xffffffff);
}

/** Flags of `ecnet bpf listen`. */
export interface ListenFlags {
  proxy?: string;
  count?: string;
}

export interface ListenConfig {
  proxy: { ip: string; port: number };
  /** Exit after this many connections (undefined: until SIGINT/SIGTERM). */
  count: number | undefined;
}

export function listenConfig(flags: ListenFlags, env: NodeJS.ProcessEnv = process.env): ListenConfig {
  const proxy = flags.proxy ?? env.ECNET_PROXY;
  if (!proxy) throw new ConfigError('--proxy IP:PORT is required (the address the datapath redirects to)');
  try {
    return {
      proxy: parseEndpoint(proxy),
      count: flags.count === undefined ? undefined : parseIntFlag('--count', flags.count, 1, 1 << 30),
    };
  } catch (cause) {
    if (cause instanceof ConfigError) throw cause;
    throw new ConfigError((cause as Error).message, { cause });
  }
}

/** pino level (ECNET_LOG_LEVEL). */
export function logLevel(env: NodeJS.ProcessEnv = process.env): string {
  return env.ECNET_LOG_LEVEL ?? defaults.logLevel;
}

/** Print the cause chain of a failing command (ECNET_DEBUG=1). */
export function showCauses(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.ECNET_DEBUG);
}

/** Seconds, or a number with ms, s, m or h: `120`, `90s`, `500ms`, `2m`. */
export function parseDuration(name: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) throw new ConfigError(`${name} must be a duration such as 90s, 500ms or 2m, got ${JSON.stringify(v)}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(m[1]) * unit);
}

/** Where resources are read and written: a local cluster directory, or a Kubernetes API server. */
export type SourceConfig =
  | { kind: 'local'; dir: string; serviceCidr: string }
  | { kind: 'kubernetes'; kubeconfigPath: string | undefined; context: string | undefined; inCluster: boolean };

/** Flags that pick a source (`ecnet apply`, `ecnet get`, `ecnet delete`). */
export interface SourceFlags {
  /** A cluster directory, or the name of one under --clusters-dir. */
  cluster?: string;
  clustersDir?: string;
  kubeconfig?: string;
  context?: string;
  inCluster?: boolean;
}

/** `--cluster X`: a path when it names one (has a slash, or starts with a dot), else a cluster name under the clusters directory. */
export function clusterDir(cluster: string, clustersDir: string): string {
  return cluster.includes('/') || cluster.startsWith('.') ? cluster : join(clustersDir, cluster);
}

export function clustersDirOf(flags: { clustersDir?: string }, env: NodeJS.ProcessEnv = process.env): string {
  return flags.clustersDir ?? env.ECNET_CLUSTERS_DIR ?? defaults.clustersDir;
}

export function sourceConfig(flags: SourceFlags, env: NodeJS.ProcessEnv = process.env): SourceConfig {
  const serviceCidr = env.ECNET_SERVICE_CIDR ?? defaults.serviceCidr;
  const cluster = flags.cluster ?? env.ECNET_CLUSTER;
  if (flags.kubeconfig || flags.inCluster || (!cluster && env.KUBECONFIG)) {
    if (flags.cluster) throw new ConfigError('--cluster (a local cluster directory) and --kubeconfig/--in-cluster exclude each other');
    return { kind: 'kubernetes', kubeconfigPath: flags.kubeconfig ?? env.KUBECONFIG, context: flags.context, inCluster: Boolean(flags.inCluster) };
  }
  if (!cluster) {
    throw new ConfigError('say where the resources are: --cluster DIR (a local cluster directory or a name under --clusters-dir) or --kubeconfig FILE');
  }
  return { kind: 'local', dir: clusterDir(cluster, clustersDirOf(flags, env)), serviceCidr };
}

/** Flags of `ecnet controller`. */
export interface ControllerFlags {
  clustersDir?: string;
  controlPlane?: string;
  /** The former name of --control-plane, still accepted. */
  hub?: string;
  kubeconfig?: string;
  context?: string;
  inCluster?: boolean;
  memberTimeout?: string;
  resync?: string;
  leaderElect?: boolean;
  leaderElectNamespace?: string;
  leaderElectName?: string;
  leaderElectIdentity?: string;
  leaderElectLeaseDuration?: string;
  leaderElectRenewDeadline?: string;
  leaderElectRetryPeriod?: string;
  /** commander's --no-identities: false when given. */
  identities?: boolean;
  clusterSet?: string;
  identityTtl?: string;
  /** ip:port for /metrics, /healthz and /readyz, or off (ECNET_METRICS). */
  metrics?: string;
}


/** One coordination.k8s.io/v1 Lease in the control-plane cluster; only its holder writes. */
export interface LeaderElectionConfig {
  namespace: string;
  name: string;
  /** holderIdentity: the pod name (POD_NAME), else host name and pid. */
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
}

export interface ControllerConfig {
  /** The control-plane cluster, where Cluster resources live. */
  controlPlane: SourceConfig;
  /** Local mode: members without a kubeconfig are the directories named like their Cluster here. */
  clustersDir: string | undefined;
  serviceCidr: string;
  memberTimeoutMs: number;
  resyncMs: number;
  /** Undefined: no election, this process writes (one replica). */
  leaderElection: LeaderElectionConfig | undefined;
  /** Cluster identities the controller issues; undefined with --no-identities. */
  identities: { namespace: string; clusterSet: string; ttlMs: number } | undefined;
  /** Where /metrics is served; undefined: nowhere. */
  metrics: { ip: string; port: number } | undefined;
}

function leaderElectionConfig(flags: ControllerFlags, controlPlane: SourceConfig, env: NodeJS.ProcessEnv): LeaderElectionConfig | undefined {
  if (!flags.leaderElect) {
    const stray = (['leaderElectNamespace', 'leaderElectName', 'leaderElectIdentity', 'leaderElectLeaseDuration', 'leaderElectRenewDeadline', 'leaderElectRetryPeriod'] as const).find((k) => flags[k] !== undefined);
    if (stray) throw new ConfigError(`--${stray.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} needs --leader-elect`);
    return undefined;
  }
  if (controlPlane.kind !== 'kubernetes') throw new ConfigError('--leader-elect needs a Kubernetes control-plane cluster (--kubeconfig or --in-cluster): the lease lives there');
  const d = leaderElectionDefaults;
  const ms = (name: string, v: string | undefined, fallback: number) => (v === undefined ? fallback : parseDuration(name, v));
  const cfg: LeaderElectionConfig = {
    namespace: flags.leaderElectNamespace ?? env.POD_NAMESPACE ?? d.namespace,
    name: flags.leaderElectName ?? d.name,
    identity: flags.leaderElectIdentity ?? env.POD_NAME ?? `${hostname()}_${process.pid}`,
    leaseDurationMs: ms('--leader-elect-lease-duration', flags.leaderElectLeaseDuration, d.leaseDurationMs),
    renewDeadlineMs: ms('--leader-elect-renew-deadline', flags.leaderElectRenewDeadline, d.renewDeadlineMs),
    retryPeriodMs: ms('--leader-elect-retry-period', flags.leaderElectRetryPeriod, d.retryPeriodMs),
  };
  // As client-go: a leader must give up (renew deadline) before a follower may take over (lease duration).
  if (!(cfg.leaseDurationMs > cfg.renewDeadlineMs && cfg.renewDeadlineMs > cfg.retryPeriodMs * 1.2)) {
    throw new ConfigError(`leader election needs lease duration > renew deadline > 1.2 × retry period, got ${cfg.leaseDurationMs} / ${cfg.renewDeadlineMs} / ${cfg.retryPeriodMs} ms`);
  }
  if (cfg.leaseDurationMs % 1000) throw new ConfigError('--leader-elect-lease-duration must be whole seconds (a Lease holds leaseDurationSeconds)');
  return cfg;
}

export function controllerConfig(flags: ControllerFlags, env: NodeJS.ProcessEnv = process.env): ControllerConfig {
  const serviceCidr = env.ECNET_SERVICE_CIDR ?? defaults.serviceCidr;
  const kube = Boolean(flags.kubeconfig || flags.inCluster || (!flags.clustersDir && !env.ECNET_CLUSTERS_DIR && env.KUBECONFIG));
  const clustersDir = kube ? flags.clustersDir : clustersDirOf(flags, env);
  const controlPlane: SourceConfig = kube
    ? { kind: 'kubernetes', kubeconfigPath: flags.kubeconfig ?? env.KUBECONFIG, context: flags.context, inCluster: Boolean(flags.inCluster) }
    : { kind: 'local', dir: clusterDir(flags.controlPlane ?? flags.hub ?? defaults.controlPlaneName, clustersDir!), serviceCidr };
  return {
    controlPlane,
    clustersDir,
    serviceCidr,
    memberTimeoutMs: flags.memberTimeout === undefined ? defaults.memberTimeoutMs : parseDuration('--member-timeout', flags.memberTimeout),
    resyncMs: flags.resync === undefined ? defaults.resyncMs : parseDuration('--resync', flags.resync),
    leaderElection: leaderElectionConfig(flags, controlPlane, env),
    metrics: metricsEndpoint(flags.metrics, env),
    // Cluster identities by default: the CA and each member's certificate in ecnet's namespace.
    identities:
      flags.identities === false
        ? undefined
        : {
            namespace: env.POD_NAMESPACE ?? leaderElectionDefaults.namespace,
            clusterSet: clusterSetName(flags, env),
            ttlMs: flags.identityTtl === undefined ? defaults.identityTtlMs : parseDuration('--identity-ttl', flags.identityTtl),
          },
  };
}

export type GetOutput = 'table' | 'yaml' | 'json';
export function getOutput(v: string | undefined): GetOutput {
  if (v === undefined || v === 'table' || v === 'yaml' || v === 'json') return v ?? 'table';
  throw new ConfigError(`-o must be table, yaml or json, got ${JSON.stringify(v)}`);
}

/** TLS between proxies and gateways: PEM files (ECNET_TLS_CERT, ECNET_TLS_KEY, ECNET_TLS_CA), or a cluster identity. */
export interface TlsFlags {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  /** A directory with tls.crt, tls.key and ca.crt naming this cluster (ECNET_IDENTITY_DIR). */
  identityDir?: string;
  /** The cluster set the identities belong to (ECNET_CLUSTER_SET, default `ecnet`). */
  clusterSet?: string;
  /** Plain TCP tunnels, said explicitly (ECNET_PLAIN_TUNNELS=1): without it, no TLS is a configuration error. */
  plainTunnels?: boolean;
}

/** Tunnels without TLS only when asked for: a forgotten identity must not silently open a gateway to anyone. */
function requireTls(flags: TlsFlags, env: NodeJS.ProcessEnv, configured: boolean): void {
  if (configured || flags.plainTunnels || env.ECNET_PLAIN_TUNNELS === '1') return;
  throw new ConfigError('tunnels need TLS: give --identity-dir (the mounted ecnet-identity Secret) or the --tls-* files; --plain-tunnels (ECNET_PLAIN_TUNNELS=1) runs them as plain TCP');
}

/** mTLS with cluster identities (src/identity/): where the mounted identity is, and the cluster set's name. */
export interface IdentityConfig {
  dir: string;
  clusterSet: string;
}

/** The cluster identity to use, or undefined; refused together with the PEM flags (one or the other). */
export function identityConfig(flags: TlsFlags, env: NodeJS.ProcessEnv = process.env): IdentityConfig | undefined {
  const dir = flags.identityDir ?? env.ECNET_IDENTITY_DIR;
  if (!dir) return undefined;
  if (flags.tlsCert ?? flags.tlsKey ?? flags.tlsCa ?? env.ECNET_TLS_CERT ?? env.ECNET_TLS_KEY ?? env.ECNET_TLS_CA) {
    throw new ConfigError('--identity-dir and the --tls-* files are two ways to configure TLS: give one');
  }
  return { dir, clusterSet: clusterSetName(flags, env) };
}

/** --cluster-set (ECNET_CLUSTER_SET): a name, the authority of every SPIFFE ID of the set. */
export function clusterSetName(flags: { clusterSet?: string }, env: NodeJS.ProcessEnv = process.env): string {
  const clusterSet = flags.clusterSet ?? env.ECNET_CLUSTER_SET ?? defaults.clusterSet;
  if (!/^[A-Za-z0-9_-]([A-Za-z0-9._-]{0,61}[A-Za-z0-9_-])?$/.test(clusterSet)) throw new ConfigError(`--cluster-set must be a name (letters, digits, . _ -), got ${JSON.stringify(clusterSet)}`);
  return clusterSet;
}

export interface TlsConfig {
  cert?: string;
  key?: string;
  ca?: string;
}

/** The PEM contents, or undefined when no TLS is configured; `needCert`: a server must have one. */
export function tlsConfig(flags: TlsFlags, needCert: boolean, env: NodeJS.ProcessEnv = process.env, needCa = false): TlsConfig | undefined {
  const files = { cert: flags.tlsCert ?? env.ECNET_TLS_CERT, key: flags.tlsKey ?? env.ECNET_TLS_KEY, ca: flags.tlsCa ?? env.ECNET_TLS_CA };
  if (!files.cert && !files.key && !files.ca) return undefined;
  if (Boolean(files.cert) !== Boolean(files.key)) throw new ConfigError('--tls-cert and --tls-key go together');
  if (needCert && !files.cert) throw new ConfigError('a TLS gateway needs --tls-cert and --tls-key');
  // Encrypting to a gateway nobody verified protects from nothing: the agent needs the CA that signed them.
  if (needCa && !files.ca) throw new ConfigError('--tls-ca is needed to verify the gateways (TLS without it would accept any certificate)');
  const out: TlsConfig = {};
  for (const [k, path] of Object.entries(files) as [keyof TlsConfig, string | undefined][]) {
    if (!path) continue;
    try {
      out[k] = readFileSync(path, 'utf8');
    } catch (cause) {
      throw new ConfigError(`cannot read --tls-${k} ${path}: ${(cause as Error).message}`, { cause });
    }
  }
  return out;
}

/**
 * How a tunnel's bytes move once it is up (--splice, ECNET_SPLICE): `kernel` hands plain-TCP pairs to the
 * addon's splice(2) thread (TLS tunnels stay streams, their bytes must pass through Node's TLS); `stream`
 * pipes every pair through Node.
 */
export type SpliceMode = 'kernel' | 'stream';

export function spliceMode(flag: string | undefined, env: NodeJS.ProcessEnv): SpliceMode {
  const v = flag ?? env.ECNET_SPLICE ?? 'kernel';
  if (v === 'kernel' || v === 'stream') return v;
  throw new ConfigError(`--splice must be kernel or stream, got ${JSON.stringify(v)}`);
}

/**
 * Who sets up new connections (--fast-path, ECNET_FAST_PATH): `native`, the addon's front on the splice thread
 * (src/proxy/front.ts, src/gateway/front.ts), handing to Node only what it cannot finish; `node`, Node accepts
 * every connection. `native` needs --splice kernel (with stream it is `node`).
 */
export type FastPath = 'native' | 'node';

export function fastPath(flag: string | undefined, env: NodeJS.ProcessEnv, splice: SpliceMode): FastPath {
  const v = flag ?? env.ECNET_FAST_PATH ?? 'native';
  if (v !== 'native' && v !== 'node') throw new ConfigError(`--fast-path must be native or node, got ${JSON.stringify(v)}`);
  return splice === 'kernel' ? v : 'node';
}

/** --max-connections and --max-connections-per-source of the agent's proxy and the gateway. */
export interface LimitFlags {
  maxConnections?: string;
  maxConnectionsPerSource?: string;
}

/** Connection limits from flags or ECNET_MAX_CONNECTIONS / ECNET_MAX_CONNECTIONS_PER_SOURCE; unset: the defaults. */
export function limitsConfig(flags: LimitFlags, env: NodeJS.ProcessEnv): Partial<ConnectionLimits> {
  const total = flags.maxConnections ?? env.ECNET_MAX_CONNECTIONS;
  const perSource = flags.maxConnectionsPerSource ?? env.ECNET_MAX_CONNECTIONS_PER_SOURCE;
  return {
    ...(total !== undefined ? { total: parseIntFlag('--max-connections', total, 1, 1 << 24) } : {}),
    ...(perSource !== undefined ? { perSource: parseIntFlag('--max-connections-per-source', perSource, 1, 1 << 24) } : {}),
  };
}

/** Flags of `ecnet gateway`. */
export interface GatewayFlags extends SourceFlags, TlsFlags, LimitFlags {
  listen?: string;
  splice?: string;
  fastPath?: string;
  /** Seconds open tunnels may run after SIGTERM before they are cut (ECNET_DRAIN_TIMEOUT). */
  drainTimeout?: string;
  /** ip:port for /metrics, or off (ECNET_METRICS). */
  metrics?: string;
}

export interface GatewayConfig {
  source: SourceConfig;
  listen: { ip: string; port: number };
  tls: TlsConfig | undefined;
  /** mTLS with cluster identities; undefined: the PEM files of `tls`, or plain tunnels. */
  identity: IdentityConfig | undefined;
  splice: SpliceMode;
  fastPath: FastPath;
  limits: Partial<ConnectionLimits>;
  /** How long open tunnels may run after SIGTERM (readiness is off, nothing new is accepted). */
  drainMs: number;
  /** Where /metrics is served; undefined: nowhere. */
  metrics: { ip: string; port: number } | undefined;
}

export const gatewayDefaults = {
  /** Where the gateway listens: every address, the Cluster resource's default gatewayPort. */
  listen: '0.0.0.0:80',
} as const;

export function gatewayConfig(flags: GatewayFlags, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const listen = flags.listen ?? env.ECNET_GATEWAY_LISTEN ?? gatewayDefaults.listen;
  try {
    const identity = identityConfig(flags, env);
    const tls = identity ? undefined : tlsConfig(flags, true, env);
    requireTls(flags, env, Boolean(identity || tls));
    const drain = flags.drainTimeout ?? env.ECNET_DRAIN_TIMEOUT ?? '10';
    if (!/^\d{1,6}$/.test(drain)) throw new ConfigError(`--drain-timeout must be whole seconds, got ${JSON.stringify(drain)}`);
    const splice = spliceMode(flags.splice, env);
    return { source: sourceConfig(flags, env), listen: parseEndpoint(listen), tls, identity, splice, fastPath: fastPath(flags.fastPath, env, splice), limits: limitsConfig(flags, env), drainMs: Number(drain) * 1000, metrics: metricsEndpoint(flags.metrics, env) };
  } catch (cause) {
    if (cause instanceof ConfigError) throw cause;
    throw new ConfigError(`--listen: ${(cause as Error).message}`, { cause });
  }
}

/** Flags of `ecnet agent`. */
export interface AgentFlags extends SourceFlags, LoadFlags, TlsFlags, LimitFlags {
  bpffs?: string;
  cgroup?: string;
  clusterKey?: string;
  /** This node's name (NODE_NAME, from the downward API): its pods' workloads are asserted to gateways. */
  nodeName?: string;
  admin?: string;
  splice?: string;
  fastPath?: string;
  allowLoopbackProxy?: boolean;
  /** The hand-over socket shared by an agent and its successor on the node (ECNET_HANDOVER). */
  handover?: string;
  /** ip:port for /metrics beside the loopback admin endpoint (which serves it too), or off (ECNET_METRICS). */
  metrics?: string;
  /** imported (default) or all: which Services and EndpointSlices the agent watches (ECNET_WATCH_SERVICES). */
  watchServices?: string;
}

export const agentDefaults = {
  /** The node proxy's port; its address is the node's own (status.hostIP), which has no default. */
  proxyPort: 15001,
  /** The agent's admin endpoint (/healthz, /routes), for probes and `ecnet routes`. */
  admin: '127.0.0.1:15000',
} as const;

export interface AgentConfig {
  source: SourceConfig;
  datapath: DatapathConfig;
  load: LoadConfig;
  /** region/zone/group/name of the cluster this node is in. */
  clusterKey: string;
  admin: { ip: string; port: number };
  /** This node's name; undefined: no workload identities (no pod is looked up). */
  nodeName: string | undefined;
  /** TLS to the gateways (client certificate for mTLS). */
  tls: TlsConfig | undefined;
  /** mTLS with cluster identities; undefined: the PEM files of `tls`, or plain tunnels. */
  identity: IdentityConfig | undefined;
  splice: SpliceMode;
  fastPath: FastPath;
  /** The node proxy's connection limits. */
  limits: Partial<ConnectionLimits>;
  /** The hand-over socket (docs/restarts.md); undefined: no hand-over, a restart drains and starts afresh. */
  handover: string | undefined;
  /** A second listener for /metrics (the admin endpoint is loopback); undefined: only the admin one. */
  metrics: { ip: string; port: number } | undefined;
  /** Which Services and EndpointSlices the agent watches: those labelled as imported (the default), or all. */
  watchServices: WatchServices;
}

export type WatchServices = 'imported' | 'all';

/**
 * --watch-services (ECNET_WATCH_SERVICES): `imported`, only the Services and EndpointSlices that carry the
 * controller's flomesh.io/service-import label, so an agent receives nothing of its cluster's other services;
 * `all`, every one (for a control plane older than the label).
 */
export function watchServices(flag: string | undefined, env: NodeJS.ProcessEnv): WatchServices {
  const v = flag ?? env.ECNET_WATCH_SERVICES ?? 'imported';
  if (v !== 'imported' && v !== 'all') throw new ConfigError(`--watch-services must be imported or all, got ${JSON.stringify(v)}`);
  return v;
}

const CLUSTER_KEY = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?){3}$/;

export function agentConfig(flags: AgentFlags, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const source = sourceConfig(flags, env);
  let clusterKey = flags.clusterKey ?? env.ECNET_CLUSTER_KEY;
  // Local mode: the cluster is named like its directory, in the default locality.
  if (!clusterKey && source.kind === 'local') clusterKey = `default/default/default/${source.dir.replace(/\/+$/, '').split('/').pop()}`;
  if (!clusterKey || !CLUSTER_KEY.test(clusterKey)) {
    throw new ConfigError(`--cluster-key must be region/zone/group/name (this node's cluster), got ${JSON.stringify(clusterKey)}`);
  }
  const admin = flags.admin ?? env.ECNET_ADMIN ?? agentDefaults.admin;
  const proxyText = flags.proxy ?? env.ECNET_PROXY;
  if (!proxyText) {
    throw new ConfigError(
      `--proxy NODE_IP[:${agentDefaults.proxyPort}] is required: the node's own address (status.hostIP in the DaemonSet), which every pod reaches through its default route`,
    );
  }
  try {
    const { proxy, proxy6 } = nodeProxyAddresses(proxyText, flags.proxy6 ?? env.ECNET_PROXY6, flags.allowLoopbackProxy ?? truthy(env.ECNET_ALLOW_LOOPBACK_PROXY));
    const { proxy6: _list, ...rest } = flags;
    const load = loadConfig({ ...rest, proxy: formatEndpoint(proxy), ...(proxy6 ? { proxy6 } : {}) }, { ...env, ECNET_PROXY6: undefined });
    const identity = identityConfig(flags, env);
    const tls = identity ? undefined : tlsConfig(flags, false, env, true);
    requireTls(flags, env, Boolean(identity || tls));
    return {
      source,
      datapath: datapathConfig({ ...(flags.bpffs ? { bpffs: flags.bpffs } : {}), ...(flags.cgroup ? { cgroup: flags.cgroup } : {}) }, env),
      load,
      clusterKey,
      nodeName: flags.nodeName ?? env.NODE_NAME,
      admin: parseEndpoint(admin),
      identity,
      tls,
      splice: spliceMode(flags.splice, env),
      fastPath: fastPath(flags.fastPath, env, spliceMode(flags.splice, env)),
      limits: limitsConfig(flags, env),
      handover: flags.handover ?? env.ECNET_HANDOVER ?? undefined,
      metrics: metricsEndpoint(flags.metrics, env),
      watchServices: watchServices(flags.watchServices, env),
    };
  } catch (cause) {
    if (cause instanceof ConfigError) throw cause;
    throw new ConfigError((cause as Error).message, { cause });
  }
}

const truthy = (v: string | undefined): boolean => v !== undefined && /^(1|true|yes)$/i.test(v);

/** Addresses a pod cannot reach as its node's: loopback and "any" (both stay inside the pod's own namespace). */
const notANodeAddress = (ip: string): boolean => /^127\./.test(ip) || ip === '::1' || ip === '0.0.0.0' || ip === '::';

/**
 * The node proxy's addresses. `--proxy`: IP:PORT, [IPv6]:PORT, or a bare IP (port 15001), normally the node's
 * status.hostIP. `--proxy6`: an IPv6 address, or the node's address list (status.hostIPs, `a,b`). The IPv4 one
 * is the proxy (the datapath's connect4 target), the IPv6 one, if any, the proxy6: on an IPv6-primary node
 * hostIP is the IPv6 address and the IPv4 one comes from the list.
 */
export function nodeProxyAddresses(proxy: string, proxy6: string | undefined, allowLoopback = false): { proxy: { ip: string; port: number }; proxy6: string | undefined } {
  const bare = (text: string): string | undefined => {
    try {
      return normalizeIp(text);
    } catch {
      return undefined;
    }
  };
  const first = bare(proxy);
  const ep = first !== undefined ? { ip: first, port: agentDefaults.proxyPort } : parseEndpoint(proxy);
  const listed = (proxy6 ?? '').split(',').map((x) => x.trim()).filter(Boolean).map((x) => {
    const ip = bare(x);
    if (ip === undefined) throw new ConfigError(`--proxy6: ${JSON.stringify(x)} is not an IP address`);
    return ip;
  });
  const all = [ep.ip, ...listed];
  const v4 = all.find((ip) => !ip.includes(':'));
  // A mapped ::ffff:a.b.c.d normalizes to a.b.c.d, so every `:` address here is a real IPv6 one.
  const v6 = listed.find((ip) => ip.includes(':')) ?? (ep.ip.includes(':') ? ep.ip : undefined);
  if (v4 === undefined) throw new ConfigError(`--proxy ${proxy}: IPv6-only nodes are not supported yet: the datapath needs the node's IPv4 address`);
  for (const ip of [v4, v6]) {
    if (ip !== undefined && notANodeAddress(ip) && !allowLoopback) {
      // connect4 rewrites the destination inside the caller's own network namespace: a pod would dial its own
      // loopback, where no proxy listens (or something else does, e.g. a sidecar).
      throw new ConfigError(
        `--proxy ${ip} is a loopback (or unspecified) address: the datapath rewrites a connection's destination inside the calling pod's own network namespace, so only host-network clients would reach it. ` +
          `Give the node's own address (status.hostIP), or --allow-loopback-proxy if only host-network clients are to be served`,
      );
    }
  }
  return { proxy: { ip: v4, port: ep.port }, proxy6: v6 };
}

/**
 * Where a component serves Prometheus metrics (`--metrics`, ECNET_METRICS): ip:port, or off (the default in the
 * binary; the manifests turn it on, on the port Prometheus is told about).
 */
export function metricsEndpoint(flag: string | undefined, env: NodeJS.ProcessEnv): { ip: string; port: number } | undefined {
  const v = flag ?? env.ECNET_METRICS;
  if (v === undefined || v === '' || v === 'off') return undefined;
  try {
    return parseEndpoint(v);
  } catch (cause) {
    throw new ConfigError(`--metrics must be ip:port or off, got ${JSON.stringify(v)}`, { cause });
  }
}

/** The local cluster set's state directory (ECNET_LOCAL_DIR): cluster directories, logs, pids. */
export function localStateDir(flags: { state?: string }, env: NodeJS.ProcessEnv = process.env): string {
  return flags.state ?? env.ECNET_LOCAL_DIR ?? '/var/lib/ecnet/local';
}

/** `--labels a=b,c=d` */
export function labelsFlag(v: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (v ?? '').split(',').filter(Boolean)) {
    const m = /^([A-Za-z0-9./_-]+)=([A-Za-z0-9._-]*)$/.exec(part.trim());
    if (!m) throw new ConfigError(`--labels takes key=value[,key=value], got ${JSON.stringify(part)}`);
    out[m[1]!] = m[2]!;
  }
  return out;
}
