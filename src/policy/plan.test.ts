import { describe, expect, it } from 'vitest';
import { type Candidate, type PlanInput, plan } from './plan.js';

const key = (n: number) => `default/default/default/cluster-${n}`;
const gw = (n: number) => ({ host: `10.0.2.${n + 3}`, port: 80 });
const exporters = [1, 3].map((n) => ({ clusterKey: key(n), gateway: gw(n) }));
const base: PlanInput = { localCluster: key(2), localEndpoints: false, exporters, policy: undefined };
const allHealthy = () => true;
const name = (c: Candidate) => (c.kind === 'local' ? 'local' : c.clusterKey.split('/')[3]);

/** A seeded PRNG so proportions are checked on a fixed sequence. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('traffic policy', () => {
  it('no policy and no local endpoints: refused at once (the seed\'s "Not found"); with local endpoints: local only', () => {
    expect(plan(base, allHealthy)).toEqual([]);
    expect(plan({ ...base, localEndpoints: true }, allHealthy)).toEqual([{ kind: 'local' }]);
    expect(plan({ ...base, localEndpoints: true, policy: { lbType: 'Locality' } }, allHealthy)).toEqual([{ kind: 'local' }]);
  });

  it('Locality with one target: that cluster only', () => {
    expect(plan({ ...base, policy: { lbType: 'Locality', targets: [{ clusterKey: key(3) }] } }, allHealthy)).toEqual([{ kind: 'remote', clusterKey: key(3), gateway: gw(3) }]);
    // A target that exports nothing is no route.
    expect(plan({ ...base, policy: { lbType: 'Locality', targets: [{ clusterKey: key(9) }] } }, allHealthy)).toEqual([]);
  });

  it('ActiveActive follows the weights within ±10% over 1,000 picks, and every target stays as a fallback', () => {
    const random = prng(7);
    const input: PlanInput = { ...base, policy: { lbType: 'ActiveActive', targets: [{ clusterKey: key(1), weight: 75 }, { clusterKey: key(3), weight: 25 }] } };
    const counts = new Map<string, number>();
    for (let i = 0; i < 1000; i++) {
      const order = plan(input, allHealthy, random);
      expect(order).toHaveLength(2);
      counts.set(name(order[0]!), (counts.get(name(order[0]!)) ?? 0) + 1);
    }
    expect(Math.abs(counts.get('cluster-1')! / 1000 - 0.75)).toBeLessThan(0.1 * 0.75);
    expect(Math.abs(counts.get('cluster-3')! / 1000 - 0.25)).toBeLessThan(0.1 * 0.25);
  });

  it('ActiveActive with no targets uses every exporter, the local cluster included when it has endpoints', () => {
    const seen = new Set<string>();
    const random = prng(1);
    for (let i = 0; i < 300; i++) seen.add(name(plan({ ...base, localEndpoints: true, policy: { lbType: 'ActiveActive' } }, allHealthy, random)[0]!));
    expect([...seen].sort()).toEqual(['cluster-1', 'cluster-3', 'local']);
  });

  it('FailOver: local first, then the targets in order, skipping unhealthy ones; all unhealthy → all tried', () => {
    const input: PlanInput = { ...base, localEndpoints: true, policy: { lbType: 'FailOver', targets: [{ clusterKey: key(3) }, { clusterKey: key(1) }] } };
    expect(plan(input, allHealthy).map(name)).toEqual(['local', 'cluster-3', 'cluster-1']);
    expect(plan({ ...input, localEndpoints: false }, (k) => k !== key(3)).map(name)).toEqual(['cluster-1']);
    expect(plan({ ...input, localEndpoints: false }, () => false).map(name)).toEqual(['cluster-3', 'cluster-1']);
  });
});
