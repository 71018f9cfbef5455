import { describe, expect, it } from 'vitest';
import { DatapathError } from './errors.js';
import { tmpdir } from 'node:os';
import { MIN_KERNEL, checkCgroup, checkKernel, ensureBpffs } from './host.js';

const code = (fn: () => void): string | undefined => {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DatapathError);
    return (e as DatapathError).code;
  }
  return undefined;
};

describe('host checks', () => {
  it('refuses kernels older than the programs need, and says which', () => {
    expect(code(() => checkKernel('5.4.0-150-generic'))).toBe('ECNET_KERNEL_TOO_OLD');
    expect(code(() => checkKernel('4.19.0'))).toBe('ECNET_KERNEL_TOO_OLD');
    expect(() => checkKernel('5.4.0')).toThrow(/needs Linux 5\.10 or newer/);
    expect(code(() => checkKernel(`${MIN_KERNEL[0]}.${MIN_KERNEL[1]}.0`))).toBeUndefined();
    expect(code(() => checkKernel('6.18.44-fc-v769'))).toBeUndefined();
  });

  it('refuses a pin directory that is not on bpffs rather than pinning into tmpfs', () => {
    expect(code(() => ensureBpffs('/tmp/ecnet-pins'))).toBe('ECNET_NO_BPFFS');
    expect(() => ensureBpffs('/tmp/ecnet-pins')).toThrow(/mount -t bpf bpf/);
  });

  it('accepts a cgroup under any cgroup v2 mount: in the agent\'s container the host root is at /host/sys/fs/cgroup, not the shortest', () => {
    const dir = tmpdir(); // stands for a mounted directory: only the path check is under test
    expect(code(() => checkCgroup(dir, ['/sys/fs/cgroup', dir]))).toBeUndefined();
    expect(code(() => checkCgroup(`${dir}-other`, ['/sys/fs/cgroup', dir]))).toBe('ECNET_NO_CGROUP2');
    expect(code(() => checkCgroup(dir, []))).toBe('ECNET_NO_CGROUP2');
  });
});
