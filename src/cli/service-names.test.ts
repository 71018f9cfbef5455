import { describe, expect, it } from 'vitest';
import type { RouteReport } from '../agent/admin.js';
import { formatServiceName, serviceNames } from './service-names.js';

const report = (address: string, namespace: string, service: string, port: number, id?: number): RouteReport => ({
  address,
  namespace,
  service,
  port,
  ...(id !== undefined ? { id } : {}),
  policy: 'Locality (no policy)',
  targets: [],
  localEndpoints: [],
  decision: [],
  redirected: true,
});

describe('serviceNames', () => {
  const names = serviceNames([report('10.96.0.10:8080', 'shop', 'web', 8080, 7), report('fd00:0:0::10:80', 'shop', 'v6', 80), report('10.96.0.11:53', 'dns', 'cache', 53, 9)]);

  it('names an address whatever the spelling of its IP (IPv6 reports carry no brackets)', () => {
    expect(names.of('10.96.0.10', 8080)).toEqual({ namespace: 'shop', name: 'web', port: 8080 });
    expect(names.of('fd00::10', 80)).toEqual({ namespace: 'shop', name: 'v6', port: 80 });
    expect(names.of('10.96.0.10', 80)).toBeUndefined();
  });

  it('prefers the address to the id, and falls back to the id', () => {
    expect(names.of('10.96.0.10', 8080, 9)?.name).toBe('web');
    expect(names.of('10.0.0.1', 1, 9)?.name).toBe('cache');
    expect(names.of('10.0.0.1', 1, 8)).toBeUndefined();
  });

  it('formats as namespace/name:port, or -', () => {
    expect(formatServiceName(names.of('10.96.0.10', 8080))).toBe('shop/web:8080');
    expect(formatServiceName(undefined)).toBe('-');
  });
});
