import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { ServiceExport } from '../api/flomesh.js';
import { parseMetrics, sumOf } from '../metrics/parse.js';
import type { MemberDesired } from './aggregate.js';
import { ControllerMetrics } from './metrics.js';

const exp = (name: string, spec: Partial<ServiceExport['spec']> = {}, status?: unknown): ServiceExport =>
  ({ apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceExport', metadata: { name, namespace: 'shop' }, spec: { loadBalancer: 'RoundRobinLoadBalancer', ...spec }, ...(status ? { status } : {}) }) as ServiceExport;

const desired = (conflicting: string[] = []): Map<string, MemberDesired> =>
  new Map([['m1', { imports: new Map(), services: new Map(), exportConditions: new Map(conflicting.map((k) => [k, [{ type: 'Conflict' as const, status: 'True' as const, reason: 'PortConflict', message: '' }]])) }]]);

async function scrape(registry: Registry) {
  return parseMetrics(await registry.metrics());
}

describe('ControllerMetrics', () => {
  it('times a change from its first event to the end of the first pass that saw its last event and wrote it', async () => {
    const registry = new Registry();
    const m = new ControllerMetrics(registry);
    const count = async () => sumOf(await scrape(registry), 'ecnet_controller_propagation_seconds', {}, 'ecnet_controller_propagation_seconds_count');
    // Before the member's first list, events are the controller learning what is there.
    m.exportEvent('m1', { type: 'added', object: exp('a') }, 1_000);
    m.exportsListed('m1', () => [exp('a')]);
    m.exportEvent('m1', { type: 'added', object: exp('a') }, 1_000); // the same again (a re-list): no change
    m.exportEvent('m1', { type: 'updated', object: exp('a', {}, { conditions: [] }) }, 1_000); // status only
    m.passBegins('full', 1_000);
    m.passEnds({ endedMs: 1_100, failures: 0, desired: desired(), scope: undefined, closed: false });
    expect(await count()).toBe(0);

    m.exportEvent('m1', { type: 'added', object: exp('b') }, 2_000);
    m.passBegins('scoped', 2_010);
    // A second change of b while the pass runs: that pass did not see it, so b stays pending.
    m.exportEvent('m1', { type: 'updated', object: exp('b', { serviceAccountName: 'x' }) }, 2_020);
    m.passEnds({ endedMs: 2_050, failures: 0, desired: desired(), scope: new Set(['shop/b']), closed: false });
    expect(await count()).toBe(0);
    // The next pass has a ServiceImport write to b fail: still pending.
    m.passBegins('full', 2_060);
    m.written('m2|ServiceImport|shop/b', false);
    m.written('m2|Service|shop/b', true);
    m.passEnds({ endedMs: 2_100, failures: 1, desired: desired(), scope: undefined, closed: false });
    expect(await count()).toBe(0);
    // A gated pass (imports not planned) completes nothing.
    m.passBegins('full', 2_200);
    m.passEnds({ endedMs: 2_300, failures: 0, desired: undefined, scope: undefined, closed: false });
    expect(await count()).toBe(0);
    m.passBegins('full', 2_400);
    m.passEnds({ endedMs: 2_500, failures: 0, desired: desired(), scope: undefined, closed: false });
    const f = await scrape(registry);
    expect(sumOf(f, 'ecnet_controller_propagation_seconds', {}, 'ecnet_controller_propagation_seconds_count')).toBe(1);
    // Timed from b's first event, on the controller's clock.
    expect(sumOf(f, 'ecnet_controller_propagation_seconds', {}, 'ecnet_controller_propagation_seconds_sum')).toBeCloseTo(0.5);
    expect(sumOf(f, 'ecnet_controller_propagation_seconds', { le: '0.5' }, 'ecnet_controller_propagation_seconds_bucket')).toBe(1);
    expect(sumOf(f, 'ecnet_controller_propagation_seconds', { le: '0.25' }, 'ecnet_controller_propagation_seconds_bucket')).toBe(0);
    expect(sumOf(f, 'ecnet_controller_reconcile_duration_seconds', { kind: 'full' }, 'ecnet_controller_reconcile_duration_seconds_count')).toBe(4);
    expect(sumOf(f, 'ecnet_controller_reconcile_duration_seconds', { kind: 'scoped' }, 'ecnet_controller_reconcile_duration_seconds_count')).toBe(1);
    expect(sumOf(f, 'ecnet_controller_reconcile_errors_total', { kind: 'full' })).toBe(1);
    expect(sumOf(f, 'ecnet_controller_writes_total', { cluster: 'm2', kind: 'ServiceImport', result: 'error' })).toBe(1);
    expect(sumOf(f, 'ecnet_controller_writes_total', { cluster: 'm2', kind: 'Service', result: 'ok' })).toBe(1);

    // A deletion is a change; a deletion of something never seen is not.
    m.exportEvent('m1', { type: 'deleted', object: exp('b') }, 3_000);
    m.exportEvent('m1', { type: 'deleted', object: exp('zzz') }, 3_000);
    m.passBegins('scoped', 3_000);
    m.passEnds({ endedMs: 3_020, failures: 0, desired: desired(), scope: new Set(['shop/b']), closed: false });
    expect(await count()).toBe(2);
  });

  it('keeps the conflicts of the services a scoped pass did not look at; a removed member\'s series go', async () => {
    const registry = new Registry();
    const m = new ControllerMetrics(registry);
    m.attach(() => [
      { name: 'm1', up: true, exports: 2, imports: 3 },
      { name: 'm2', up: false, exports: 1, imports: 3 },
    ]);
    m.passBegins('full', 0);
    m.passEnds({ endedMs: 1, failures: 0, desired: desired(['shop/a', 'shop/b']), scope: undefined, closed: false });
    m.passBegins('scoped', 2);
    m.passEnds({ endedMs: 3, failures: 0, desired: desired([]), scope: new Set(['shop/a']), closed: false });
    m.written('m2|ServiceExport|shop/a', true);
    let f = await scrape(registry);
    expect(sumOf(f, 'ecnet_controller_export_conflicts')).toBe(1);
    expect(sumOf(f, 'ecnet_controller_exports')).toBe(3);
    expect(sumOf(f, 'ecnet_controller_imports')).toBe(6);
    expect(f.get('ecnet_controller_member_up')?.samples.map((s) => [s.labels.cluster, s.value])).toEqual([
      ['m1', 1],
      ['m2', 0],
    ]);
    m.memberRemoved('m2');
    m.attach(() => [{ name: 'm1', up: true, exports: 2, imports: 2 }]);
    f = await scrape(registry);
    expect(f.get('ecnet_controller_member_up')?.samples.map((s) => s.labels.cluster)).toEqual(['m1']);
    expect(f.get('ecnet_controller_writes_total')?.samples.filter((s) => s.labels.cluster === 'm2')).toEqual([]);
  });
});
