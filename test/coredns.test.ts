// daemonset/coredns: the CoreDNS configuration that makes <service>.<namespace>.svc.clusterset.local resolve in
// a member cluster. No CoreDNS runs here: the Corefile is checked in its structure, and its rewrite's regular
// expressions (RE2 syntax, which these are also valid JavaScript in) on the names they must and must not change.
import { describe, expect, it } from 'vitest';
import { applyRule as apply, readCoreDns as read, rewriteRules as rules } from './helpers/coredns.js';

const corefile = read('coredns.yaml');
const custom = read('custom/coredns-custom.yaml');

describe('daemonset/coredns', () => {
  it("kube-system/coredns: kubeadm's default server block, with the rewrite in it", () => {
    expect(corefile.metadata).toEqual({ name: 'coredns', namespace: 'kube-system' });
    const text = corefile.data.Corefile!;
    expect(text.trimStart().startsWith('.:53 {')).toBe(true);
    for (const plugin of ['errors', 'health', 'ready', 'kubernetes cluster.local in-addr.arpa ip6.arpa', 'prometheus :9153', 'forward . /etc/resolv.conf', 'cache 30', 'loop', 'reload', 'loadbalance']) {
      expect(text, plugin).toContain(plugin);
    }
    // One server block: the rewrite is inside the one that answers cluster.local.
    expect(text.match(/^\S.*\{$/gm)).toEqual(['.:53 {']);
    expect(text.indexOf('rewrite stop')).toBeLessThan(text.indexOf('kubernetes cluster.local'));
  });

  it('asks cluster.local for a clusterset.local name, and answers with the name that was asked', () => {
    const r = rules(corefile.data.Corefile!);
    expect(apply(r.name, 'httpbin.httpbin.svc.clusterset.local.')).toBe('httpbin.httpbin.svc.cluster.local.');
    expect(apply(r.answer, 'httpbin.httpbin.svc.cluster.local.')).toBe('httpbin.httpbin.svc.clusterset.local.');
    // Anything else is left alone: cluster.local names, other domains, a look-alike that only starts so.
    for (const q of ['httpbin.httpbin.svc.cluster.local.', 'example.com.', 'a.b.svc.clusterset.local.attacker.example.', 'svc.clusterset.local.']) {
      expect(apply(r.name, q), q).toBe(q);
    }
  });

  it('the override for k3s, RKE2 and AKS carries the same rewrite', () => {
    expect(custom.metadata).toEqual({ name: 'coredns-custom', namespace: 'kube-system' });
    const block = (t: string) => t.slice(t.indexOf('rewrite stop')).split('\n').slice(0, 4).map((l) => l.trim());
    expect(block(custom.data['clusterset.override']!)).toEqual(block(corefile.data.Corefile!));
  });
});
