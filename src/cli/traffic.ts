// `ecnet agent`, `ecnet gateway`, `ecnet routes`: the traffic path as processes.
import { Command } from 'commander';
import { Agent, RouteMap } from '../agent/agent.js';
import { type IdentityReport, type RouteReport, identityReport, startAdmin } from '../agent/admin.js';
import { Datapath } from '../bpf/datapath.js';
import { origDstCodec } from '../bpf/codecs.js';
import { ConnRecordSweeper } from '../bpf/sweeper.js';
import { timensMonotonicOffsetNs } from '../bpf/ktime.js';
import { connectMarked } from '../native/sockets.js';
import { type AgentFlags, ConfigError, clusterSetName, type GatewayFlags, agentConfig, agentDefaults, defaults, gatewayConfig, gatewayDefaults } from '../config.js';
import { Gateway } from '../gateway/gateway.js';
import { LiveCatalog } from '../gateway/live-catalog.js';
import { componentLogger } from '../logger.js';
import { HealthChecks, checkTargets } from '../proxy/health-checks.js';
import { NodeProxy } from '../proxy/proxy.js';
import { openSource } from '../sources/open.js';
import { table } from './table.js';
import { untilSignal } from '../util/process.js';
import { IdentityFiles } from '../identity/files.js';
import { PodWorkloads } from '../agent/workloads.js';
import { HandoverListener } from '../handover/channel.js';
import { type Taken, giveTo, takeOver } from '../handover/agent-handover.js';
import { componentRegistry } from '../metrics/registry.js';
import { startMetricsServer } from '../metrics/server.js';
import { ProxyMetrics } from '../proxy/metrics.js';
import { AgentMetrics } from '../agent/metrics.js';
import { GatewayMetrics } from '../gateway/metrics.js';

/** Tunnels without TLS: said once at start, as a warning (anyone who reaches a gateway can open them). */
function plainWarning(component: string): void {
  componentLogger(component).warn('tunnels are plain TCP: anyone who reaches the gateway can open one, and nothing is encrypted; give --identity-dir (the ecnet-identity Secret) for mTLS between clusters');
}

/** Runs until SIGINT/SIGTERM (the process is held open meanwhile), then `stop`. */
async function runUntilSignal(stop: () => Promise<void>): Promise<void> {
  const { signal, release } = untilSignal();
  componentLogger('cli').info({ signal: await signal }, 'stopping');
  try {
    await stop();
  } finally {
    release();
  }
}

function tlsOptions(cmd: Command): Command {
  return cmd
    .option('--tls-cert <file>', 'PEM certificate (the gateway serves it; the agent presents it for mTLS)')
    .option('--tls-key <file>', 'PEM key of --tls-cert')
    .option('--tls-ca <file>', 'PEM CA: the gateway requires client certificates it signed; the agent verifies gateways with it')
    .option('--identity-dir <dir>', "mTLS with cluster identities: this cluster's tls.crt, tls.key and ca.crt (the mounted ecnet-identity Secret), renewed in place")
    .option('--cluster-set <name>', 'the cluster set the identities belong to (default ecnet)')
    .option('--plain-tunnels', 'run tunnels as plain TCP, without TLS (anyone who reaches a gateway can open one): only when said');
}

function limitOptions(cmd: Command): Command {
  return cmd
    .option('--max-connections <n>', 'open connections at most; more are reset at once (default 16384)')
    .option('--max-connections-per-source <n>', 'open connections from one source (an IPv4 address, an IPv6 /64) at most (default 1024)');
}

function sourceOptions(cmd: Command): Command {
  return cmd
    .option('--cluster <dir>', 'this cluster as a local directory (or a name under --clusters-dir)')
    .option('--clusters-dir <dir>', 'where local cluster directories are')
    .option('--kubeconfig <file>', 'this cluster is a Kubernetes API server')
    .option('--context <name>', 'kubeconfig context')
    .option('--in-cluster', 'use the service account of the pod it runs in');
}

