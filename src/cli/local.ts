// `ecnet local …`: a cluster set on one machine (network namespaces for nodes and pods, an underlay between
// nodes), for the demo, development and end-to-end tests.
import { join } from 'node:path';
import { Command } from 'commander';
import { ConfigError, labelsFlag, localStateDir } from '../config.js';
import { ClusterSet } from '../local/cluster-set.js';
import { supervise } from '../local/supervisor.js';
import { DEFAULT_MEMBERS } from '../local/topology.js';
import { applyCommand, deleteCommand, getCommand } from './resources.js';

const state = (cmd: Command) => localStateDir(cmd.optsWithGlobals() as { state?: string });

export function localCommand(): Command {
  const local = new Command('local').description('a cluster set on one machine: nodes and pods as network namespaces').option('--state <dir>', 'state directory (default /var/lib/ecnet/local)');
  local
    .command('up')
    .description('create the cluster set (control-plane + members) and start the controller, and per member an agent and a gateway')
    .option('--clusters <names>', 'member clusters', DEFAULT_MEMBERS.join(','))
    .option('--plain-tunnels', 'agents and gateways without mTLS, as docs/identity.md says to install them (benchmarks compare the two)')
    .option('--fast-path <mode>', 'native (the default: the addon sets connections up) or node (Node accepts every connection; benchmarks compare the two)', 'native')
    .action(async (flags: { clusters: string; plainTunnels?: boolean; fastPath: string }, cmd: Command) => {
      if (flags.fastPath !== 'native' && flags.fastPath !== 'node') throw new ConfigError(`--fast-path must be native or node, got ${JSON.stringify(flags.fastPath)}`);
      const set = new ClusterSet(state(cmd));
      const members = flags.clusters.split(',').filter(Boolean);
      try {
        await set.up(members, (line) => process.stdout.write(`  ${line}\n`), { plainTunnels: Boolean(flags.plainTunnels), nodeFastPath: flags.fastPath === 'node' });
      } catch (err) {
        process.stderr.write(`ecnet local up failed, cleaning up: ${(err as Error).message}\n`);
        await set.down();
        throw err;
      }
      process.stdout.write(`cluster set up: control-plane, ${members.join(', ')} (clusters in ${set.clustersDir})\n`);
    });
  local
    .command('down')
    .description('remove everything up and run made (also after a crash)')
    .action(async (_flags: unknown, cmd: Command) => {
      const gone = await new ClusterSet(state(cmd)).down();
      process.stdout.write(gone.length ? `removed: ${gone.join(', ')}\n` : 'nothing to remove\n');
    });
  local
    .command('run')
    .description('start CMD as a pod (HOSTNAME is the pod name)')
    .requiredOption('--cluster <name>', 'member cluster')
    .option('--namespace <ns>', 'namespace', 'default')
    .option('--labels <k=v,…>', 'pod labels (Services select pods by them)')
    .option('--name <pod>', 'pod name (default: a label value and a random suffix)')
    .option('--service-account <name>', "the pod's ServiceAccount (asserted with its tunnels; exports may allow only one)", 'default')
    .argument('<cmd...>', 'command and arguments (after --)')
    .action(async (cmdArgs: string[], flags: { cluster: string; namespace: string; labels?: string; name?: string; serviceAccount: string }, cmd: Command) => {
      const name = await new ClusterSet(state(cmd)).run(flags.cluster, flags.namespace, labelsFlag(flags.labels), flags.name, cmdArgs, flags.serviceAccount);
      process.stdout.write(`${name}\n`);
    });
  local
    .command('exec')
    .description('run CMD in a pod (like kubectl exec), or in a throwaway pod of the cluster')
    .requiredOption('--cluster <name>', 'member cluster')
    .option('--pod <name>', 'pod')
    .argument('<cmd...>', 'command and arguments (after --)')
    .action(async (cmdArgs: string[], flags: { cluster: string; pod?: string }, cmd: Command) => {
      process.exitCode = await new ClusterSet(state(cmd)).exec(flags.cluster, flags.pod, cmdArgs);
    });
  for (const action of ['stop', 'start'] as const) {
    local
      .command(action)
      .description(action === 'stop' ? "kill a member's gateway or agent (as a node failure would)" : "start a member's gateway or agent again")
      .requiredOption('--cluster <name>', 'member cluster')
      .requiredOption('--component <gateway|agent>', 'which process')
      .action(async (flags: { cluster: string; component: string }, cmd: Command) => {
        if (flags.component !== 'gateway' && flags.component !== 'agent') throw new ConfigError('--component must be gateway or agent');
        const pid = await new ClusterSet(state(cmd)).component(flags.cluster, flags.component, action);
        process.stdout.write(`${flags.cluster} ${flags.component} ${action === 'stop' ? 'stopped' : `running (pid ${pid})`}\n`);
      });
  }
  local
    .command('restart')
    .description("replace a member's agent or gateway as an upgrade does: a new agent takes the node over (listening sockets and connections), then the old one stops (--crash kills it first); a new gateway pod starts, the old one leaves the endpoints and drains")
    .requiredOption('--cluster <name>', 'member cluster')
    .requiredOption('--component <agent|gateway>', 'which process')
    .option('--crash', 'agent: SIGKILL the running one first, as a crash or an OOM kill would')
    .action(async (flags: { cluster: string; component: string; crash?: boolean }, cmd: Command) => {
      const set = new ClusterSet(state(cmd));
      if (flags.component === 'gateway') {
        const r = await set.restartGateway(flags.cluster);
        return void process.stdout.write(`${flags.cluster} gateway: pid ${r.old ?? '-'} → ${r.pid}, new pod ready in ${r.readyMs} ms; the old one drains its open tunnels\n`);
      }
      if (flags.component !== 'agent') throw new ConfigError('--component must be agent or gateway');
      const r = await set.restartAgent(flags.cluster, { crash: Boolean(flags.crash) });
      process.stdout.write(`${flags.cluster} agent: pid ${r.old ?? '-'} → ${r.pid}, ready in ${r.readyMs} ms${flags.crash ? ' (after a crash)' : ''}\n`);
    });
  local
    .command('supervise', { hidden: true })
    .description('(started by up) the controller, endpoints and names of the cluster set')
    .action(async (_flags: unknown, cmd: Command) => {
      const set = new ClusterSet(state(cmd));
      const s = set.state();
      if (!s) throw new ConfigError('no cluster set is up');
      const stop = await supervise(set.clustersDir, s.members);
      process.stderr.write('ecnet local supervisor: controller watching\n');
      const keepAlive = setInterval(() => undefined, 1 << 30);
      await new Promise<void>((r) => {
        process.once('SIGTERM', () => r());
        process.once('SIGINT', () => r());
      });
      clearInterval(keepAlive);
      await stop();
    });
  // `apply`, `get` and `delete` as everywhere, with --cluster NAME meaning a member of this set.
  const dir = () => join(localStateDir({}), 'clusters');
  local.addCommand(applyCommand(dir()));
  local.addCommand(getCommand(dir()));
  local.addCommand(deleteCommand(dir()));
  return local;
}
