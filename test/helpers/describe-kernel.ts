import { describe } from 'vitest';
import { kernelSkipReason } from './host.js';

/** describe() that skips, saying why, where the kernel tier cannot run. */
export function describeKernel(name: string, fn: () => void): void {
  if (kernelSkipReason) {
    describe.skip(`${name} [skipped: ${kernelSkipReason}]`, fn);
  } else {
    describe(name, fn);
  }
}
