#!/usr/bin/env node
// The `ecnet` command. Each subcommand lives in its own module; errors end here as one line and an exit code.
import { Command, CommanderError } from 'commander';
import { logLevel, showCauses } from '../config.js';
import { setLogLevel } from '../logger.js';
import { EcnetError } from '../errors.js';
import { type DatapathFlags, datapathConfig } from '../config.js';
import { crdsCommand, validateCommand } from './api.js';
import { bpfCommand, unload } from './bpf.js';
import { controllerCommand } from './controller.js';
import { applyCommand, deleteCommand, getCommand } from './resources.js';
import { demoCommand } from './demo.js';
import { localCommand } from './local.js';
import { topCommand } from './top.js';
import { agentCommand, gatewayCommand, identityCommand, routesCommand } from './traffic.js';

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
program.addCommand(topCommand());
program.addCommand(identityCommand());
program.addCommand(localCommand());
program.addCommand(demoCommand());
program
  .command('uninstall')
  .description('detach the datapath and remove its pins (same as `ecnet bpf unload`)')
  .option('--bpffs <dir>', 'pin directory on bpffs')
  .option('-o, --output <format>', 'table or json', 'table')
  .action((flags: DatapathFlags) => unload(datapathConfig(flags)));

/**
 * An EcnetError is a failure the command expected and explains: one line with its code (and its causes with
 * ECNET_DEBUG=1), as is a system call's refusal. Anything else is a bug in ecnet: printed with its stack.
 */
function fail(err: unknown): never {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  if (err instanceof EcnetError) {
    process.stderr.write(`ecnet: ${err.message} [${err.code}]\n`);
    for (let c = err.cause; showCauses() && c !== undefined; c = (c as { cause?: unknown }).cause) {
      process.stderr.write(`caused by: ${String((c as Error).stack ?? c)}\n`);
    }
  } else if (typeof (err as NodeJS.ErrnoException)?.code === 'string' && (err as NodeJS.ErrnoException).syscall) {
    // The system said no (a file that is not there, a port in use): its own words are the explanation.
    process.stderr.write(`ecnet: ${(err as Error).message} [${(err as NodeJS.ErrnoException).code}]\n`);
  } else {
    process.stderr.write(`ecnet: internal error: ${String((err as Error)?.stack ?? err)}\n`);
  }
  process.exit(1);
}

try {
  setLogLevel(logLevel());
  await program.parseAsync(process.argv);
} catch (err) {
  fail(err);
}
