// `ecnet controller`: the hub, until SIGINT/SIGTERM (then it drains: writes in flight finish).
import { Command } from 'commander';
import { type ControllerFlags, controllerConfig } from '../config.js';
import { memberConnector } from '../controlplane/connect.js';
import { Controller } from '../controlplane/controller.js';
import { componentLogger } from '../logger.js';
import { openSource } from '../sources/open.js';

export function controllerCommand(): Command {
  return new Command('controller')
    .description('turn ServiceExports in member clusters into ServiceImports (and derived Services) in all of them')
    .option('--clusters-dir <dir>', 'local mode: one directory per cluster; the hub is <dir>/control-plane')
    .option('--hub <dir>', 'local mode: the control-plane cluster directory (or its name under --clusters-dir)')
    .option('--kubeconfig <file>', 'the control-plane cluster is a Kubernetes API server')
    .option('--context <name>', 'kubeconfig context')
    .option('--in-cluster', 'use the service account of the pod it runs in')
    .option('--member-timeout <duration>', 'how long an unreachable member keeps its exports', '120s')
    .option('--resync <duration>', 'full pass period', '30s')
    .action(async (flags: ControllerFlags) => {
      const cfg = controllerConfig(flags);
      const log = componentLogger('controller');
      const hub = await openSource(cfg.hub);
      const controller = new Controller({
        hub,
        connect: memberConnector({ hub, clustersDir: cfg.clustersDir, serviceCidr: cfg.serviceCidr }),
        memberTimeoutMs: cfg.memberTimeoutMs,
        resyncMs: cfg.resyncMs,
        logger: log,
      });
      await controller.start();
      process.stderr.write(`ecnet controller: watching ${hub.description}\n`);
      // Watchers and timers do not hold the process open (they are unref'd so one-shot commands can exit):
      // this does, until a signal.
      const keepAlive = setInterval(() => undefined, 1 << 30);
      await new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          log.info({ signal }, 'stopping');
          clearInterval(keepAlive);
          resolve();
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
      });
      await controller.close();
      await hub.close();
    });
}
