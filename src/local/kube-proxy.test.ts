import { describe, expect, it } from 'vitest';
import type { Service } from '../api/core.js';
import { endpointSlice, service } from '../../test/helpers/objects.js';
import { kubeProxyRuleset } from './kube-proxy.js';

const svc = (name: string, clusterIP: string, type?: Service['spec']['type']) =>
  service('ns', name, { clusterIP, ...(type ? { type } : {}), ports: [{ name: 'http', port: 80, targetPort: 'web' }, { name: 'dns', port: 53, protocol: 'UDP' }] });
const slice = (name: string, ips: [string, boolean][]) => endpointSlice('ns', name, ips);

describe("kube-proxy's rules for a node of ecnet local", () => {
  const rules = kubeProxyRuleset({
    services: [svc('a', '10.96.0.1'), svc('lb', '10.96.0.2', 'LoadBalancer'), svc('empty', '10.96.0.3'), svc('headless', 'None')],
    endpointSlices: [slice('a', [['10.41.0.2', true], ['10.41.0.3', false], ['10.41.0.4', true]]), slice('lb', [['10.41.0.5', true]])],
    nodeIp: '10.0.2.4',
    serviceCidr: '10.96.0.0/16',
  });

  it('replaces its own table in one go', () => {
    expect(rules.startsWith('table ip ecnet_kube_proxy {}\ndelete table ip ecnet_kube_proxy\n')).toBe(true);
  });

  it('DNATs a ClusterIP:port to one of its ready endpoints (target port from the slice), TCP only', () => {
    expect(rules).toContain('10.96.0.1 . 80 : jump svc0');
    expect(rules).toMatch(/numgen random mod 2 vmap \{ 0 : jump svc0_0, 1 : jump svc0_1 \}/);
    expect(rules).toContain('dnat to 10.41.0.2:8080');
    expect(rules).toContain('dnat to 10.41.0.4:8080');
    expect(rules).not.toContain('10.41.0.3');
    expect(rules).not.toContain(' . 53 ');
  });

  it("serves a LoadBalancer Service on the node's address too; a Service without endpoints gets no rule (reset)", () => {
    expect(rules).toContain('10.0.2.4 . 80 : jump svc1');
    expect(rules).toContain('10.96.0.2 . 80 : jump svc1');
    expect(rules).not.toContain('10.96.0.3');
    expect(rules).toContain('ip daddr 10.96.0.0/16 meta l4proto tcp reject with tcp reset');
  });

  it('writes only checked addresses and ports (a hostile slice or Service cannot inject rules)', () => {
    const bad = slice('a', [['10.41.0.9; flush ruleset', true], ['10.41.0.300', true], ['10.41.0.7', true]]);
    bad.ports = [{ name: 'http', port: '8080; flush ruleset' as unknown as number, protocol: 'TCP' }];
    const r = kubeProxyRuleset({ services: [svc('a', '10.96.0.1'), svc('b', '10.96.0.2; flush ruleset')], endpointSlices: [bad], nodeIp: '10.0.2.4', serviceCidr: '10.96.0.0/16' });
    expect(r).not.toContain('flush ruleset');
    expect(r).not.toContain('10.41.0.300');
    expect(r).not.toContain('dnat');
  });

  it('a Service cannot capture an address outside the service range, nor send to the node, loopback or link-local', () => {
    const r = kubeProxyRuleset({
      services: [svc('octal', '012.0.2.6'), svc('gw', '10.0.2.6'), svc('a', '10.96.0.1')],
      endpointSlices: [slice('octal', [['10.41.0.2', true]]), slice('gw', [['10.41.0.2', true]]), slice('a', [['127.0.0.1', true], ['10.0.2.4', true], ['169.254.1.1', true], ['0.0.0.1', true]])],
      nodeIp: '10.0.2.4',
      serviceCidr: '10.96.0.0/16',
    });
    expect(r).not.toContain('10.0.2.6');
    expect(r).not.toContain('012.');
    expect(r).not.toContain('dnat');
  });

  it('two Services on one address:port (or two LoadBalancers on one port): the first keeps it, the ruleset stays valid', () => {
    const r = kubeProxyRuleset({
      services: [svc('a', '10.96.0.1', 'LoadBalancer'), svc('b', '10.96.0.1'), svc('c', '10.96.0.3', 'LoadBalancer')],
      endpointSlices: [slice('a', [['10.41.0.2', true]]), slice('b', [['10.41.0.3', true]]), slice('c', [['10.41.0.4', true]])],
      nodeIp: '10.0.2.4',
      serviceCidr: '10.96.0.0/16',
    });
    // Once per dispatch chain (prerouting, output).
    expect(r.match(/10\.96\.0\.1 \. 80/g)).toHaveLength(2);
    expect(r.match(/10\.0\.2\.4 \. 80/g)).toHaveLength(2);
    expect(r).toContain('10.96.0.3 . 80 : jump svc1');
    expect(r).not.toContain('10.41.0.3');
  });
});