export function gatewayCommand(): Command {
  return limitOptions(tlsOptions(sourceOptions(new Command('gateway'))))
    .description("the cluster's entry: tunnels for exported services to ready local endpoints, ingress rules, /healthz, /readyz, /healthz/services")
    .option('--listen <ip:port>', `where to listen (default ${gatewayDefaults.listen})`)
    .option('--splice <mode>', 'how tunnel bytes move: kernel (splice(2), plain TCP tunnels) or stream (through Node); default kernel')
    .option('--fast-path <mode>', 'who sets up new tunnels: native (the addon, on the splice thread; Node takes what it cannot finish) or node; default native')
    .option('--drain-timeout <seconds>', 'after SIGTERM (readiness off, nothing new accepted), how long open tunnels may run before they are cut; default 10')
    .option('--metrics <ip:port>', 'where Prometheus metrics are served (/metrics), or off; default off')
    .action(async (flags: GatewayFlags) => {
      const cfg = gatewayConfig(flags);
      const log = componentLogger('gateway');
      const source = await openSource(cfg.source);
      const catalog = new LiveCatalog();
      const registry = componentRegistry('gateway');
      const exported = () => new Set([...catalog.all()].filter((s) => s.export).map((s) => `${s.namespace}/${s.name}`));
      const metrics = new GatewayMetrics({ registry, liveServices: exported, onOverflow: (cap) => log.warn({ cap }, 'more exported services than the metrics label: the rest are counted as _other') });
      let gw: Gateway | undefined;
      metrics.start();
      metrics.onCollect(() => {
        if (!gw) return;
        const { synced, services } = gw.serviceStates();
        metrics.setServices(synced, services);
      });
      // Served before the catalog is synced: a gateway that cannot sync is seen, not silent.
      const metricsServer = cfg.metrics ? await startMetricsServer(registry, { host: cfg.metrics.ip, port: cfg.metrics.port }) : undefined;
      const identity = cfg.identity ? new IdentityFiles(cfg.identity.dir, cfg.identity.clusterSet, { onChange: () => gw?.reloadTls() }) : undefined;
      const tls = identity?.tls ?? cfg.tls;
      if (!tls) plainWarning('gateway');
      // Listening before the catalog has synced: /healthz (liveness) answers during a long first list, /readyz
      // and tunnels say "not yet" (503) until it is done.
      gw = await Gateway.start({ host: cfg.listen.ip, port: cfg.listen.port, catalog, kernelSplice: cfg.splice === 'kernel', front: cfg.fastPath === 'native', limits: cfg.limits, metrics, ...(tls ? { tls } : {}) });
      try {
        await catalog.start(source);
      } catch (err) {
        gw.destroy();
        identity?.close();
        metricsServer?.close();
        throw err;
      }
      process.stderr.write(`ecnet gateway: listening on ${gw.address.host}:${gw.address.port} for ${source.description}${identity ? `, as ${identity.cluster}` : ''}\n`);
      await runUntilSignal(async () => {
        identity?.close();
        await gw!.close(cfg.drainMs);
        catalog.close();
        metrics.close();
        metricsServer?.close();
        await source.close();
      });
    });
}

