import { describe, expect, it } from 'vitest';
import type { Service, ServicePort } from '../api/core.js';
import type { ServiceExport } from '../api/flomesh.js';
import { type ExportView, type MemberView, aggregate, mcsExportView } from './aggregate.js';

const exp = (created: string, spec: Partial<ServiceExport['spec']> = {}, name = 'httpbin'): ServiceExport => ({
  apiVersion: 'flomesh.io/v1alpha1',
  kind: 'ServiceExport',
  metadata: { name, namespace: 'httpbin', creationTimestamp: created },
  spec: { loadBalancer: 'RoundRobinLoadBalancer', ...spec },
});
const svc = (ports: ServicePort[], extra: Partial<Service['spec']> = {}, name = 'httpbin', labels?: Record<string, string>): Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'httpbin', ...(labels ? { labels } : {}) },
  spec: { clusterIP: '10.96.1.1', ports, ...extra },
});
const member = (n: number, exports: ExportView[], services: Service[], gateway = true): MemberView => ({
  name: `cluster-${n}`,
  key: `default/default/default/cluster-${n}`,
  gateway: gateway ? { host: `10.0.2.${n + 3}`, port: 80 } : undefined,
  exports,
  services,
});

describe('aggregation', () => {
  it("the seed: exports in clusters 1 and 3 become an import in every member with both gateways; cluster-2's export without a Service is not valid", () => {
    const out = aggregate([
      member(1, [exp('2026-01-01T00:00:00Z', { rules: [{ portNumber: 8080, path: '/httpbin', pathType: 'Prefix' }] })], [svc([{ port: 8080 }])]),
      member(2, [exp('2026-01-01T00:00:01Z')], []),
      member(3, [exp('2026-01-01T00:00:02Z')], [svc([{ port: 8080 }])]),
    ]);
    for (const m of ['cluster-1', 'cluster-2', 'cluster-3']) {
      const imp = out.get(m)!.imports.get('httpbin/httpbin')!;
      expect(imp.spec.ports).toHaveLength(1);
      expect(imp.spec.ports[0]!.endpoints.map((e) => e.clusterKey)).toEqual(['default/default/default/cluster-1', 'default/default/default/cluster-3']);
      expect(imp.clusters).toEqual(['default/default/default/cluster-1', 'default/default/default/cluster-3']);
    }
    const ep = out.get('cluster-2')!.imports.get('httpbin/httpbin')!.spec.ports[0]!.endpoints[0]!;
    expect(ep.target).toEqual({ host: '10.0.2.4', ip: '10.0.2.4', port: 80, path: '/httpbin' });
    expect(out.get('cluster-2')!.exportConditions.get('httpbin/httpbin')![0]).toMatchObject({ type: 'Valid', status: 'False', reason: 'NoService' });
    expect(out.get('cluster-1')!.exportConditions.get('httpbin/httpbin')).toMatchObject([
      { type: 'Valid', status: 'True' },
      { type: 'Conflict', status: 'False', reason: 'NoConflicts' },
    ]);
    // Derived Service only where no Service of the name exists; the import's ips come from whichever exists.
    expect([...out.get('cluster-2')!.services.keys()]).toEqual(['httpbin/httpbin']);
    expect(out.get('cluster-1')!.services.size).toBe(0);
    expect(out.get('cluster-1')!.imports.get('httpbin/httpbin')!.spec.ips).toEqual(['10.96.1.1']);
    expect(out.get('cluster-2')!.imports.get('httpbin/httpbin')!.spec.ips).toBeUndefined();
  });

  it('ports are the union, merged by name then (protocol, port); a clash keeps the older definition and is a conflict on all exports', () => {
    const out = aggregate([
      member(1, [exp('2026-01-01T00:00:00Z')], [svc([{ name: 'http', port: 8080 }, { name: 'metrics', port: 9090 }])]),
      member(3, [exp('2026-01-01T00:00:05Z')], [svc([{ name: 'http', port: 8081 }, { name: 'admin', port: 9000 }])]),
    ]);
    const imp = out.get('cluster-1')!.imports.get('httpbin/httpbin')!;
    expect(imp.spec.ports.map((p) => [p.name, p.port, p.endpoints.map((e) => e.clusterKey.split('/')[3])])).toEqual([
      ['http', 8080, ['cluster-1']],
      ['metrics', 9090, ['cluster-1']],
      ['admin', 9000, ['cluster-3']],
    ]);
    for (const m of ['cluster-1', 'cluster-3']) {
      expect(out.get(m)!.exportConditions.get('httpbin/httpbin')![1]).toMatchObject({ type: 'Conflict', status: 'True', reason: 'PortConflict', message: expect.stringContaining('http 8081/TCP') });
    }
  });

  it('a newer conflicting export does not change the traffic of the older one', () => {
    const before = aggregate([member(1, [exp('2026-01-01T00:00:00Z')], [svc([{ port: 8080 }])]), member(2, [], [])]);
    const after = aggregate([
      member(1, [exp('2026-01-01T00:00:00Z')], [svc([{ port: 8080 }])]),
      member(2, [exp('2026-01-02T00:00:00Z')], [svc([{ port: 8080 }], { clusterIP: 'None' })]),
    ]);
    expect(after.get('cluster-1')!.imports.get('httpbin/httpbin')!.spec).toEqual(before.get('cluster-1')!.imports.get('httpbin/httpbin')!.spec);
    expect(after.get('cluster-2')!.exportConditions.get('httpbin/httpbin')![1]).toMatchObject({ reason: 'TypeConflict' });
  });

  it('type and session affinity come from the oldest export, whatever the order members are given in', () => {
    const a = member(1, [exp('2026-01-03T00:00:00Z')], [svc([{ port: 80 }], { sessionAffinity: 'ClientIP' })]);
    const b = member(2, [exp('2026-01-01T00:00:00Z')], [svc([{ port: 80 }])]);
    for (const order of [[a, b], [b, a]]) {
      const imp = aggregate(order).get('cluster-1')!.imports.get('httpbin/httpbin')!;
      expect(imp.spec.sessionAffinity).toBe('None');
      expect(imp.spec.ports[0]!.endpoints).toHaveLength(2);
      expect(aggregate(order).get('cluster-1')!.exportConditions.get('httpbin/httpbin')![1]).toMatchObject({ reason: 'SessionAffinityConflict' });
    }
  });

  it('ExternalName, no gateway and targetClusters', () => {
    const out = aggregate([
      member(1, [exp('2026-01-01T00:00:00Z', { targetClusters: ['default/default/default/cluster-2'] })], [svc([{ port: 80 }])]),
      member(2, [], []),
      member(3, [exp('2026-01-01T00:00:00Z')], [svc([{ port: 80 }], { type: 'ExternalName', externalName: 'example.org' })]),
      member(4, [exp('2026-01-01T00:00:00Z')], [svc([{ port: 80 }])], false),
    ]);
    expect(out.get('cluster-3')!.exportConditions.get('httpbin/httpbin')![0]).toMatchObject({ status: 'False', reason: 'InvalidServiceType' });
    expect(out.get('cluster-4')!.exportConditions.get('httpbin/httpbin')![0]).toMatchObject({ status: 'False', reason: 'NoGateway' });
    expect(out.get('cluster-2')!.imports.has('httpbin/httpbin')).toBe(true);
    expect(out.get('cluster-1')!.imports.has('httpbin/httpbin')).toBe(false);
    expect(out.get('cluster-3')!.imports.has('httpbin/httpbin')).toBe(false);
  });

  it("the cluster's own machinery (default/kubernetes, kube-system) is never exported", () => {
    const api: ServiceExport = { ...exp('2026-01-01T00:00:00Z'), metadata: { name: 'kubernetes', namespace: 'default', creationTimestamp: '2026-01-01T00:00:00Z' } };
    const dns: ServiceExport = { ...exp('2026-01-01T00:00:00Z'), metadata: { name: 'kube-dns', namespace: 'kube-system', creationTimestamp: '2026-01-01T00:00:00Z' } };
    const own = (name: string, namespace: string): Service => ({ ...svc([{ port: 443 }], {}, name), metadata: { name, namespace } });
    const out = aggregate([member(1, [api, dns], [own('kubernetes', 'default'), own('kube-dns', 'kube-system')]), member(2, [], [])]);
    expect(out.get('cluster-2')!.imports.size).toBe(0);
    for (const k of ['default/kubernetes', 'kube-system/kube-dns']) {
      expect(out.get('cluster-1')!.exportConditions.get(k)![0]).toMatchObject({ type: 'Valid', status: 'False', reason: 'ClusterMachinery' });
    }
  });

  it("an ecnet-derived Service is never taken for the member's own (no export loop)", () => {
    const derived = svc([{ port: 80 }], {}, 'httpbin', { 'app.kubernetes.io/managed-by': 'ecnet-controller' });
    const out = aggregate([member(2, [exp('2026-01-01T00:00:00Z')], [derived])]);
    expect(out.get('cluster-2')!.exportConditions.get('httpbin/httpbin')![0]).toMatchObject({ reason: 'NoService' });
    expect(out.get('cluster-2')!.imports.size).toBe(0);
  });

  it('an unnamed port cannot join others (Kubernetes would refuse the Service): a PortConflict, the older port kept', () => {
    const out = aggregate([
      member(1, [exp('2026-01-01T00:00:00Z')], [svc([{ port: 80 }])]),
      member(2, [exp('2026-01-02T00:00:00Z')], [svc([{ name: 'grpc', port: 9000 }])]),
    ]);
    expect(out.get('cluster-1')!.imports.get('httpbin/httpbin')!.spec.ports.map((p) => p.port)).toEqual([80]);
    expect(out.get('cluster-2')!.exportConditions.get('httpbin/httpbin')![1]).toMatchObject({ status: 'True', reason: 'PortConflict', message: expect.stringContaining('must name them all') });
  });

  it('objects the API allows but that say little (an export with no spec, a Service with odd ports) never throw', () => {
    const bare = { apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceExport', metadata: { name: 'httpbin', namespace: 'httpbin', creationTimestamp: '2026-01-01T00:00:00Z' } } as unknown as ServiceExport;
    const odd = { ...svc([]), spec: { ports: 'x' } } as unknown as Service;
    const out = aggregate([member(1, [bare], [svc([{ port: 80 }, { port: 70000 } as ServicePort])]), member(2, [bare], [odd])]);
    expect(out.get('cluster-1')!.imports.get('httpbin/httpbin')!.spec.ports.map((p) => p.port)).toEqual([80]);
    expect(out.get('cluster-2')!.exportConditions.get('httpbin/httpbin')![0]).toMatchObject({ status: 'False', reason: 'NoPorts' });
  });

  it('a Service with a selector is the user\'s even if it carries the managed-by label', () => {
    const own = svc([{ port: 80 }], { selector: { app: 'x' } }, 'httpbin', { 'app.kubernetes.io/managed-by': 'ecnet-controller' });
    const out = aggregate([member(1, [exp('2026-01-01T00:00:00Z')], [svc([{ port: 80 }])]), member(2, [], [own])]);
    expect(out.get('cluster-2')!.services.size).toBe(0);
    expect(out.get('cluster-2')!.imports.get('httpbin/httpbin')!.spec.ips).toEqual(['10.96.1.1']);
  });

  describe('the MCS API', () => {
    const mcs = (created: string, name = 'httpbin') => mcsExportView({ apiVersion: 'multicluster.x-k8s.io/v1alpha1', kind: 'ServiceExport', metadata: { name, namespace: 'httpbin', creationTimestamp: created } });

    it('an MCS export aggregates with flomesh.io ones; MCS imports only where a service has an MCS export, flomesh.io ones (the routing record) everywhere', () => {
      const out = aggregate([
        member(1, [exp('2026-01-01T00:00:00Z')], [svc([{ name: 'http', port: 80 }])]),
        member(2, [mcs('2026-01-01T00:00:01Z')], [svc([{ name: 'grpc', port: 9090 }], { clusterIP: '10.96.2.2' })]),
        member(3, [mcs('2026-01-01T00:00:00Z', 'other')], [svc([{ port: 443 }], {}, 'other')]),
      ]);
      for (const m of ['cluster-1', 'cluster-2', 'cluster-3']) {
        const d = out.get(m)!;
        expect(d.imports.get('httpbin/httpbin')!.spec.ports.map((p) => p.port)).toEqual([80, 9090]);
        expect(d.mcsImports!.get('httpbin/httpbin')!.spec.ports).toEqual([{ name: 'http', protocol: 'TCP', port: 80 }, { name: 'grpc', protocol: 'TCP', port: 9090 }]);
        expect(d.mcsImports!.get('httpbin/httpbin')!.clusters).toEqual(['cluster-1', 'cluster-2']);
        // MCS only: the flomesh.io import is the agents' routing record all the same.
        expect(d.imports.get('httpbin/other')!.spec.ports.map((p) => p.port)).toEqual([443]);
        expect(d.mcsImports!.has('httpbin/httpbin') && !d.mcsImports!.has('httpbin/absent')).toBe(true);
        expect(d.mcsImports!.get('httpbin/other')!.spec).toMatchObject({ type: 'ClusterSetIP', ports: [{ protocol: 'TCP', port: 443 }] });
      }
      // The address: the Service of that name in the member, one at most.
      expect(out.get('cluster-2')!.mcsImports!.get('httpbin/httpbin')!.spec.ips).toEqual(['10.96.2.2']);
      expect(out.get('cluster-1')!.exportConditions.get('httpbin/httpbin')![1]).toMatchObject({ type: 'Conflict', status: 'False' });
      expect(out.get('cluster-2')!.mcsExportConditions!.get('httpbin/httpbin')![0]).toMatchObject({ type: 'Valid', status: 'True' });
      expect(out.get('cluster-2')!.exportConditions.has('httpbin/httpbin')).toBe(false);
    });

    it('a Service exported both ways by one member counts once: as old as its older export, to every member, conditions on both', () => {
      const out = aggregate([
        // flomesh.io export younger than cluster-2's, limited to cluster-3; the MCS export older than cluster-2's.
        member(1, [exp('2026-01-01T00:00:05Z', { targetClusters: ['default/default/default/cluster-3'] }), mcs('2026-01-01T00:00:00Z')], [svc([{ port: 80 }], { sessionAffinity: 'ClientIP' })]),
        member(2, [exp('2026-01-01T00:00:02Z')], [svc([{ port: 80 }])]),
        member(3, [], []),
      ]);
      for (const m of ['cluster-1', 'cluster-2', 'cluster-3']) {
        const d = out.get(m)!;
        expect(d.imports.get('httpbin/httpbin')!.spec.ports[0]!.endpoints.map((e) => e.clusterKey.split('/')[3])).toEqual(['cluster-1', 'cluster-2']);
        // cluster-1 is the oldest exporter: its session affinity is used.
        expect(d.mcsImports!.get('httpbin/httpbin')!.spec.sessionAffinity).toBe('ClientIP');
      }
      const one = out.get('cluster-1')!;
      expect(one.exportConditions.get('httpbin/httpbin')).toEqual(one.mcsExportConditions!.get('httpbin/httpbin'));
      expect(out.get('cluster-2')!.exportConditions.get('httpbin/httpbin')![1]).toMatchObject({ status: 'True', reason: 'SessionAffinityConflict' });
    });
  });
});
