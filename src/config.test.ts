import { describe, expect, it } from 'vitest';
import { ConfigError, datapathConfig, defaults, loadConfig } from './config.js';

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
});
