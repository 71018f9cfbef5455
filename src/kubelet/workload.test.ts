import { describe, expect, it } from 'vitest';
import { KubeletError } from './container.js';
import { generatedConfigMaps, hostPathsUnder, planProcess, readWorkload } from './workload.js';

describe("ecnet's workloads as a node of ecnet local starts them", () => {
  const hostPath = hostPathsUnder({ '/sys/fs/cgroup': '/cg/node-1', '/sys/fs/bpf': '/sys/fs/bpf/local/node-1', '/var/run/ecnet-agent': '/run/node-1/ecnet-agent' });
  const pod = { name: 'p', namespace: 'ecnet-system', nodeName: 'node-1', hostIP: '10.0.2.4', podIP: '10.0.2.4' };

  it('the agent: the manifest\'s args with host paths and the source swapped, env resolved from the downward API and the ConfigMap', () => {
    const p = planProcess(readWorkload('agent'), {
      pod,
      configMaps: { ...generatedConfigMaps(), 'ecnet-cluster': { clusterKey: 'default/default/default/cluster-1' } },
      hostPath,
      source: ['--cluster', '/clusters/cluster-1'],
    });
    expect(p.hostNetwork).toBe(true);
    expect(p.argv).toEqual(expect.arrayContaining(['agent', '--cluster', '/clusters/cluster-1', '--bpffs=/sys/fs/bpf/local/node-1/ecnet', '--cgroup=/cg/node-1', '--proxy=10.0.2.4', '--handover=/run/node-1/ecnet-agent/handover.sock']));
    expect(p.argv).not.toContain('--in-cluster');
    expect(p.env).toMatchObject({ NODE_IP: '10.0.2.4', ECNET_CLUSTER_KEY: 'default/default/default/cluster-1' });
    expect(p.probes.map((x) => x.url)).toEqual(['http://127.0.0.1:15000/healthz', 'http://127.0.0.1:15000/healthz', 'http://127.0.0.1:15000/healthz']);
  });

  it('the gateway: a pod (not hostNetwork), probed on its own address', () => {
    const p = planProcess(readWorkload('gateway'), { pod: { ...pod, podIP: '10.41.0.2' }, hostPath, source: ['--cluster', '/c'] });
    expect(p.hostNetwork).toBe(false);
    expect(p.argv[0]).toBe('gateway');
    expect(p.probes.map((x) => x.url)).toEqual(['https://10.41.0.2:8080/readyz', 'https://10.41.0.2:8080/healthz']);
  });

  it('host paths outside the node\'s directories, or climbing out of them, are refused', () => {
    expect(hostPath('/sys/fs/cgroup/kubepods')).toBe('/cg/node-1/kubepods');
    expect(() => hostPath('/etc')).toThrow(KubeletError);
    expect(() => hostPath('/sys/fs/cgroup/../../etc')).toThrow(KubeletError);
    expect(() => hostPath('/sys/fs/cgroupx')).toThrow(KubeletError);
  });
});
