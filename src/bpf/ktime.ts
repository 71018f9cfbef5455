// The clock of bpf_ktime_get_ns(), read from Node: the kernel's CLOCK_MONOTONIC, as the initial time namespace
// sees it. process.hrtime.bigint() is libuv's uv_hrtime(), which reads CLOCK_MONOTONIC on Linux, but Node
// promises only "an arbitrary time in the past", and in a time namespace clock_gettime() is shifted where
// bpf_ktime_get_ns() is not. So the offset from hrtime is measured once, with clock_gettime() (~10 µs through
// ffi-rs, against 0.1 µs for hrtime): its error is the few µs the measurement takes.
import { readFileSync } from 'node:fs';
import { clockMonotonicNs } from '../native/libc.js';

let offset: bigint | undefined;

/** CLOCK_MONOTONIC of this process's time namespace minus the initial one's, in ns (0 outside one). */
export function timensMonotonicOffsetNs(text?: string): bigint {
  try {
    text ??= readFileSync('/proc/self/timens_offsets', 'utf8');
  } catch {
    return 0n; // a kernel without time namespaces (before 5.6)
  }
  // "monotonic <secs> <nanosecs>": secs may be negative, nanosecs is not.
  const m = /^monotonic\s+(-?\d+)\s+(\d+)\s*$/m.exec(text);
  return m ? BigInt(m[1]!) * 1_000_000_000n + BigInt(m[2]!) : 0n;
}

/** Now on the clock of bpf_ktime_get_ns(), in ns. */
export function ktimeNs(): bigint {
  if (offset === undefined) {
    const before = process.hrtime.bigint();
    const mono = clockMonotonicNs();
    const after = process.hrtime.bigint();
    offset = mono - timensMonotonicOffsetNs() - (before + after) / 2n;
  }
  return process.hrtime.bigint() + offset;
}
