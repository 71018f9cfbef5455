// Errors of the datapath. Each has a fixed `code`; kernel failures also carry errno and the operation.
import { constants } from 'node:os';

/** errno → its symbolic name, e.g. 7 → "E2BIG". */
export const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value, name]),
);

/** A failed kernel/libbpf call, thrown by the native addon. */
export class BpfError extends Error {
  readonly code = 'ECNET_BPF' as const;
  /** Positive errno, e.g. 7 for E2BIG. */
  readonly errno: number;
  /** Symbolic errno, e.g. "E2BIG" ("EUNKNOWN" if not known to Node). */
  readonly errnoName: string;
  /** The operation that failed, e.g. "map_update_batch ecnet_services". */
  readonly op: string;

  constructor(message: string, details: { op: string; errno: number; cause?: unknown }) {
    const errno = Math.abs(details.errno);
    const errnoName = errnoNames.get(errno) ?? 'EUNKNOWN';
    super(`${details.op}: ${message} (${errnoName})`, { cause: details.cause });
    this.name = 'BpfError';
    this.errno = errno;
    this.errnoName = errnoName;
    this.op = details.op;
  }
}

/** Codes of DatapathError: what went wrong, in words a caller can switch on. */
export type DatapathErrorCode =
  | 'ECNET_NOT_ROOT'
  | 'ECNET_NO_BPFFS'
  | 'ECNET_NO_CGROUP2'
  | 'ECNET_KERNEL_TOO_OLD'
  | 'ECNET_NOT_LOADED'
  | 'ECNET_BPF_LOAD'
  | 'ECNET_BAD_ADDRESS'
  | 'ECNET_BAD_INPUT'
  | 'ECNET_NOT_FOUND'
  | 'ECNET_UNSUPPORTED'
  | 'ECNET_MAP_FULL'
  | 'ECNET_MAP_UPDATE'
  | 'ECNET_UNINSTALL'
  | 'ECNET_CLOSED';

/** A datapath failure with a fixed code and, where there is one, the kernel error as `cause`. */
export class DatapathError extends Error {
  readonly code: DatapathErrorCode;
  constructor(code: DatapathErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DatapathError';
    this.code = code;
  }
}
