import { describe, expect, it } from 'vitest';
import { DatapathError } from './errors.js';
import { MIN_KERNEL, checkKernel, ensureBpffs } from './host.js';

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
});