export function agentCommand(): Command {
  return limitOptions(tlsOptions(sourceOptions(new Command('agent'))))
    .description('the node agent: loads the datapath, keeps its redirects and the proxy routes in step with the cluster, runs the node proxy')
    .option('--node-name <name>', "this node's name (default: NODE_NAME, set by the DaemonSet): its pods' ServiceAccounts go with their tunnels")
    .option('--cluster-key <key>', "this node's cluster, region/zone/group/name (local mode: default/default/default/<directory name>)")
    .option('--proxy <ip:port>', `the node proxy's address: the node's own IP (status.hostIP), port ${agentDefaults.proxyPort}; every pod must reach it`)
    .option('--proxy6 <ip>', "the node proxy's IPv6 address (same port), or the node's addresses (status.hostIPs, comma-separated) to take the IPv6 one from; none: IPv6 services are not redirected")
    .option('--allow-loopback-proxy', 'accept a loopback --proxy: only host-network clients can reach it (the datapath rewrites inside the caller\'s network namespace)')
    .option('--mark <mark>', 'SO_MARK of the proxy upstream sockets, skipped by the datapath')
    .option('--bpffs <dir>', 'pin directory on bpffs')
    .option('--cgroup <dir>', 'cgroup v2 directory the programs attach to (default: the root)')
    .option('--admin <ip:port>', `admin endpoint: /healthz, /routes (default ${agentDefaults.admin})`)
    .option('--splice <mode>', 'how tunnel bytes move: kernel (splice(2), plain TCP tunnels) or stream (through Node); default kernel')
    .option('--fast-path <mode>', 'who sets up new connections: native (the addon, on the splice thread; Node takes what it cannot finish) or node; default native')
    .option('--handover <path>', 'unix socket where this agent takes over from a running one on the node (its listening sockets and connections), and hands over to its successor')
    .option('--metrics <ip:port>', 'a second listener for Prometheus metrics (/metrics; the admin endpoint serves them on loopback too), or off; default off')
    .option('--watch-services <scope>', 'imported (default: only the Services and EndpointSlices labelled flomesh.io/service-import by the controller) or all (a control plane older than that label)')
    .action(async (flags: AgentFlags) => {
      const cfg = agentConfig(flags);
      if (!cfg.datapath.cgroup) throw new ConfigError('no cgroup v2 hierarchy found and --cgroup not given');
      const log = componentLogger('agent');
      // First of all, a running agent's listening sockets: while this one starts, no connection is refused.
      let taken: Taken | undefined;
      const tryTakeOver = async (quiet: boolean) => {
        if (!cfg.handover || taken) return;
        try {
          taken = await takeOver(cfg.handover, log);
        } catch (err) {
          if (!quiet) log.warn({ err }, 'hand-over refused: starting afresh (the running agent keeps its connections)');
        }
      };
      await tryTakeOver(false);
      const mark = cfg.load.settings.proxyMark;
      const connect = (host: string, port: number) => connectMarked({ host, port, mark });
      // Loads, or reuses what a previous agent pinned: a restart does not detach anything.
      const dp = Datapath.open({ bpffs: cfg.datapath.bpffs, cgroup: cfg.datapath.cgroup, objectDir: cfg.datapath.objectDir, settings: cfg.load.settings });
      const identity = cfg.identity ? new IdentityFiles(cfg.identity.dir, cfg.identity.clusterSet) : undefined;
      if (identity && identity.cluster !== cfg.clusterKey) {
        identity.close();
        throw new ConfigError(`the cluster identity in ${cfg.identity!.dir} names ${identity.cluster}, not this node's cluster ${cfg.clusterKey}`);
      }
      const tls = identity?.tls ?? cfg.tls;
      if (!tls) plainWarning('agent');
      const routes = new RouteMap();
      const source = await openSource(cfg.source);
      // The pods of this node by address: their ServiceAccount goes with each tunnel (a gateway enforces the export's).
      const workloads = cfg.nodeName ? new PodWorkloads(source, cfg.nodeName) : undefined;
      if (!workloads) componentLogger('agent').warn('no node name (NODE_NAME or --node-name): tunnels carry no workload identity, and exports that name a serviceAccountName refuse them');
      const registry = componentRegistry('agent');
      const proxyMetrics = new ProxyMetrics({
        registry,
        localCluster: cfg.clusterKey,
        liveServices: () => new Set([...routes.entries(), ...routes.keptEntries()].map(([, r]) => `${r.namespace}/${r.service}`)),
        onOverflow: (cap) => log.warn({ cap }, 'more imported services than the metrics label: the rest are counted as _other'),
      });
      let agentMetrics: AgentMetrics | undefined;
      const agent = new Agent({ source, localCluster: cfg.clusterKey, redirects: dp.services, routes, watchServices: cfg.watchServices, onReconcile: (s, err) => agentMetrics?.reconciled(s, err) });
      let routesKnown!: () => void;
      const routesReady = new Promise<void>((r) => (routesKnown = r));
      const startProxy = (t: Taken | undefined) =>
        NodeProxy.start({
          ...(t ? { listenFds: { fd: t.listeners.fd, ...(t.listeners.fd6 !== undefined && cfg.load.settings.proxyIp6 ? { fd6: t.listeners.fd6 } : {}) } } : { routesReady }),
          ...(workloads ? { workloadOf: (ip: string) => workloads.of(ip) } : {}),
          host: cfg.load.settings.proxy.ip,
          ...(cfg.load.settings.proxyIp6 ? { host6: cfg.load.settings.proxyIp6 } : {}),
          port: cfg.load.settings.proxy.port,
          localCluster: cfg.clusterKey,
          routes,
          originalDestination: (s) => dp.takeOriginalDestination(s),
          connect,
          kernelSplice: cfg.splice === 'kernel',
          limits: cfg.limits,
          metrics: proxyMetrics,
          ...(tls ? { tls } : {}),
          ...(cfg.fastPath === 'native'
            ? { front: { connections: dp.map('connections'), destinationOf: (v: Buffer) => origDstCodec.decode(v), mark, staleMs: defaults.connRecordMaxAgeMs, clockOffsetNs: Number(timensMonotonicOffsetNs()) } }
            : {}),
        });
      // The port is taken by an agent that does not hand over (an older version, or one whose hand-over failed):
      // wait for it to go, asking it again meanwhile, rather than exit and be restarted in a loop.
      let proxy: NodeProxy;
      for (let attempt = 0; ; attempt++) {
        // The predecessor's routes answer from the first connection until this agent's own reconcile replaces them.
        if (taken) routes.add(taken.routes);
        try {
          proxy = await startProxy(taken);
          break;
        } catch (err) {
          if (taken || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
          if (attempt === 0) log.warn({ err }, 'the node proxy port is taken by an agent that does not hand over: waiting for it to stop');
          await new Promise((r) => setTimeout(r, 1_000));
          await tryTakeOver(true);
        }
      }
      if (taken?.listeners.fd6 !== undefined && !cfg.load.settings.proxyIp6) taken.discard(taken.listeners.fd6);
      // How long connections to imported services were refused after a crash: from the process start to here.
      log.info({ msSinceProcessStart: Math.round(performance.now()), handedOver: Boolean(taken) }, 'node proxy listening');
      // What the kernel splicer and the front counted, read at each scrape (also after a hand-over: the counts stay).
      const splicer = proxy.tunnels.splicer;
      if (splicer) proxyMetrics.addNative({ read: () => splicer.tagStats(), reset: (tags) => splicer.tagReset(tags) });
      proxyMetrics.start();
      proxyMetrics.onCollect(() => {
        const now = Date.now();
        const targets = routes.entries().flatMap(([, r]) => r.exporters.filter((e) => e.clusterKey !== cfg.clusterKey).map((e) => ({ namespace: r.namespace, service: r.service, cluster: e.clusterKey, healthy: proxy.health.isHealthy(e.clusterKey, `${r.namespace}/${r.service}`, now) })));
        const clusters = new Set(targets.map((t) => t.cluster));
        proxyMetrics.setHealth(targets, [...clusters].map((cluster) => ({ cluster, up: proxy.health.isReachable(cluster) })));
      });
      agentMetrics = new AgentMetrics(registry, {
        status: () => agent.status,
        routes: () => ({ redirected: routes.entries().length, kept: routes.keptEntries().length }),
        fill: () => dp.fill(),
        counters: () => dp.stats(),
        pairs: () => proxy.tunnels.splicer?.stats().pairs ?? 0,
      });
      const admin = await startAdmin(cfg.admin.ip, cfg.admin.port, agent, routes, proxy, identity, Boolean(cfg.tls), taken?.listeners.admin, registry);
      const metricsServer = cfg.metrics ? await startMetricsServer(registry, { host: cfg.metrics.ip, port: cfg.metrics.port, ...(taken?.listeners.metrics !== undefined ? { listenFd: taken.listeners.metrics } : {}) }) : undefined;
      if (!cfg.metrics && taken?.listeners.metrics !== undefined) taken.discard(taken.listeners.metrics);
      if (taken) {
        const took = await taken.finish({
          adopt: (state, fds) => {
            const tag = proxyMetrics.tagOfName(state.tagName);
            return proxy.tunnels.adopt(state, fds, tag === undefined ? undefined : { tag });
          },
          start: (ids) => proxy.tunnels.start(ids),
          drop: (ids) => proxy.tunnels.drop(ids),
        });
        log.info({ pairs: took.pairs, refused: took.refused, ...(took.error ? { err: took.error } : {}) }, 'hand-over: this agent has the node');
      }
      await agent.start();
      routesKnown();
      const checks = new HealthChecks({
        health: proxy.health,
        connect,
        ...(tls ? { tls } : {}),
        targets: () => checkTargets(routes.entries().map(([, r]) => r), cfg.clusterKey),
      });
      checks.start();
      // Records of connections no proxy took, deleted once old (the proxy already ignores them).
      const sweeper = new ConnRecordSweeper({ sweep: () => dp.sweepConnections() });
      sweeper.start();
      // Successors ask here from now on (the socket path is this agent's now); one at a time, and again after
      // one that failed.
      let handover: HandoverListener | undefined;
      const awaitSuccessor = (path: string) => {
        handover = new HandoverListener(path, (channel) => {
          handover?.close();
          handover = undefined;
          void giveTo(channel, {
            proxy,
            admin,
            metrics: metricsServer,
            routes: () => routes.entries(),
            tagName: (tag) => proxyMetrics.tagName(tag),
            retire: async () => {
              checks.close();
              sweeper.close(); // the successor owns the datapath now
              await agent.close();
            },
            log,
          }).then((tookOver) => {
            if (!tookOver && !stopping) awaitSuccessor(path);
          });
        }, 100, (err) => log.warn({ err }, 'hand-over refused'));
      };
      let stopping = false;
      if (cfg.handover) awaitSuccessor(cfg.handover);
      process.stderr.write(`ecnet agent: ${cfg.clusterKey}, proxy ${proxy.address.host}:${proxy.address.port}, admin ${cfg.admin.ip}:${cfg.admin.port}, ${source.description}\n`);
      await runUntilSignal(async () => {
        stopping = true;
        handover?.close();
        identity?.close();
        workloads?.close();
        admin.close();
        proxyMetrics.close();
        metricsServer?.close();
        checks.close();
        sweeper.close();
        await agent.close();
        await proxy.close(5_000);
        await source.close();
        dp.close(); // handles only: the datapath stays attached and pinned for the next agent
      });
    });
}

const identityLine = (id: IdentityReport): string =>
  id.mode === 'mtls'
    ? `tunnels: mTLS as ${id.spiffeId}, certificate valid until ${id.notAfter} (-o json: the identity each target's gateway must present)`
    : id.mode === 'tls-files'
      ? 'tunnels: TLS with the --tls-* files (gateways checked by host name)'
      : 'tunnels: plain TCP (no identity: anyone who reaches a gateway can open one)';

/** `ecnet identity`: the certificate this node's tunnels present (from the agent), or the one in a directory. */
export function identityCommand(): Command {
  return new Command('identity')
    .description("the cluster certificate the node's tunnels present, its SPIFFE ID and expiry (from the agent, or --identity-dir)")
    .option('--admin <ip:port>', 'the agent admin endpoint', agentDefaults.admin)
    .option('--identity-dir <dir>', 'read a mounted identity directly instead (tls.crt, tls.key, ca.crt)')
    .option('--cluster-set <name>', 'with --identity-dir: the cluster set (default ecnet)')
    .option('-o, --output <format>', 'table or json', 'table')
    .action(async (flags: { admin: string; identityDir?: string; clusterSet?: string; output: string }) => {
      let report: IdentityReport;
      if (flags.identityDir) {
        const files = new IdentityFiles(flags.identityDir, clusterSetName(flags));
        files.close();
        report = identityReport(files, false);
      } else {
        try {
          report = (await (await fetch(`http://${flags.admin}/identity`)).json()) as IdentityReport;
        } catch (cause) {
          throw new ConfigError(`cannot reach the agent at ${flags.admin} (is \`ecnet agent\` running? or give --identity-dir)`, { cause });
        }
      }
      if (flags.output === 'json') return void process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      if (report.mode !== 'mtls') return void process.stdout.write(`${identityLine(report)}\n`);
      const left = Date.parse(report.notAfter) - Date.now();
      const rows = [
        ['cluster', report.cluster],
        ['SPIFFE ID', report.spiffeId],
        ['issuer', report.issuer.replace(/\n/g, ', ')],
        ['valid', `${report.notBefore} → ${report.notAfter} (${left > 0 ? `${(left / 3_600_000).toFixed(1)} h left` : 'EXPIRED'})`],
        ['serial', report.serial],
      ];
      process.stdout.write(`${table(['', ''], rows)}\n`);
    });
}

export function routesCommand(): Command {
  return new Command('routes')
    .description("each imported service address, its targets with their health, and the policy's decision now (kube-proxy: not redirected) (from the agent)")
    .option('--admin <ip:port>', 'the agent admin endpoint', agentDefaults.admin)
    .option('-o, --output <format>', 'table or json', 'table')
    .action(async (flags: { admin: string; output: string }) => {
      let reports: RouteReport[];
      try {
        const res = await fetch(`http://${flags.admin}/routes`);
        reports = (await res.json()) as RouteReport[];
      } catch (cause) {
        throw new ConfigError(`cannot reach the agent at ${flags.admin} (is \`ecnet agent\` running?)`, { cause });
      }
      if (flags.output === 'json') return void process.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
      const id = (await fetch(`http://${flags.admin}/identity`).then((r) => r.json()).catch(() => undefined)) as IdentityReport | undefined;
      // On stderr, as the other notes: stdout stays the table that scripts read.
      if (id) process.stderr.write(`${identityLine(id)}\n`);
      if (!reports.length) return void process.stderr.write('No routes: no imported service has an address yet.\n');
      const rows = reports.flatMap((r) =>
        (r.targets.length ? r.targets : [undefined]).map((t, i) => [
          i ? '' : `${r.namespace}/${r.service}`,
          i ? '' : r.address,
          i ? '' : r.policy,
          t ? t.clusterKey : '-',
          t ? t.gateway : '-',
          t?.weight ?? '',
          t ? (t.healthy ? 'healthy' : `unhealthy: ${t.health}`) : '',
          i ? '' : r.decision.join(' → ') || 'refuse',
        ]),
      );
      process.stdout.write(`${table(['SERVICE', 'ADDRESS', 'POLICY', 'TARGET', 'GATEWAY', 'WEIGHT', 'HEALTH', 'DECISION'], rows)}\n`);
    });
}
