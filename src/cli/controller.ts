// `ecnet controller`: the control-plane cluster, until SIGINT/SIGTERM (then it drains: writes in flight finish).
import type { Server } from 'node:http';
import { untilSignal } from '../util/process.js';
import { Command } from 'commander';
import { ConfigError, type ControllerConfig, type ControllerFlags, controllerConfig, leaderElectionDefaults } from '../config.js';
import type { LeaderElector } from '../controlplane/leader.js';
import { memberConnector } from '../controlplane/connect.js';
import { Controller } from '../controlplane/controller.js';
import { type ControllerPhase, ControllerMetrics, controllerProbes } from '../controlplane/metrics.js';
import { EcnetError } from '../errors.js';
import { componentLogger } from '../logger.js';
import { componentRegistry } from '../metrics/registry.js';
import { startMetricsServer } from '../metrics/server.js';
import { openSource } from '../sources/open.js';

export function controllerCommand(): Command {
  return new Command('controller')
    .description('turn ServiceExports in member clusters into ServiceImports (and derived Services) in all of them')
    .option('--clusters-dir <dir>', 'local mode: one directory per cluster; the control-plane cluster is <dir>/control-plane')
    .option('--control-plane <dir>', 'local mode: the control-plane cluster directory (or its name under --clusters-dir)')
    .option('--hub <dir>', 'the former name of --control-plane')
    .option('--kubeconfig <file>', 'the control-plane cluster is a Kubernetes API server')
    .option('--context <name>', 'kubeconfig context')
    .option('--in-cluster', 'use the service account of the pod it runs in')
    .option('--member-timeout <duration>', 'how long an unreachable member keeps its exports', '120s')
    .option('--resync <duration>', 'full pass period', '30s')
    .option('--leader-elect', 'run as one of several replicas: only the holder of a coordination.k8s.io Lease in the control-plane cluster writes')
    .option('--leader-elect-namespace <ns>', `namespace of the Lease (default POD_NAMESPACE, else ${leaderElectionDefaults.namespace})`)
    .option('--leader-elect-name <name>', `name of the Lease (default ${leaderElectionDefaults.name})`)
    .option('--leader-elect-identity <id>', 'holder identity (default POD_NAME, else host name and pid)')
    .option('--leader-elect-lease-duration <duration>', `how long an unrenewed lease stays held (default ${leaderElectionDefaults.leaseDurationMs / 1000}s)`)
    .option('--leader-elect-renew-deadline <duration>', `the leader gives up when it could not renew for this long (default ${leaderElectionDefaults.renewDeadlineMs / 1000}s)`)
    .option('--leader-elect-retry-period <duration>', `between lease attempts (default ${leaderElectionDefaults.retryPeriodMs / 1000}s)`)
    .option('--no-identities', 'issue no cluster certificates (then tunnels are plain unless the agents and gateways get --tls-* files)')
    .option('--cluster-set <name>', 'the cluster set, in every certificate\'s SPIFFE ID (default ecnet)')
    .option('--identity-ttl <duration>', 'lifetime of a member\'s certificate, renewed with a third of it left (default 24h)')
    .option('--metrics <ip:port>', 'where /metrics, /healthz and /readyz are served, or off (default off; env ECNET_METRICS)')
    .action(async (flags: ControllerFlags) => {
      const cfg = controllerConfig(flags);
      const log = componentLogger('controller');
      // Watchers and timers do not hold the process open (they are unref'd so one-shot commands can exit):
      // this does, until a signal, also while the control-plane cluster is not readable yet.
      const { signal: stopped, release } = untilSignal();
      let elector: LeaderElector | undefined;
      // /readyz: a standby waiting for the lease is ready (healthy, it just does not write); a leader once it
      // has listed the Clusters. Served before the lease is waited for, so a standby is scraped and probed too.
      let phase: ControllerPhase = cfg.leaderElection ? 'standby' : 'starting';
      const registry = cfg.metrics ? componentRegistry('controller') : undefined;
      const metrics = registry ? new ControllerMetrics(registry) : undefined;
      metrics?.setLeader(!cfg.leaderElection);
      let server: Server | undefined;
      try {
        if (registry && cfg.metrics) {
          const { ip, port } = cfg.metrics;
          server = await startMetricsServer(registry, { host: ip, port, extra: controllerProbes(() => phase) }).catch((cause: unknown) => {
            throw new EcnetError('ECNET_METRICS_LISTEN', `cannot serve metrics on ${ip}:${port}`, { cause });
          });
          log.info({ metrics: `${ip}:${port}` }, 'serving /metrics, /healthz and /readyz');
        }
        if (cfg.leaderElection) {
          elector = await leaderElector(cfg);
          process.stderr.write(`ecnet controller: ${elector.identity} waiting for lease ${cfg.leaderElection.namespace}/${cfg.leaderElection.name}\n`);
          const first = await Promise.race([elector.acquire().then(() => undefined), stopped]);
          if (first !== undefined) {
            log.info({ signal: first }, 'stopping before leading');
            return;
          }
          process.stderr.write(`ecnet controller: ${elector.identity} leads\n`);
          phase = 'starting';
          metrics?.setLeader(true);
        }
        // A leader that lost its lease stops writing and exits non-zero (its pod restarts and campaigns again).
        const lost = elector ? elector.lost.then((err) => Promise.reject(err)) : new Promise<never>(() => undefined);
        lost.catch(() => undefined);
        const controlPlane = await openSource(cfg.controlPlane);
        const controller = new Controller({
          controlPlane,
          connect: memberConnector({ controlPlane, clustersDir: cfg.clustersDir, serviceCidr: cfg.serviceCidr }),
          memberTimeoutMs: cfg.memberTimeoutMs,
          resyncMs: cfg.resyncMs,
          logger: log,
          ...(cfg.identities ? { identities: cfg.identities } : {}),
          ...(metrics ? { metrics } : {}),
        });
        process.stderr.write(`ecnet controller: watching ${controlPlane.description}\n`);
        // A signal while the control-plane cluster is still being read stops as cleanly as later.
        const started = controller.start();
        started.catch(() => undefined); // rejects only when closed before the first list, i.e. on a signal
        started.then(
          () => {
            if (phase === 'starting') phase = 'started';
          },
          () => undefined,
        );
        try {
          const signal = await Promise.race([started.then(() => stopped), stopped, lost]);
          log.info({ signal }, 'stopping');
        } finally {
          phase = 'stopping';
          await controller.close();
          await controlPlane.close();
        }
      } finally {
        // After the last write: the next leader need not wait for the lease to expire.
        await elector?.close();
        metrics?.setLeader(false);
        if (server) {
          const s = server;
          s.closeAllConnections();
          await new Promise((r) => s.close(r));
        }
        release();
      }
    });
}

async function leaderElector(cfg: ControllerConfig): Promise<LeaderElector> {
  const le = cfg.leaderElection!;
  if (cfg.controlPlane.kind !== 'kubernetes') throw new ConfigError('--leader-elect needs a Kubernetes control-plane cluster');
  // Loaded only with --leader-elect: client-node is slow to import.
  const [{ LeaderElector, kubernetesLeaseClient }, { loadKubeConfig }] = await Promise.all([import('../controlplane/leader.js'), import('../sources/kubeconfig.js')]);
  const kc = loadKubeConfig({
    ...(cfg.controlPlane.inCluster ? { inCluster: true } : {}),
    ...(cfg.controlPlane.kubeconfigPath ? { kubeconfigPath: cfg.controlPlane.kubeconfigPath } : {}),
    ...(cfg.controlPlane.context ? { context: cfg.controlPlane.context } : {}),
  });
  return new LeaderElector({ client: kubernetesLeaseClient(kc), ...le, logger: componentLogger('leader-election') });
}
