import { describe, expect, it } from 'vitest';
import type { Route } from '../proxy/proxy.js';
import { RouteMap } from './agent.js';

const route = (service: string): Route => ({ service, namespace: 'ns', port: 80, exporters: [], policy: undefined, localEndpoints: [] });

describe('RouteMap', () => {
  it('answers a removed route for the grace period only (connections redirected just before the removal)', () => {
    let now = 1_000;
    const m = new RouteMap({ graceMs: 500, now: () => now });
    m.replace(new Map([['10.96.0.1:80', route('a')]]));
    m.replace(new Map());
    expect(m.entries()).toEqual([]);
    expect(m.lookup('10.96.0.1', 80)?.service).toBe('a');
    now += 499;
    expect(m.lookup('10.96.0.1', 80)?.service).toBe('a');
    now += 1;
    expect(m.lookup('10.96.0.1', 80)).toBeUndefined();
  });

  it('a route that comes back replaces the retiring one', () => {
    let now = 0;
    const m = new RouteMap({ graceMs: 500, now: () => now });
    m.replace(new Map([['10.96.0.1:80', route('a')]]));
    m.replace(new Map());
    m.replace(new Map([['10.96.0.1:80', route('b')]]));
    now = 10_000;
    expect(m.lookup('10.96.0.1', 80)?.service).toBe('b');
  });
});
