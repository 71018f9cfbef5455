// The proxy ↔ gateway wire protocol, shared by both ends: an HTTP/1.1 CONNECT to
// `<service>.<namespace>.svc.clusterset.local:<port>`, the source cluster in a header, and a status that says
// why when the answer is not 200 (after which the stream is the application's bytes). `curl -p -x` speaks it.
import { EcnetError } from '../errors.js';

export const CLUSTERSET_DOMAIN = 'svc.clusterset.local';
/** The source cluster's key (region/zone/group/name). */
export const SOURCE_CLUSTER_HEADER = 'ecnet-source-cluster';
/**
 * The calling workload, `namespace/serviceaccount` of the pod behind the connection, as its node proxy found it.
 * Trusted by a gateway only from a member cluster that proved itself (mutual TLS with cluster identities).
 */
export const SOURCE_WORKLOAD_HEADER = 'ecnet-source-workload';

const LABEL_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
/** `namespace/serviceaccount` when `v` is one (Kubernetes names), else undefined. */
export function parseWorkload(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const [ns, sa, ...rest] = v.split('/');
  return rest.length === 0 && ns !== undefined && sa !== undefined && LABEL_RE.test(ns) && NAME_RE.test(sa) ? `${ns}/${sa}` : undefined;
}
/** A request head larger than this is refused (431) and the connection closed. */
export const MAX_HEADER_BYTES = 8 * 1024;
/** A request head not complete within this time is refused (408) and the connection closed. */
export const HEADER_TIMEOUT_MS = 5_000;

/** What each status means to the proxy: whether another cluster may still be tried. */
export const STATUS = {
  /** Tunnel established: the gateway reached a local endpoint. */
  ok: 200,
  /** Malformed CONNECT target. */
  badRequest: 400,
  /** The service exists but is not exported (on this port, or to the calling cluster), or the caller is not a member. */
  notExported: 403,
  /** No such service in this cluster. */
  unknown: 404,
  /** Exported, but no ready endpoint answered. */
  noEndpoint: 503,
} as const;

/**
 * PEM contents. A gateway with `ca` requires client certificates signed by it (mTLS); a proxy with `ca` verifies the
 * gateway's. With `clusterSet` the certificates are cluster identities (src/identity/): each end checks the other's
 * SPIFFE ID instead of a host name, and a gateway serves plain HTTPS (probes, ingress) to callers without one while
 * it opens tunnels for member clusters only. The object may be updated in place when the certificate is renewed.
 */
export interface TunnelTls {
  cert?: string;
  key?: string;
  ca?: string;
  clusterSet?: string;
}

export interface ServiceTarget {
  service: string;
  namespace: string;
  port: number;
}

const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export const formatAuthority = (t: ServiceTarget): string => `${t.service}.${t.namespace}.${CLUSTERSET_DOMAIN}:${t.port}`;

/** The target of a CONNECT request, or why it is not one. */
export function parseAuthority(authority: string): ServiceTarget | { error: string } {
  const m = /^([^:]+):(\d{1,5})$/.exec(authority);
  if (!m) return { error: `CONNECT target ${JSON.stringify(authority.slice(0, 100))} is not host:port` };
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return { error: `port ${m[2]} is out of range` };
  const host = m[1]!.toLowerCase().replace(/\.$/, '');
  if (!host.endsWith(`.${CLUSTERSET_DOMAIN}`)) return { error: `host ${JSON.stringify(host.slice(0, 100))} is not <service>.<namespace>.${CLUSTERSET_DOMAIN}` };
  const parts = host.slice(0, -CLUSTERSET_DOMAIN.length - 1).split('.');
  if (parts.length !== 2 || !parts.every((p) => LABEL.test(p))) {
    return { error: `host ${JSON.stringify(host.slice(0, 100))} is not <service>.<namespace>.${CLUSTERSET_DOMAIN}` };
  }
  return { service: parts[0]!, namespace: parts[1]!, port };
}

export type TunnelErrorCode = 'ECNET_TUNNEL_REFUSED' | 'ECNET_TUNNEL_UNREACHABLE' | 'ECNET_TUNNEL_TIMEOUT' | 'ECNET_TUNNEL_PROTOCOL';

/** A tunnel that could not be opened. Nothing has reached an application then, so another cluster may be tried. */
export class TunnelError extends EcnetError<TunnelErrorCode> {
  /** The gateway's status, when it answered. */
  readonly status: number | undefined;
  constructor(code: TunnelErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(code, message, options);
    this.status = options?.status;
  }
}
