import { describe, expect, it } from 'vitest';
import { HealthChecks } from '../proxy/health-checks.js';
import { HealthBook } from './health.js';

const key = (n: number) => `default/default/default/cluster-${n}`;
const opts = { failuresToEject: 3, baseEjectMs: 1000, maxEjectMs: 4000 };

describe('the proxy health book, per (cluster, service)', () => {
  it('consecutive failures eject one service at a cluster for a growing time; others there are untouched', () => {
    const h = new HealthBook(opts);
    const k = key(1);
    h.failure(k, 'ns/a', 0, 2);
    h.failure(k, 'ns/a', 0, 2);
    expect(h.isHealthy(k, 'ns/a', 0)).toBe(true);
    h.failure(k, 'ns/a', 0, 2);
    expect(h.isHealthy(k, 'ns/a', 999)).toBe(false);
    expect(h.isHealthy(k, 'ns/b', 999)).toBe(true);
    expect(h.isHealthy(key(3), 'ns/a', 999)).toBe(true);
    expect(h.isHealthy(k, 'ns/a', 1000)).toBe(true);
    for (let i = 0; i < 3; i++) h.failure(k, 'ns/a', 1000, 2);
    expect(h.isHealthy(k, 'ns/a', 2999)).toBe(false);
    expect(h.view(k, 'ns/a', 2000)).toMatchObject({ healthy: false, service: 'ns/a', reason: expect.stringMatching(/ejected for 1s/) });
    h.success(k, 'ns/a', 2000);
    expect(h.isHealthy(k, 'ns/a', 2001)).toBe(true);
  });

  it('at most half of a service\'s clusters ejected at once', () => {
    const h = new HealthBook(opts);
    for (let i = 0; i < 3; i++) h.failure(key(1), 'ns/a', 0, 2);
    for (let i = 0; i < 3; i++) h.failure(key(3), 'ns/a', 0, 2);
    expect(h.isHealthy(key(1), 'ns/a', 0)).toBe(false);
    expect(h.isHealthy(key(3), 'ns/a', 0)).toBe(true);
  });

  it('an unreachable gateway takes every service of its cluster down; a passing check brings them back', () => {
    const h = new HealthBook(opts);
    for (let i = 0; i < 3; i++) h.failure(key(1), 'ns/a', 0, 2);
    h.checked(key(1), false, 0);
    expect(h.isHealthy(key(1), 'ns/b', 10_000)).toBe(false);
    expect(h.view(key(1), 'ns/b', 10_000).reason).toBe('active check failed');
    expect(h.isReachable(key(1))).toBe(false);
    h.checked(key(1), true, 10);
    expect(h.isHealthy(key(1), 'ns/a', 10)).toBe(true); // also ends the ejection (an older gateway: no word on services)
    expect(h.isHealthy(key(1), 'ns/b', 10)).toBe(true);
  });

  it("the gateway's word on one service: not ready marks that (cluster, service) only; ready ends its ejection", () => {
    const h = new HealthBook(opts);
    h.serviceChecked(key(1), 'ns/a', false, 0, 'no ready endpoint at the gateway');
    expect(h.isHealthy(key(1), 'ns/a', 0)).toBe(false);
    expect(h.view(key(1), 'ns/a', 0).reason).toBe('no ready endpoint at the gateway');
    expect(h.isHealthy(key(1), 'ns/b', 0)).toBe(true);
    expect(h.isHealthy(key(3), 'ns/a', 0)).toBe(true);
    h.serviceChecked(key(1), 'ns/a', true, 0);
    expect(h.isHealthy(key(1), 'ns/a', 0)).toBe(true);
    for (let i = 0; i < 3; i++) h.failure(key(1), 'ns/b', 0, 2);
    expect(h.isHealthy(key(1), 'ns/b', 0)).toBe(false);
    h.serviceChecked(key(1), 'ns/b', true, 1);
    expect(h.isHealthy(key(1), 'ns/b', 1)).toBe(true);
  });

  it('what checks said of a service or a cluster no longer routed is forgotten (not believed again when it comes back)', async () => {
    const h = new HealthBook(opts);
    h.serviceChecked(key(1), 'ns/a', false, 0);
    h.serviceChecked(key(1), 'ns/gone', false, 0);
    h.serviceChecked(key(2), 'ns/a', false, 0);
    h.checked(key(3), false, 0);
    h.retain(new Map([[key(1), { services: new Set(['ns/a']) }]]));
    expect(h.isHealthy(key(1), 'ns/a', 0)).toBe(false);
    expect(h.view(key(1), 'ns/gone', 0).reason).toBe('no failures seen');
    expect(h.isHealthy(key(2), 'ns/a', 0)).toBe(true);
    expect(h.isReachable(key(3))).toBe(true);
    // A check round does it with what it checked: nothing routed, nothing held.
    const checks = new HealthChecks({ health: h, targets: () => new Map(), connect: () => { throw new Error('no gateway to check'); }, now: () => 0 });
    await checks.checkOnce();
    expect(h.isHealthy(key(1), 'ns/a', 0)).toBe(true);
  });
});
