// What `ecnet local` reports when the cluster set cannot be made or run.
import { EcnetError } from '../errors.js';

export class LocalError extends EcnetError<'ECNET_LOCAL'> {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ECNET_LOCAL', message, options);
  }
}
