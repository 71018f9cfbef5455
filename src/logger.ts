// The one pino root logger; each component logs through `logger.child({ component })`.
// Logs go to stderr so command output on stdout stays clean for scripts.
import { pino, type Logger } from 'pino';
import { logLevel } from './config.js';

export type { Logger };

export const rootLogger: Logger = pino({ level: logLevel(), base: { pid: process.pid } }, pino.destination(2));

export function componentLogger(component: string): Logger {
  return rootLogger.child({ component });
}
