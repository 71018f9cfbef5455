// Errors of the datapath, each with a fixed `code`; a kernel failure underneath is the `cause` (a BpfError).
import { EcnetError } from '../errors.js';

/** Codes of DatapathError: what went wrong, in words a caller can switch on. */
export type DatapathErrorCode =
  | 'ECNET_NOT_ROOT'
  | 'ECNET_NO_BPFFS'
  | 'ECNET_NO_CGROUP2'
  | 'ECNET_KERNEL_TOO_OLD'
  | 'ECNET_NOT_LOADED'
  | 'ECNET_BPF_LOAD'
  | 'ECNET_BAD_INPUT'
  | 'ECNET_NOT_FOUND'
  | 'ECNET_UNSUPPORTED'
  | 'ECNET_MAP_FULL'
  | 'ECNET_MAP_UPDATE'
  | 'ECNET_UNINSTALL'
  | 'ECNET_CLOSED';

/** A datapath failure with a fixed code and, where there is one, the kernel error as `cause`. */
export class DatapathError extends EcnetError<DatapathErrorCode> {}
