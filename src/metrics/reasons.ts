// Why a connection attempt failed, as a small fixed set of label values (a label's values must stay few): from
// an errno name, a gateway's answer, or a tunnel error's code.
export type FailureReason = 'refused' | 'reset' | 'timeout' | 'unreachable' | 'forbidden' | 'not_found' | 'no_endpoint' | 'bad_request' | 'bad_answer' | 'protocol' | 'limited' | 'error';

export const FAILURE_REASONS: readonly FailureReason[] = ['refused', 'reset', 'timeout', 'unreachable', 'forbidden', 'not_found', 'no_endpoint', 'bad_request', 'bad_answer', 'protocol', 'limited', 'error'];

/** From an errno name (ECONNREFUSED, …). */
export function reasonOfErrno(name: string | undefined): FailureReason {
  switch (name) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ECONNABORTED':
      return 'reset';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
    case 'ENETDOWN':
    case 'EADDRNOTAVAIL':
      return 'unreachable';
    default:
      return 'error';
  }
}

/** From the status a gateway answered a CONNECT with. */
export function reasonOfStatus(status: number): FailureReason {
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not_found';
  if (status === 503) return 'no_endpoint';
  if (status === 400 || status === 408 || status === 431) return 'bad_request';
  if (status === 429) return 'limited';
  return 'bad_answer';
}

/** From an error thrown while connecting or opening a tunnel (a TunnelError, or a socket's error). */
export function reasonOfError(err: unknown): FailureReason {
  const e = err as { code?: string; status?: number; cause?: { code?: string } };
  switch (e?.code) {
    case 'ECNET_TUNNEL_REFUSED':
      return e.status !== undefined ? reasonOfStatus(e.status) : 'bad_answer';
    case 'ECNET_TUNNEL_TIMEOUT':
      return 'timeout';
    case 'ECNET_TUNNEL_PROTOCOL':
      return 'protocol';
    case 'ECNET_TUNNEL_UNREACHABLE':
      return reasonOfErrno(e.cause?.code) === 'error' ? 'unreachable' : reasonOfErrno(e.cause?.code);
    default:
      return reasonOfErrno(e?.code);
  }
}
