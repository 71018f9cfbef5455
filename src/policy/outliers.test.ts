import { describe, expect, it } from 'vitest';
import { OutlierDetector } from './outliers.js';

const opts = { consecutiveFailures: 3, baseEjectMs: 1_000, maxEjectMs: 4_000, maxEjectionPercent: 50, decayMs: 10_000 };
const fail = (d: OutlierDetector, m: string, now: number, n = 3, size = 4, group = 'g') => {
  let ejected = false;
  for (let i = 0; i < n; i++) ejected = d.failure(group, m, now, size) || ejected;
  return ejected;
};

describe('outlier detection', () => {
  it('ejects after consecutive failures only: a success ends the streak', () => {
    const d = new OutlierDetector(opts);
    d.failure('g', 'a', 0, 4);
    d.failure('g', 'a', 0, 4);
    d.success('g', 'a', 0);
    expect(d.failure('g', 'a', 0, 4)).toBe(false);
    expect(d.isEjected('g', 'a', 0)).toBe(false);
    expect(fail(d, 'a', 0, 2)).toBe(true);
    expect(d.isEjected('g', 'a', 999)).toBe(true);
    expect(d.isEjected('g', 'a', 1_000)).toBe(false);
  });

  it('failures further apart than the streak window do not add up (the native fronts report no successes per member)', () => {
    const d = new OutlierDetector({ ...opts, streakWindowMs: 30_000 });
    expect(d.failure('g', 'a', 0, 4)).toBe(false);
    expect(d.failure('g', 'a', 20_000, 4)).toBe(false);
    // 40 s after the last one: a new streak of one, not the third of the old one.
    expect(d.failure('g', 'a', 60_000, 4)).toBe(false);
    expect(d.view('g', 'a', 60_000).failures).toBe(1);
    expect(d.failure('g', 'a', 61_000, 4)).toBe(false);
    expect(d.failure('g', 'a', 62_000, 4)).toBe(true);
  });

  it('each ejection doubles the time, up to the cap; failures while ejected do not extend it', () => {
    const d = new OutlierDetector(opts);
    const times: number[] = [];
    let t = 0;
    for (let i = 0; i < 5; i++) {
      fail(d, 'a', t);
      const out = d.view('g', 'a', t).ejectedForMs;
      times.push(out);
      fail(d, 'a', t + 1, 3); // tried anyway while out: no change
      expect(d.view('g', 'a', t + 1).ejectedForMs).toBe(out - 1);
      t += out; // back in exactly when it ends, before any decay
    }
    expect(times).toEqual([1_000, 2_000, 4_000, 4_000, 4_000]);
  });

  it('the multiplier decays by one per decayMs spent in', () => {
    const d = new OutlierDetector(opts);
    fail(d, 'a', 0); // 1 s, multiplier 1
    fail(d, 'a', 1_000); // 2 s, multiplier 2
    fail(d, 'a', 3_000); // 4 s, multiplier 3; ends at 7 s
    expect(d.view('g', 'a', 7_000).multiplier).toBe(3);
    expect(d.view('g', 'a', 17_000).multiplier).toBe(2);
    expect(d.view('g', 'a', 37_000).multiplier).toBe(0);
    fail(d, 'a', 27_000); // 20 s in: multiplier 3 - 2 = 1 → 2 s
    expect(d.view('g', 'a', 27_000).ejectedForMs).toBe(2_000);
  });

  it('a success ends an ejection early; the multiplier decays from then', () => {
    const d = new OutlierDetector(opts);
    fail(d, 'a', 0);
    const v = d.version;
    d.success('g', 'a', 500);
    expect(d.isEjected('g', 'a', 500)).toBe(false);
    expect(d.version).toBe(v + 1);
    fail(d, 'a', 600); // multiplier still 1: 2 s
    expect(d.view('g', 'a', 600).ejectedForMs).toBe(2_000);
  });

  it('caps the share ejected per group, but always lets one be ejected', () => {
    const d = new OutlierDetector(opts);
    // Four members, 50%: two may be out at once.
    expect(fail(d, 'a', 0)).toBe(true);
    expect(fail(d, 'b', 0)).toBe(true);
    expect(fail(d, 'c', 0)).toBe(false);
    expect(d.ejectedIn('g', 0)).toBe(2);
    // Other groups are counted apart.
    expect(fail(d, 'c', 0, 3, 4, 'h')).toBe(true);
    // The streak goes on: the next failure once there is room ejects it.
    expect(d.failure('g', 'c', 1_000, 4)).toBe(true);
    // A group of one: its only member may be ejected (callers still try it, last).
    expect(fail(d, 'solo', 0, 3, 1, 'one')).toBe(true);
    // A group of three: 1 of 3 is 33%, 2 of 3 is 67%: one at a time.
    expect(fail(d, 'x', 0, 3, 3, 'three')).toBe(true);
    expect(fail(d, 'y', 0, 3, 3, 'three')).toBe(false);
  });

  it('the group size is the larger of what the caller says and the members it has seen', () => {
    const d = new OutlierDetector(opts);
    expect(fail(d, 'a', 0, 3, 0)).toBe(true); // one seen: at least one may be out
    expect(fail(d, 'b', 0, 3, 0)).toBe(false); // two seen: 2 of 2 is over 50%
    expect(fail(d, 'c', 0, 3, 4, 'h')).toBe(true);
    expect(fail(d, 'd', 0, 3, 4, 'h')).toBe(true); // told four: 2 of 4 is 50%
  });

  it('says when the next ejection runs out, and forgets what it is told to or has not heard of for long', () => {
    const d = new OutlierDetector(opts);
    fail(d, 'a', 0);
    fail(d, 'b', 500);
    expect(d.nextExpiry(0)).toBe(1_000);
    expect(d.nextExpiry(1_000)).toBe(1_500);
    expect(d.nextExpiry(1_500)).toBeUndefined();
    d.failure('g', 'c', 0, 4);
    d.prune(1_000, 1_000);
    expect(d.members('g').sort()).toEqual(['b']); // ejected still: kept
    d.forget('g');
    expect(d.groups()).toEqual([]);
    // A member back to nothing worth knowing is dropped on success.
    d.failure('g', 'z', 0, 4);
    d.success('g', 'z', 1);
    expect(d.members('g')).toEqual([]);
  });
});
