// NodePlan, kept one import at a time, must always say what a computation from every resource says: after
// any sequence of updates (imports, their Services and policies coming, changing and going; addresses shared
// between imports; more addresses than the datapath holds), its redirects, routes, kept addresses and problems
// equal desiredNode's over the same resources, and the changes it reports cover every address that moved.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Service } from '../api/core.js';
import type { GlobalTrafficPolicy, ServiceImport } from '../api/flomesh.js';
import { NodePlan, desiredNode, routeKey } from './desired.js';

const LOCAL = 'default/default/default/cluster-2';
const NAMES = ['a/web', 'a/db', 'b/web', 'c/api', 'c/x'];
const IPS = ['10.96.0.1', '10.96.0.2', '10.96.0.3', 'not-an-ip'];

interface State {
  imports: Map<string, ServiceImport>;
  services: Map<string, Service>;
  policies: Map<string, GlobalTrafficPolicy>;
}
const meta = (key: string) => ({ namespace: key.split('/')[0]!, name: key.split('/')[1]! });
const op = fc.record({
  key: fc.constantFrom(...NAMES),
  kind: fc.constantFrom('import', 'service', 'policy', 'all', 'all', 'all'),
  remove: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
  ips: fc.subarray(IPS, { minLength: 1, maxLength: 2 }),
  ports: fc.subarray([80, 443], { minLength: 1 }),
  lbType: fc.constantFrom('ActiveActive', 'Locality', 'FailOver'),
});

describe('NodePlan', () => {
  it('after any sequence of updates, equals the computation from every resource', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), fc.constantFrom(2, 3, Infinity), (ops, capacity) => {
        const st: State = { imports: new Map(), services: new Map(), policies: new Map() };
        const plan = new NodePlan(LOCAL, capacity);
        const held = new Map<string, number>(); // what a writer of only the changes would hold
        for (const o of ops) {
          if (o.kind === 'import' || o.kind === 'all') {
            if (o.remove) st.imports.delete(o.key);
            else
              st.imports.set(o.key, {
                apiVersion: 'flomesh.io/v1alpha1',
                kind: 'ServiceImport',
                metadata: meta(o.key),
                spec: { type: 'ClusterSetIP', ips: o.ips, ports: o.ports.map((port) => ({ port, protocol: 'TCP', endpoints: [{ clusterKey: 'default/default/default/cluster-1', target: { host: 'gw', ip: '192.168.0.2', port: 8091, path: '/' } }] })) },
              } as unknown as ServiceImport);
          }
          if (o.kind === 'service' || o.kind === 'all') {
            if (o.remove) st.services.delete(o.key);
            else st.services.set(o.key, { apiVersion: 'v1', kind: 'Service', metadata: meta(o.key), spec: { clusterIPs: o.ips, ports: o.ports.map((port) => ({ port })) } });
          }
          if (o.kind !== 'policy' && o.kind !== 'all') {
            // nothing more
          } else if (o.remove) st.policies.delete(o.key);
          else st.policies.set(o.key, { apiVersion: 'flomesh.io/v1alpha1', kind: 'GlobalTrafficPolicy', metadata: meta(o.key), spec: { lbType: o.lbType } } as unknown as GlobalTrafficPolicy);
          plan.update(o.key, { import: st.imports.get(o.key), service: st.services.get(o.key), policy: st.policies.get(o.key), slices: [] });
          const changes = plan.takeChanges();
          if (changes.all) held.clear();
          for (const rk of changes.all ? plan.routes().keys() : changes.redirects) {
            const now = plan.get(rk);
            if (now) held.set(rk, now.entry.id);
            else held.delete(rk);
          }
        }
        const full = desiredNode({ localCluster: LOCAL, imports: [...st.imports.values()], services: [...st.services.values()], policies: [...st.policies.values()], endpointSlices: [], capacity });
        const got = plan.result();
        expect(got.redirects).toEqual(full.redirects);
        expect([...got.routes]).toEqual(expect.arrayContaining([...full.routes]));
        expect(got.routes.size).toBe(full.routes.size);
        expect(new Map(got.kept)).toEqual(new Map(full.kept));
        expect(got.problems).toEqual(full.problems);
        expect(held).toEqual(new Map(full.redirects.map((r) => [routeKey(r.ip, r.port), r.id])));
      }),
      { numRuns: Number(process.env.ECNET_FUZZ_RUNS ?? 500) },
    );
  });

  it('a change of one import does not make the problems of the others be gathered again', () => {
    const plan = new NodePlan(LOCAL);
    const bad = { apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceImport', metadata: meta('a/bad'), spec: { type: 'ClusterSetIP', ips: ['10.96.9.9'], ports: [] } } as unknown as ServiceImport;
    plan.update('a/bad', { import: bad, service: undefined, policy: undefined, slices: [] });
    const v = plan.problemsVersion;
    expect(plan.problems()).toHaveLength(1);
    const ok = { apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceImport', metadata: meta('b/ok'), spec: { type: 'ClusterSetIP', ips: ['10.96.0.1'], ports: [] } } as unknown as ServiceImport;
    plan.update('b/ok', { import: ok, service: { apiVersion: 'v1', kind: 'Service', metadata: meta('b/ok'), spec: { clusterIP: '10.96.0.1' } }, policy: undefined, slices: [] });
    expect(plan.problemsVersion).toBe(v);
  });

  it('one address asked for by two imports: the first in namespace/name order keeps it, the other is told', () => {
    const plan = new NodePlan(LOCAL);
    const imp = (key: string) => ({ apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceImport', metadata: meta(key), spec: { type: 'ClusterSetIP', ips: ['10.96.0.1'], ports: [{ port: 80, protocol: 'TCP', endpoints: [{ clusterKey: 'default/default/default/cluster-1', target: { host: 'gw', ip: '192.168.0.2', port: 8091 } }] }] } }) as unknown as ServiceImport;
    const svc = (key: string): Service => ({ apiVersion: 'v1', kind: 'Service', metadata: meta(key), spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }] } });
    const aa = { spec: { lbType: 'ActiveActive' } } as unknown as GlobalTrafficPolicy;
    plan.update('b/web', { import: imp('b/web'), service: svc('b/web'), policy: aa, slices: [] });
    plan.update('a/web', { import: imp('a/web'), service: svc('a/web'), policy: aa, slices: [] });
    expect(plan.get('10.96.0.1:80')?.route.namespace).toBe('a');
    expect(plan.problems()).toEqual([{ import: 'b/web', error: '10.96.0.1:80 is redirected for a/web already: left out' }]);
    plan.update('a/web', { import: undefined, service: undefined, policy: undefined, slices: [] });
    expect(plan.get('10.96.0.1:80')?.route.namespace).toBe('b');
    expect(plan.problems()).toEqual([]);
  });
});
