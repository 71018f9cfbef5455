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
      // Watchers and timers do not hold the process open (they are unref'd so one-shot commands can exit):
      // this does, until a signal, also while the control-plane cluster is not readable yet.
      const keepAlive = setInterval(() => undefined, 1 << 30);
      const stopped = new Promise<string>((resolve) => {
        process.once('SIGINT', () => resolve('SIGINT'));
        process.once('SIGTERM', () => resolve('SIGTERM'));
      });
      try {
        const hub = await openSource(cfg.hub);
        const controller = new Controller({
          hub,
          connect: memberConnector({ hub, clustersDir: cfg.clustersDir, serviceCidr: cfg.serviceCidr }),
          memberTimeoutMs: cfg.memberTimeoutMs,
          resyncMs: cfg.resyncMs,
          logger: log,
        });
        process.stderr.write(`ecnet controller: watching ${hub.description}\n`);
        // A signal while the control-plane cluster is still being read stops as cleanly as later.
        const started = controller.start();
        started.catch(() => undefined); // rejects only when closed before the first list, i.e. on a signal
        const signal = await Promise.race([started.then(() => stopped), stopped]);
        log.info({ signal }, 'stopping');
        await controller.close();
        await hub.close();
      } finally {
        clearInterval(keepAlive);
      }
    });
}
