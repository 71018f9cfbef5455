import { describe, expect, it } from 'vitest';
import type { LocalService } from './catalog.js';
import { matchIngress } from './ingress.js';

const svc = (namespace: string, name: string, exportedAt: string, rules: { path: string; pathType: 'Exact' | 'Prefix' }[], pathRewrite?: { from: string; to: string }): LocalService => ({
  namespace,
  name,
  ports: new Map([[80, [{ ip: '10.42.0.1', port: 8080 }]]]),
  export: { loadBalancer: 'RoundRobinLoadBalancer', rules: rules.map((r) => ({ ...r, portNumber: 80 })), ...(pathRewrite ? { pathRewrite } : {}) },
  exportedAt,
});
const who = (services: LocalService[], url: string) => {
  const m = matchIngress(services, url);
  return m && 'service' in m ? `${m.service.namespace}/${m.service.name} ${m.path}` : m;
};

describe('ingress rules over a shared path space', () => {
  const teamA = svc('team-a', 'api', '2026-01-01T00:00:00Z', [{ path: '/api', pathType: 'Prefix' }]);
  const teamB = svc('team-b', 'login', '2026-02-01T00:00:00Z', [{ path: '/api/login', pathType: 'Exact' }, { path: '/b', pathType: 'Prefix' }]);
  const rootGrab = svc('team-c', 'everything', '2026-03-01T00:00:00Z', [{ path: '/', pathType: 'Prefix' }]);

  it("a newer export elsewhere cannot carve a path out of an older namespace's rule; unclaimed paths are anyone's", () => {
    expect(who([teamA, teamB, rootGrab], '/api/login')).toBe('team-a/api /api/login');
    expect(who([teamB, teamA], '/api/x?y=1')).toBe('team-a/api /api/x?y=1');
    expect(who([teamA, teamB, rootGrab], '/b/1')).toBe('team-b/login /b/1');
    expect(who([teamA, teamB, rootGrab], '/other')).toBe('team-c/everything /other');
  });

  it('equal rules within one namespace: the older export wins whatever order the gateway saw them in', () => {
    const one = svc('team-a', 'one', '2026-01-01T00:00:00Z', [{ path: '/x', pathType: 'Prefix' }]);
    const two = svc('team-a', 'two', '2026-01-02T00:00:00Z', [{ path: '/x', pathType: 'Prefix' }]);
    expect(who([one, two], '/x/1')).toBe('team-a/one /x/1');
    expect(who([two, one], '/x/1')).toBe('team-a/one /x/1');
  });

  it('within one namespace the longest match wins, and the rewrite applies', () => {
    const a2 = svc('team-a', 'admin', '2026-04-01T00:00:00Z', [{ path: '/api/admin', pathType: 'Prefix' }], { from: '/api/admin', to: '/internal' });
    expect(who([teamA, a2], '/api/admin/users')).toBe('team-a/admin /internal/users');
    expect(who([teamA, a2], '/api/other')).toBe('team-a/api /api/other');
  });

  it('paths with . or .. segments (also percent-encoded) are refused, not forwarded', () => {
    for (const url of ['/api/../admin', '/api/%2e%2e/admin', '/api/./x', '/api/%2E%2E']) expect(matchIngress([teamA], url)).toMatchObject({ refused: 400 });
    expect(who([teamA], '/api/a..b')).toBe('team-a/api /api/a..b');
    // What a backend might decode into a climb: encoded slash or backslash, a backslash, double encoding.
    for (const url of ['/api/..%2fadmin', '/api/%2e%2e%2fadmin', '/api/..\\admin', '/api/%252e%252e/admin']) expect(matchIngress([teamA], url), url).toMatchObject({ refused: 400 });
    // A rewrite replaces whole segments, and what it makes is checked again.
    const strip = svc('team-a', 'strip', '2026-01-01T00:00:00Z', [{ path: '/api', pathType: 'Prefix' }], { from: '/api', to: '' });
    expect(who([strip], '/api/x')).toBe('team-a/strip /x');
    const dots = svc('team-a', 'dots', '2026-01-01T00:00:00Z', [{ path: '/d', pathType: 'Prefix' }], { from: '/d', to: '/..' });
    expect(matchIngress([dots], '/d/etc')).toMatchObject({ refused: 400 });
  });
});
