import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../test/helpers/clocks.js';
import { pino } from 'pino';
import { ConnRecordSweeper } from './sweeper.js';
import { timensMonotonicOffsetNs } from './ktime.js';

const quiet = pino({ level: 'silent' });

describe('ConnRecordSweeper', () => {
  it('sweeps every interval until closed, and counts what it deleted', () => {
    const clock = new ManualClock();
    const results = [{ swept: 3, kept: 1 }, { swept: 0, kept: 1 }, { swept: 2, kept: 0 }];
    let calls = 0;
    const s = new ConnRecordSweeper({ sweep: () => results[calls++]!, everyMs: 30_000, clock, logger: quiet });
    s.start();
    s.start(); // once only
    clock.step(29_999);
    expect(calls).toBe(0);
    clock.step(1);
    expect(calls).toBe(1);
    clock.step(60_000);
    expect(calls).toBe(3);
    expect(s.stats).toEqual({ sweeps: 3, swept: 5, lastError: undefined });
    s.close();
    clock.step(120_000);
    expect(calls).toBe(3);
  });

  it('logs a failed sweep and tries again at the next interval', () => {
    const clock = new ManualClock();
    let fail = true;
    const s = new ConnRecordSweeper({
      sweep: () => {
        if (fail) throw new Error('map gone');
        return { swept: 1, kept: 0 };
      },
      everyMs: 1_000,
      clock,
      logger: quiet,
    });
    s.start();
    clock.step(1_000);
    expect(s.stats).toEqual({ sweeps: 0, swept: 0, lastError: 'map gone' });
    fail = false;
    clock.step(1_000);
    expect(s.stats).toEqual({ sweeps: 1, swept: 1, lastError: undefined });
    s.close();
  });
});

describe('ktime', () => {
  it('reads the time namespace offset of CLOCK_MONOTONIC (bpf_ktime_get_ns is not shifted by it)', () => {
    expect(timensMonotonicOffsetNs('monotonic           0         0\nboottime            0         0\n')).toBe(0n);
    expect(timensMonotonicOffsetNs('monotonic        -5 300000000\nboottime 0 0\n')).toBe(-4_700_000_000n);
    expect(timensMonotonicOffsetNs('monotonic 86400 0\nboottime 0 0\n')).toBe(86_400_000_000_000n);
  });
});
