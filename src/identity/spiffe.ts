// A cluster's identity on the wire: a SPIFFE ID in the URI SAN of the certificate it presents, on both ends of a
// tunnel (the agent's proxy dialling, the gateway answering). Checked as an identity, not a host name, so a
// gateway reached by IP is verified the same way. Pure.
import type { ClusterKey } from '../api/flomesh.js';

// A path segment: letters, digits, '-', '_' and '.', not starting or ending with a dot (so never '.' or '..').
const SEGMENT = /^[A-Za-z0-9_-]([A-Za-z0-9._-]{0,61}[A-Za-z0-9_-])?$/;

/** `spiffe://<cluster set>/cluster/<region>/<zone>/<group>/<name>` for a cluster key. */
export function clusterSpiffeId(clusterSet: string, key: ClusterKey): string {
  const parts = key.split('/');
  if (!SEGMENT.test(clusterSet) || parts.length !== 4 || !parts.every((p) => SEGMENT.test(p))) {
    throw new RangeError(`no SPIFFE ID for cluster set ${JSON.stringify(clusterSet)} and cluster ${JSON.stringify(key)}`);
  }
  return `spiffe://${clusterSet}/cluster/${parts.join('/')}`;
}

/** The cluster key a SPIFFE ID of `clusterSet` names, or undefined when it names none. */
export function clusterOfSpiffeId(clusterSet: string, id: string): ClusterKey | undefined {
  const prefix = `spiffe://${clusterSet}/cluster/`;
  if (!id.startsWith(prefix)) return undefined;
  const parts = id.slice(prefix.length).split('/');
  return parts.length === 4 && parts.every((p) => SEGMENT.test(p)) ? (parts.join('/') as ClusterKey) : undefined;
}

/**
 * The URI SANs of a peer certificate as Node reports them (`subjectaltname`: "URI:spiffe://…, DNS:…").
 * A certificate with more than one URI is ambiguous and yields none.
 */
export function uriSan(subjectaltname: string | undefined): string | undefined {
  const uris = (subjectaltname ?? '')
    .split(', ')
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
  return uris.length === 1 ? uris[0] : undefined;
}
