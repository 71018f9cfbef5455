// The namespaces and links of the cluster set (iproute2). Every name starts with PREFIX so `down` can sweep
// whatever an interrupted `up` or `run` left.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type MemberTopology, PREFIX, UNDERLAY_NS, pod } from './topology.js';

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const NETNS_DIR = '/run/netns';
/** `ip netns exec` bind-mounts this over /etc/hosts inside the namespace: a pod's names. */
export const hostsFile = (ns: string) => join('/etc/netns', ns, 'hosts');

export const netnsExists = (ns: string): boolean => existsSync(join(NETNS_DIR, ns));

function addNetns(ns: string): void {
  if (netnsExists(ns)) ip('netns', 'del', ns);
  ip('netns', 'add', ns);
  ip('-n', ns, 'link', 'set', 'lo', 'up');
}

export function createUnderlay(ns = UNDERLAY_NS): void {
  if (netnsExists(ns)) return;
  addNetns(ns);
  ip('-n', ns, 'link', 'add', 'br0', 'type', 'bridge');
  ip('-n', ns, 'link', 'set', 'br0', 'up');
}

/** A node: its namespace on the underlay, its pod-side address on lo, forwarding on. */
export function createNode(m: MemberTopology): void {
  addNetns(m.nodeNs);
  ip('-n', m.underlayNs, 'link', 'add', m.underlayVeth, 'type', 'veth', 'peer', 'name', 'ul', 'netns', m.nodeNs);
  ip('-n', m.underlayNs, 'link', 'set', m.underlayVeth, 'master', 'br0', 'up');
  ip('-n', m.nodeNs, 'addr', 'add', `${m.underlayIp}/24`, 'dev', 'ul');
  ip('-n', m.nodeNs, 'link', 'set', 'ul', 'up');
  ip('-n', m.nodeNs, 'addr', 'add', `${m.nodePodIp}/32`, 'dev', 'lo');
  execFileSync('ip', ['netns', 'exec', m.nodeNs, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  // The node tuning docs/nodes.md recommends: the node proxy is the first to close its tunnels, so each leaves a
  // TIME_WAIT behind; without reuse they cap new connections to one gateway near 470/s.
  execFileSync('ip', ['netns', 'exec', m.nodeNs, 'sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1']);
  // What a CNI does for pods' connections that leave the node (to an API server, another cluster's gateway):
  // the node's address as their source, since nothing beyond the node routes the pod range back.
  const cni = `table ip ecnet_cni {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "ul" ip saddr ${m.podPrefix}.0/24 masquerade
  }
}
`;
  execFileSync('ip', ['netns', 'exec', m.nodeNs, 'nft', '-f', '-'], { input: cni });
}

/** A pod's namespace behind the node, with its hosts file; returns its address. */
export function createPod(m: MemberTopology, slot: number, hostname: string): { ns: string; ip: string } {
  const p = pod(m, slot);
  // Never replaced: another `ecnet local` process may have just taken this slot (two execs at once). Then
  // `ip netns add` fails with "File exists" and the caller tries the next slot; deleting it first, as a node's
  // namespace is, would pull the namespace from under that other pod.
  ip('netns', 'add', p.ns);
  ip('-n', p.ns, 'link', 'set', 'lo', 'up');
  ip('-n', m.nodeNs, 'link', 'add', p.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p.ns);
  ip('-n', m.nodeNs, 'link', 'set', p.veth, 'up');
  ip('-n', m.nodeNs, 'route', 'add', `${p.ip}/32`, 'dev', p.veth);
  ip('-n', p.ns, 'addr', 'add', `${p.ip}/32`, 'dev', 'eth0');
  ip('-n', p.ns, 'link', 'set', 'eth0', 'up');
  ip('-n', p.ns, 'route', 'add', `${m.nodePodIp}/32`, 'dev', 'eth0');
  ip('-n', p.ns, 'route', 'add', 'default', 'via', m.nodePodIp, 'dev', 'eth0');
  mkdirSync(join('/etc/netns', p.ns), { recursive: true });
  writeFileSync(hostsFile(p.ns), `127.0.0.1 localhost\n${p.ip} ${hostname}\n`);
  return { ns: p.ns, ip: p.ip };
}

export function deleteNetns(ns: string): void {
  try {
    ip('netns', 'del', ns);
  } catch {
    // gone already
  }
  rmSync(join('/etc/netns', ns), { recursive: true, force: true });
}

/** Every namespace of the cluster set, including what an interrupted run left. */
export function sweepNetns(): string[] {
  const gone: string[] = [];
  const names = existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR).filter((n) => n.startsWith(`${PREFIX}-`)) : [];
  // Pods first, then nodes, then the underlay (veths die with either end).
  for (const n of names.sort((a, b) => b.length - a.length)) {
    deleteNetns(n);
    gone.push(n);
  }
  return gone;
}
