// Every default of ecnet in one place: config.ts applies them to flags and environment, and components that
// take options fall back to the same values, so a default is never written twice.
import { join } from 'node:path';
import { packageRoot } from './paths.js';

/** The controller's name: its Deployment, its Lease, the field manager and managed-by label of what it writes. */
export const CONTROLLER_NAME = 'ecnet-controller';

export const defaults = {
  /** Pin directory of maps and links on bpffs. */
  bpffs: '/sys/fs/bpf/ecnet',
  /** SO_MARK bit(s) the node proxy sets on its upstream sockets; the datapath never redirects those. */
  proxyMark: 0x1000,
  /** Compiled BPF objects (npm run build:bpf). */
  objectDir: join(packageRoot, 'build', 'bpf'),
  /** Commands print their own results; logs are for what goes wrong (ECNET_LOG_LEVEL=info for more). */
  logLevel: 'warn',
  /** Local mode: one directory per cluster under this one (ECNET_CLUSTERS_DIR). */
  clustersDir: '/var/lib/ecnet/clusters',
  /** The cluster set's name in cluster identities (spiffe://<cluster set>/cluster/...). */
  clusterSet: 'ecnet',
  /** Lifetime of a member's certificate; renewed with a third of it left. */
  identityTtlMs: 24 * 3_600_000,
  /** Local mode: the control-plane cluster's directory name under clustersDir. */
  controlPlaneName: 'control-plane',
  /** ClusterIPs the local source allocates (ECNET_SERVICE_CIDR); every cluster may use the same range. */
  serviceCidr: '10.96.0.0/16',
  /** How long an unreachable member keeps its exports before the controller withdraws them. */
  memberTimeoutMs: 120_000,
  /** Full controller pass without events, repairing what changed behind its back. */
  resyncMs: 30_000,
  /**
   * Age past which the proxy ignores an ecnet_conn_dst record, and the agent sweeps it. A redirected connection
   * is taken within milliseconds of its handshake (at most the proxy's 10 s wait for routes at start, plus an
   * accept backlog). A record this old is one no proxy took (client reset before accept, reset by the proxy's
   * connection limits, no proxy running); used, it could send a later connection on the same 4-tuple, whose own
   * record failed, where the old one was going.
   */
  connRecordMaxAgeMs: 30_000,
  /** How often the agent sweeps ecnet_conn_dst of records older than connRecordMaxAgeMs. */
  connRecordSweepMs: 30_000,
} as const;

export const leaderElectionDefaults = {
  /** The install's namespace (daemonset/namespace); in a pod, POD_NAMESPACE wins. */
  namespace: 'ecnet-system',
  name: CONTROLLER_NAME,
  /** client-go's defaults. */
  leaseDurationMs: 15_000,
  renewDeadlineMs: 10_000,
  retryPeriodMs: 2_000,
} as const;
