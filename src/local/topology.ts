// A cluster set on one machine: names and addresses, decided once here. Pure.
//  - an underlay namespace with a bridge joins the nodes (10.0.2.0/24, as the seed's hosts: cluster-1 is
//    10.0.2.4, cluster-2 .5, cluster-3 .6); it is the only way between clusters;
//  - each member has a node namespace (agent, proxy, gateway, as hostNetwork pods) and pods behind it
//    (10.41.0.0/16 for the first member, 10.42.0.0/16 for the second …); the node's pod-side address
//    (10.41.0.1) is every pod's gateway and the node proxy's address;
//  - each member's pods live in cgroups under the member's cgroup, where its agent attaches.
export const PREFIX = 'ecnet-l';
export const UNDERLAY_NS = `${PREFIX}-underlay`;
export const GATEWAY_PORT = 80;
export const PROXY_PORT = 15001;
export const ADMIN_PORT = 15000;

export interface MemberTopology {
  name: string;
  index: number;
  /** The node's network namespace. */
  nodeNs: string;
  /** The node's underlay address (the Cluster resource's gatewayHost). */
  underlayIp: string;
  /** Pods get addresses from here; `.1` is the node. */
  podPrefix: string;
  nodePodIp: string;
  /** veth names: node side in the underlay namespace, and inside the node namespace. */
  underlayVeth: string;
}

export function member(name: string, index: number): MemberTopology {
  return {
    name,
    index,
    nodeNs: `${PREFIX}-${name}`,
    underlayIp: `10.0.2.${4 + index}`,
    podPrefix: `10.${41 + index}.0`,
    nodePodIp: `10.${41 + index}.0.1`,
    underlayVeth: `eu${index}`,
  };
}

/** A pod's namespace, veth (node side) and address; `slot` from 2 up. */
export function pod(m: MemberTopology, slot: number): { ns: string; veth: string; ip: string } {
  return { ns: `${PREFIX}-${m.name}-p${slot}`, veth: `ep${m.index}x${slot}`, ip: `${m.podPrefix}.${slot}` };
}

export const DEFAULT_MEMBERS = ['cluster-1', 'cluster-2', 'cluster-3'];
export const HUB = 'control-plane';
