// A cluster set on one machine: names and addresses, decided once here. Pure.
//  - an underlay namespace with a bridge joins the nodes (10.0.2.0/24, as the seed's hosts: cluster-1 is
//    10.0.2.4, cluster-2 .5, cluster-3 .6); it is the only way between clusters;
//  - each member has a node namespace (its underlay address is the node's address, status.hostIP: the agent
//    and its node proxy listen there, as hostNetwork pods do) and pods behind it (10.41.0.0/24 for the first
//    member, 10.42.0.0/24 for the second …); the node's pod-side address (10.41.0.1) is every pod's next hop,
//    as a CNI bridge's address is;
//  - each member's pods live in cgroups under the member's cgroup, where its agent attaches.
export const PREFIX = 'ecnet-l';
export const UNDERLAY_NS = `${PREFIX}-underlay`;

export interface MemberTopology {
  name: string;
  index: number;
  /** The underlay's namespace (one per cluster set). */
  underlayNs: string;
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

/** `prefix` names every namespace of one cluster set: tests use their own, apart from `ecnet local`'s. */
export function member(name: string, index: number, prefix = PREFIX): MemberTopology {
  return {
    name,
    index,
    underlayNs: `${prefix}-underlay`,
    nodeNs: `${prefix}-${name}`,
    underlayIp: `10.0.2.${4 + index}`,
    podPrefix: `10.${41 + index}.0`,
    nodePodIp: `10.${41 + index}.0.1`,
    underlayVeth: `eu${index}`,
  };
}

/** A pod's namespace, veth (node side) and address; `slot` from 2 up. */
export function pod(m: MemberTopology, slot: number): { ns: string; veth: string; ip: string } {
  return { ns: `${m.nodeNs}-p${slot}`, veth: `ep${m.index}x${slot}`, ip: `${m.podPrefix}.${slot}` };
}

export const DEFAULT_MEMBERS = ['cluster-1', 'cluster-2', 'cluster-3'];
export const CONTROL_PLANE = 'control-plane';
