import { describe, expect, it } from 'vitest';
import { type ContainerSpec, KubeletError, expand, hostMounts, onHost, probeUrl, resolveArgs, resolveEnv, runAs } from './container.js';

const pod = { name: 'ecnet-agent-x', namespace: 'ecnet-system', nodeName: 'n1', hostIP: '10.0.2.4', hostIPs: ['10.0.2.4', 'fd00::4'], podIP: '10.0.2.4', labels: { app: 'a' } };

describe('what the kubelet makes of a container', () => {
  it('expands $(VAR) when defined, leaves it when not, and $$ escapes', () => {
    const vars = new Map([['A', 'x']]);
    expect(expand('--p=$(A):1', vars)).toBe('--p=x:1');
    expect(expand('$(B)', vars)).toBe('$(B)');
    expect(expand('$$(A) $$', vars)).toBe('$(A) $');
  });

  it('resolves env in order: downward API fields, ConfigMap keys, values referring to earlier variables', () => {
    const c: ContainerSpec = {
      name: 'c',
      env: [
        { name: 'LATE', value: '$(IP)' }, // defined before IP: stays as written
        { name: 'IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
        { name: 'IPS', valueFrom: { fieldRef: { fieldPath: 'status.hostIPs' } } },
        { name: 'APP', valueFrom: { fieldRef: { fieldPath: "metadata.labels['app']" } } },
        { name: 'KEY', valueFrom: { configMapKeyRef: { name: 'cm', key: 'k' } } },
        { name: 'OPT', valueFrom: { configMapKeyRef: { name: 'cm', key: 'none', optional: true } } },
        { name: 'URL', value: 'http://$(IP):1' },
      ],
      args: ['--x=$(URL)', '$(KEY)'],
    };
    const env = resolveEnv(c, pod, { configMaps: { cm: { k: 'v' } } });
    expect(Object.fromEntries(env)).toEqual({ LATE: '$(IP)', IP: '10.0.2.4', IPS: '10.0.2.4,fd00::4', APP: 'a', KEY: 'v', URL: 'http://10.0.2.4:1' });
    expect(resolveArgs(c, env)).toEqual(['--x=http://10.0.2.4:1', 'v']);
  });

  it('refuses to start on a missing ConfigMap key or an unknown field, as the kubelet does', () => {
    expect(() => resolveEnv({ name: 'c', env: [{ name: 'K', valueFrom: { configMapKeyRef: { name: 'cm', key: 'k' } } }] }, pod)).toThrow(KubeletError);
    expect(() => resolveEnv({ name: 'c', env: [{ name: 'K', valueFrom: { fieldRef: { fieldPath: 'spec.nope' } } }] }, pod)).toThrow(/unsupported fieldRef/);
  });

  it('maps container paths to host paths through hostPath mounts, the deepest mount first', () => {
    const c: ContainerSpec = { name: 'c', volumeMounts: [{ name: 'cg', mountPath: '/host/sys/fs/cgroup' }, { name: 'bpf', mountPath: '/sys/fs/bpf' }, { name: 'tmp', mountPath: '/tmp' }] };
    const m = hostMounts({ containers: [c], volumes: [{ name: 'cg', hostPath: { path: '/sys/fs/cgroup' } }, { name: 'bpf', hostPath: { path: '/sys/fs/bpf' } }, { name: 'tmp' }] }, c);
    expect(onHost('/host/sys/fs/cgroup', m)).toBe('/sys/fs/cgroup');
    expect(onHost('/sys/fs/bpf/ecnet', m)).toBe('/sys/fs/bpf/ecnet');
    expect(onHost('/sys/fs/bpfx', m)).toBeUndefined();
    expect(onHost('/tmp/x', m)).toBeUndefined(); // not a hostPath volume
  });

  it('probe URLs: the probe\'s host or the pod\'s IP, named ports resolved', () => {
    const c: ContainerSpec = { name: 'c', ports: [{ name: 'tunnel', containerPort: 8080 }] };
    expect(probeUrl({ httpGet: { port: 'tunnel', path: '/healthz' } }, c, { ...pod, podIP: '10.41.0.2' })).toBe('http://10.41.0.2:8080/healthz');
    expect(probeUrl({ httpGet: { host: '127.0.0.1', port: 15000, path: '/healthz' } }, c, pod)).toBe('http://127.0.0.1:15000/healthz');
    expect(() => probeUrl({ httpGet: { port: 'admin' } }, c, pod)).toThrow(/names no port/);
  });

  it('runs as the container\'s user over the pod\'s, root when neither says', () => {
    const c: ContainerSpec = { name: 'c' };
    expect(runAs({ containers: [c] }, c)).toEqual({ uid: 0, gid: 0 });
    expect(runAs({ containers: [c], securityContext: { runAsUser: 65532, runAsGroup: 65532 } }, c)).toEqual({ uid: 65532, gid: 65532 });
    expect(runAs({ containers: [c], securityContext: { runAsUser: 65532 } }, { ...c, securityContext: { runAsUser: 0 } })).toEqual({ uid: 0, gid: 0 });
  });
});
