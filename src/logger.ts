// The one pino root logger; each component logs through `componentLogger(component)`, a child of it.
// Logs go to stderr so command output on stdout stays clean for scripts. The level is the default until the
// CLI sets the configured one (config.ts reads ECNET_LOG_LEVEL), before any component starts: this module
// depends on nothing of ecnet's, so that whatever logs does not load the rest.
import { pino, type Logger } from 'pino';
import { defaults } from './defaults.js';

export type { Logger };

export const rootLogger: Logger = pino({ level: defaults.logLevel, base: { pid: process.pid } }, pino.destination(2));

/** Sets the level of the root logger and of the component loggers made after it. */
export function setLogLevel(level: string): void {
  rootLogger.level = level;
}

export function componentLogger(component: string): Logger {
  return rootLogger.child({ component });
}
