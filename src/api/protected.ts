// Services no export or import may take over: the cluster's own machinery. Exporting `default/kubernetes` or
// `kube-system/kube-dns` would put every member's API server or DNS address behind the node proxies.
/** Whether namespace/name is the API server's Service or anything in kube-system. */
export function isClusterMachinery(namespace: string | undefined, name: string): boolean {
  const ns = namespace ?? 'default';
  return ns === 'kube-system' || (ns === 'default' && name === 'kubernetes');
}
