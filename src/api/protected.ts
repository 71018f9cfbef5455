// Services no export or import may take over: the cluster's own machinery. Exporting `default/kubernetes` or
// `kube-system/kube-dns` would put every member's API server or DNS address behind the node proxies.
const SYSTEM_NAMESPACES = new Set(['kube-system', 'kube-public', 'kube-node-lease']);

/** Whether namespace/name is the API server's Service or anything in the system namespaces. */
export function isClusterMachinery(namespace: string | undefined, name: string): boolean {
  const ns = namespace ?? 'default';
  return SYSTEM_NAMESPACES.has(ns) || (ns === 'default' && name === 'kubernetes');
}
