// kube-proxy's job for a node of `ecnet local`: the nftables ruleset that sends a connection to a Service's
// ClusterIP:port (and a LoadBalancer Service's port on the node's own address, as k3s's ServiceLB exposes them)
// to one of its ready endpoints, and resets one to a ClusterIP without any. ecnet's datapath acts before it:
// a connect() it redirects never reaches these rules, and what it leaves alone is served here as in any cluster.
// Pure: resources in, `nft -f` text out.
import { isIPv4 } from 'node:net';
import type { Service } from '../api/core.js';
import type { EndpointSlice } from '../api/core.js';
import { localEndpoints, slicesByService } from '../endpoints/slices.js';
import { cidrContains, parseCidr } from '../sources/clusterip.js';

export const KUBE_PROXY_TABLE = 'ecnet_kube_proxy';

export interface KubeProxyInput {
  services: Service[];
  endpointSlices: EndpointSlice[];
  /** The node's address: LoadBalancer Services listen here too. */
  nodeIp: string;
  /** ClusterIPs come from here; what is not DNAT-ed to an endpoint is reset, as kube-proxy rejects it. */
  serviceCidr: string;
}

// Everything written into the ruleset is checked first: a Service or EndpointSlice is anyone's to write.
// Dotted quads only in Node's strict form (nft would read `012.0.2.6` as octal, i.e. 10.0.2.6).
const isV4 = (ip: unknown): ip is string => typeof ip === 'string' && isIPv4(ip);
const isPort = (p: unknown): p is number => Number.isInteger(p) && (p as number) > 0 && (p as number) < 65536;

/** The whole table, replaced atomically by one `nft -f` (it deletes the previous one first). */
export function kubeProxyRuleset(input: KubeProxyInput): string {
  const entries: string[] = [];
  const chains: string[] = [];
  const taken = new Set<string>();
  const index = slicesByService(input.endpointSlices);
  const range = parseCidr(input.serviceCidr);
  const node = new Set([input.nodeIp]);
  let n = 0;
  for (const s of [...input.services].sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`))) {
    const ip = s.spec.clusterIP;
    // Only ClusterIPs of the service range: a Service must not capture another address (a gateway's, a node's).
    if (!isV4(ip) || !cidrContains(range, ip)) continue;
    // Endpoints as dialable() allows them, and never the node itself.
    const eps = localEndpoints(s, index, node);
    for (const sp of s.spec.ports ?? []) {
      if ((sp.protocol ?? 'TCP') !== 'TCP' || !isPort(sp.port)) continue; // TCP only, like ecnet's datapath
      const ready = (eps.get(sp.port) ?? []).filter((e) => isV4(e.ip));
      if (!ready.length) continue; // no rule: the reset below answers
      // One address:port, one Service (the first by namespace/name): a duplicate would fail the whole ruleset.
      const keys = [`${ip} . ${sp.port}`, ...(s.spec.type === 'LoadBalancer' ? [`${input.nodeIp} . ${sp.port}`] : [])].filter((k) => !taken.has(k));
      if (!keys.length) continue;
      for (const k of keys) taken.add(k);
      const chain = `svc${n++}`;
      const targets = ready.map((_, i) => `${i} : jump ${chain}_${i}`).join(', ');
      chains.push(`  chain ${chain} {\n    numgen random mod ${ready.length} vmap { ${targets} }\n  }`);
      for (const [i, e] of ready.entries()) chains.push(`  chain ${chain}_${i} {\n    meta l4proto tcp dnat to ${e.ip}:${e.port}\n  }`);
      for (const k of keys) entries.push(`${k} : jump ${chain}`);
    }
  }
  const dispatch = entries.length ? `    ip daddr . tcp dport vmap { ${entries.join(', ')} }\n` : '';
  return [
    `table ip ${KUBE_PROXY_TABLE} {}`,
    `delete table ip ${KUBE_PROXY_TABLE}`,
    `table ip ${KUBE_PROXY_TABLE} {`,
    // Pods' connections arrive through prerouting, the node's own through output.
    `  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n${dispatch}  }`,
    `  chain output {\n    type nat hook output priority -100; policy accept;\n${dispatch}  }`,
    ...chains,
    // After DNAT (priority 0 > dstnat): what still goes to a ClusterIP has no endpoint, or no such port.
    `  chain reject_in {\n    type filter hook prerouting priority 0; policy accept;\n    ip daddr ${input.serviceCidr} meta l4proto tcp reject with tcp reset\n    ip daddr ${input.serviceCidr} reject\n  }`,
    `  chain reject_out {\n    type filter hook output priority 0; policy accept;\n    ip daddr ${input.serviceCidr} meta l4proto tcp reject with tcp reset\n    ip daddr ${input.serviceCidr} reject\n  }`,
    '}',
    '',
  ].join('\n');
}
