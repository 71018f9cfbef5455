#!/usr/bin/env node
// The `ecnet` command. Each subcommand lives in its own module; errors end here as one line and an exit code.
import { Command, CommanderError } from 'commander';
import { showCauses } from '../config.js';
import { type DatapathFlags, datapathConfig } from '../config.js';
import { crdsCommand, validateCommand } from './api.js';
import { bpfCommand, unload } from './bpf.js';
import { controllerCommand } from './controller.js';
import { applyCommand, deleteCommand, getCommand } from './resources.js';
import { demoCommand } from './demo.js';
import { localCommand } from './local.js';
import { agentCommand, gatewayCommand, routesCommand } from './traffic.js';

const program = new Command('ecnet')
  .description('multi-cluster service data plane: eBPF redirect of imported services to a node proxy')
  .showHelpAfterError()
  .exitOverride();
program.addCommand(bpfCommand());
program.addCommand(crdsCommand());
program.addCommand(validateCommand());
program.addCommand(applyCommand());
program.addCommand(getCommand());
program.addCommand(deleteCommand());
program.addCommand(controllerCommand());
program.addCommand(agentCommand());
program.addCommand(gatewayCommand());
program.addCommand(routesCommand());
program.addCommand(localCommand());
program.addCommand(demoCommand());
program
  .command('uninstall')
  .description('detach the datapath and remove its pins (same as `ecnet bpf unload`)')
  .option('--bpffs <dir>', 'pin directory on bpffs')
  .option('-o, --output <format>', 'table or json', 'table')
  .action((flags: DatapathFlags) => unload(datapathConfig(flags)));

function fail(err: unknown): never {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  const e = err as Error & { code?: string; cause?: unknown };
  const code = e.code ? ` [${e.code}]` : '';
  process.stderr.write(`ecnet: ${e.message}${code}\n`);
  if (showCauses() && e.cause) process.stderr.write(`caused by: ${String((e.cause as Error).stack ?? e.cause)}\n`);
  process.exit(1);
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  fail(err);
}
