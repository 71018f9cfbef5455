// A failed kernel or libbpf call, as the addon and the libc calls report it: a fixed code, the errno and the
// operation.
import { constants } from 'node:os';
import { EcnetError } from '../errors.js';

/** errno → its symbolic name, e.g. 7 → "E2BIG". */
export const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value, name]),
);

/** A failed kernel/libbpf call, thrown by the native addon. */
export class BpfError extends EcnetError<'ECNET_BPF'> {
  /** Positive errno, e.g. 7 for E2BIG. */
  readonly errno: number;
  /** Symbolic errno, e.g. "E2BIG" ("EUNKNOWN" if not known to Node). */
  readonly errnoName: string;
  /** The operation that failed, e.g. "map_update_batch ecnet_services". */
  readonly op: string;

  constructor(message: string, details: { op: string; errno: number; cause?: unknown }) {
    const errno = Math.abs(details.errno);
    const errnoName = errnoNames.get(errno) ?? 'EUNKNOWN';
    super('ECNET_BPF', `${details.op}: ${message} (${errnoName})`, { cause: details.cause });
    this.errno = errno;
    this.errnoName = errnoName;
    this.op = details.op;
  }
}
