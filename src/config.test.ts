import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, agentConfig, datapathConfig, defaults, gatewayConfig, loadConfig, nodeProxyAddresses } from './config.js';

describe('config', () => {
  it('applies flags over environment over defaults', () => {
    expect(datapathConfig({}, {}).bpffs).toBe(defaults.bpffs);
    expect(datapathConfig({}, { ECNET_BPFFS: '/sys/fs/bpf/x' }).bpffs).toBe('/sys/fs/bpf/x');
    expect(datapathConfig({ bpffs: '/sys/fs/bpf/y' }, { ECNET_BPFFS: '/sys/fs/bpf/x' }).bpffs).toBe('/sys/fs/bpf/y');
    expect(datapathConfig({ cgroup: '/sys/fs/cgroup/x' }, {}).cgroup).toBe('/sys/fs/cgroup/x');
  });

  it('parses load flags into datapath settings', () => {
    expect(loadConfig({ proxy: '127.0.0.1:15001' }, {})).toEqual({
      settings: { proxy: { ip: '127.0.0.1', port: 15001 }, proxyMark: defaults.proxyMark },
      maxServices: undefined,
    });
    expect(loadConfig({ proxy: '10.0.0.1:1', mark: '0x20', proxy6: 'FD00::1', maxServices: '128' }, {})).toEqual({
      settings: { proxy: { ip: '10.0.0.1', port: 1 }, proxyIp6: 'fd00::1', proxyMark: 0x20 },
      maxServices: 128,
    });
    expect(loadConfig({}, { ECNET_PROXY: '127.0.0.1:2' }).settings.proxy.port).toBe(2);
  });

  it('says what is wrong with a flag', () => {
    expect(() => loadConfig({}, {})).toThrow(/--proxy IP:PORT is required/);
    expect(() => loadConfig({ proxy: '127.0.0.1' }, {})).toThrow(ConfigError);
    expect(() => loadConfig({ proxy: '127.0.0.1:1', mark: 'abc' }, {})).toThrow(/--mark must be an integer/);
    expect(() => loadConfig({ proxy: '127.0.0.1:1', maxServices: '0' }, {})).toThrow(/--max-services/);
    expect(() => datapathConfig({ output: 'yaml' }, {})).toThrow(/-o must be table or json/);
  });

  it('runs tunnels without TLS only when told: a forgotten identity is an error, not an open gateway', () => {
    const agent = { cluster: '/tmp/cluster-2', cgroup: '/sys/fs/cgroup', proxy: '10.0.2.5' };
    expect(() => agentConfig(agent, {})).toThrow(/tunnels need TLS: give --identity-dir/);
    expect(() => gatewayConfig({ cluster: '/tmp/cluster-1' }, {})).toThrow(/--plain-tunnels/);
    expect(agentConfig({ ...agent, plainTunnels: true }, {}).identity).toBeUndefined();
    expect(gatewayConfig({ cluster: '/tmp/cluster-1' }, { ECNET_PLAIN_TUNNELS: '1' }).tls).toBeUndefined();
    expect(agentConfig({ ...agent, identityDir: '/var/run/ecnet/identity' }, {}).identity).toEqual({ dir: '/var/run/ecnet/identity', clusterSet: 'ecnet' });
  });

  describe('the agent\'s node proxy address', () => {
    const base = { cluster: '/tmp/cluster-2', cgroup: '/sys/fs/cgroup', plainTunnels: true };
    it('is required: the node\'s own address has no default', () => {
      expect(() => agentConfig(base, {})).toThrow(/--proxy NODE_IP\[:15001\] is required/);
      expect(agentConfig({ ...base, proxy: '10.0.2.5:15001' }, {}).load.settings.proxy).toEqual({ ip: '10.0.2.5', port: 15001 });
      expect(agentConfig(base, { ECNET_PROXY: '10.0.2.5:15001' }).load.settings.proxy.ip).toBe('10.0.2.5');
    });
    it('refuses loopback, saying why, unless host-network clients are all it is meant to serve', () => {
      for (const proxy of ['127.0.0.1:15001', '127.3.0.1:15001', '0.0.0.0:15001', '127.0.0.1']) {
        expect(() => agentConfig({ ...base, proxy }, {})).toThrow(/loopback \(or unspecified\) address: .* own network namespace/);
      }
      expect(() => agentConfig({ ...base, proxy: '10.0.2.5', proxy6: '::' }, {})).toThrow(ConfigError);
      expect(() => agentConfig({ ...base, proxy: '10.0.2.5:15001', proxy6: '::1' }, {})).toThrow(ConfigError);
      expect(agentConfig({ ...base, proxy: '127.0.0.1:15001', allowLoopbackProxy: true }, {}).load.settings.proxy.ip).toBe('127.0.0.1');
      expect(agentConfig({ ...base, proxy: '127.0.0.1:15001' }, { ECNET_ALLOW_LOOPBACK_PROXY: '1' }).load.settings.proxy.ip).toBe('127.0.0.1');
    });
    it('--proxy6 takes the IPv6 address of status.hostIPs, and none on a single-stack node', () => {
      const six = (p6: string, p = '10.0.2.5') => nodeProxyAddresses(p, p6).proxy6;
      expect(six('10.0.2.5,fd00::5')).toBe('fd00::5');
      expect(six('fd00::5')).toBe('fd00::5');
      expect(six('10.0.2.5')).toBeUndefined();
      expect(six('::ffff:10.0.2.5')).toBeUndefined(); // a mapped IPv4 address is the IPv4 one
      expect(() => six('nonsense')).toThrow(/not an IP address/);
      expect(agentConfig({ ...base, proxy: '10.0.2.5:15001', proxy6: '10.0.2.5,FD00::5' }, {}).load.settings.proxyIp6).toBe('fd00::5');
      expect(agentConfig({ ...base, proxy: '10.0.2.5:15001', proxy6: '10.0.2.5' }, {}).load.settings.proxyIp6).toBeUndefined();
    });
    it('a bare IP gets port 15001; on an IPv6-primary node hostIP is IPv6 and the IPv4 one comes from hostIPs', () => {
      expect(nodeProxyAddresses('10.0.2.5', undefined)).toEqual({ proxy: { ip: '10.0.2.5', port: 15001 }, proxy6: undefined });
      expect(nodeProxyAddresses('fd00::5', 'fd00::5,10.0.2.5')).toEqual({ proxy: { ip: '10.0.2.5', port: 15001 }, proxy6: 'fd00::5' });
      expect(nodeProxyAddresses('[fd00::5]:16001', '10.0.2.5')).toEqual({ proxy: { ip: '10.0.2.5', port: 16001 }, proxy6: 'fd00::5' });
      expect(() => nodeProxyAddresses('fd00::5', 'fd00::5')).toThrow(/IPv6-only nodes are not supported yet/);
    });
  });

  it('an agent with TLS must have the CA that verifies gateways (no silent "encrypted, not authenticated")', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ecnet-tls-cfg-'));
    try {
      for (const f of ['cert', 'key', 'ca']) writeFileSync(join(dir, f), f);
      const base = { cluster: '/tmp/cluster-2', cgroup: '/sys/fs/cgroup', proxy: '10.0.2.5', tlsCert: join(dir, 'cert'), tlsKey: join(dir, 'key') };
      expect(() => agentConfig(base, {})).toThrow(/--tls-ca is needed to verify the gateways/);
      expect(agentConfig({ ...base, tlsCa: join(dir, 'ca') }, {}).tls).toEqual({ cert: 'cert', key: 'key', ca: 'ca' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
