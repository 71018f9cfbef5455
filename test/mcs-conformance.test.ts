// The MCS API (multicluster.x-k8s.io/v1alpha1) as KEP-1645 requires it of an implementation, one named test per
// requirement, written here from the KEP's text: ports are the union; the oldest export wins a conflict and the
// Conflict condition says which; the import exists in every member, the exporter included; removing the last
// export withdraws the import; a Service deleted before its export leaves no import behind; clusterset.local
// resolves. Plus what ecnet adds: both APIs in one cluster set. Each test has a namespace of its own.
//
// The same named tests run on two backends (test/helpers/mcs-backends.ts), with the same assertions:
//  - in-memory API servers (a hub and three members), the controller watching them through the real client, as
//    test/controller-kubernetes.test.ts does;
//  - ecnet local's control plane: a directory per cluster read by the local source, the seed's Clusters in the
//    control-plane directory, and the controller in local mode built as `ecnet local up`'s supervisor builds it.
// A test that cannot hold in local mode runs on the API servers only, and says why.
//
// Withdrawal: the controller acts on the watch event (a pass within the debounce), not at the resync, which is
// set to 10 minutes here on both backends so that it cannot be what removes anything; the test asserts the
// imports are gone from every member within the backend's stated bound (backend.withdrawMs) of the export's
// deletion.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { crdFiles } from '../src/api/crds.js';
import type { EndpointSlice, Service, ServicePort } from '../src/api/core.js';
import type { Cluster, Condition, ServiceExport, ServiceImport } from '../src/api/flomesh.js';
import type { McsServiceExport, McsServiceImport } from '../src/api/mcs.js';
import { createKubernetesSource } from '../src/sources/kubernetes.js';
import { Kinds, type KubeObject } from '../src/sources/source.js';
import { type KubeApiServer, startKubeApiServer } from './helpers/kube-api-server.js';
import { type ControlledSet, startControlledSet } from './helpers/controlled-set.js';
import { ApiServerBackend, LocalBackend, type McsBackend } from './helpers/mcs-backends.js';
import { until } from './helpers/until.js';

const MEMBERS = ['cluster-1', 'cluster-2', 'cluster-3'] as const;
type MemberName = (typeof MEMBERS)[number];

const namespace = (name: string): KubeObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
const service = (ns: string, name: string, clusterIP: string, ports: ServicePort[], extra: Partial<Service['spec']> = {}): Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: ns },
  spec: { clusterIP, clusterIPs: clusterIP === 'None' ? ['None'] : [clusterIP], ports, selector: { app: name }, ...extra },
});
const mcsExport = (ns: string, name: string): McsServiceExport => ({ apiVersion: 'multicluster.x-k8s.io/v1alpha1', kind: 'ServiceExport', metadata: { name, namespace: ns } });
const flomeshExport = (ns: string, name: string): ServiceExport => ({
  apiVersion: 'flomesh.io/v1alpha1',
  kind: 'ServiceExport',
  metadata: { name, namespace: ns },
  spec: { loadBalancer: 'RoundRobinLoadBalancer' },
});
const k = (o: object) => o as unknown as KubeObject;

/** Creation timestamps have whole seconds: this makes the next export strictly younger. */
const nextSecond = () => new Promise((r) => setTimeout(r, 1_100));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each([
  { backend: new ApiServerBackend('10.0.2') as McsBackend },
  { backend: new LocalBackend() as McsBackend },
])('MCS API conformance (KEP-1645), on $backend.name', ({ backend }) => {
  const WITHDRAW_MS = backend.withdrawMs;
  /** Tests that need what only an API server has (its request log). */
  const api = backend instanceof ApiServerBackend ? backend : undefined;
  const m = (name: MemberName) => backend.member(name);
  const mcsImport = (name: MemberName, ns: string, svc: string) => m(name).object<McsServiceImport>(Kinds.McsServiceImport, ns, svc);
  const flomeshImport = (name: MemberName, ns: string, svc: string) => m(name).object<ServiceImport>(Kinds.ServiceImport, ns, svc);
  const condition = async (name: MemberName, ns: string, svc: string, type: string): Promise<Condition | undefined> =>
    (await m(name).object<McsServiceExport>(Kinds.McsServiceExport, ns, svc))?.status?.conditions?.find((c) => c.type === type);
  /** The namespace in every member (the KEP imports a service only where its namespace exists). */
  const inEveryMember = async (ns: string) => {
    for (const name of MEMBERS) await m(name).put(namespace(ns));
  };
  const portsOf = (i: McsServiceImport | undefined) => (i?.spec.ports ?? []).map((p) => `${p.name ?? ''}:${p.port}/${p.protocol ?? 'TCP'}`).sort();
  const noMcsImportAnywhere = async (ns: string, svc: string) => (await Promise.all(MEMBERS.map((name) => mcsImport(name, ns, svc)))).every((i) => !i);

  beforeAll(async () => {
    // Resync every 10 minutes: withdrawal must come from the watch events, not from it.
    await backend.start(MEMBERS, { resyncMs: 600_000 });
  });
  afterAll(async () => {
    await backend.close();
  });

  it('ports are the union of the exported Services\' ports (merged by name, then by protocol and port)', async () => {
    const ns = 'conf-ports';
    await inEveryMember(ns);
    await m('cluster-1').put(service(ns, 'api', '10.96.1.1', [{ name: 'http', port: 80, protocol: 'TCP' }]));
    await m('cluster-2').put(service(ns, 'api', '10.96.2.1', [{ name: 'http', port: 80, protocol: 'TCP' }, { name: 'grpc', port: 9090, protocol: 'TCP' }]));
    await m('cluster-3').put(service(ns, 'api', '10.96.3.1', [{ name: 'metrics', port: 9100, protocol: 'TCP' }]));
    for (const name of MEMBERS) await m(name).put(mcsExport(ns, 'api'));
    for (const name of MEMBERS) {
      const imp = await until(`union in ${name}`, async () => {
        const i = await mcsImport(name, ns, 'api');
        return portsOf(i).length === 3 && i;
      });
      expect(portsOf(imp)).toEqual(['grpc:9090/TCP', 'http:80/TCP', 'metrics:9100/TCP']);
      expect(imp.spec.type).toBe('ClusterSetIP');
    }
    for (const name of MEMBERS) {
      await until(`Ready on ${name}`, async () => (await condition(name, ns, 'api', 'Ready'))?.status === 'True');
      expect(await condition(name, ns, 'api', 'Valid')).toMatchObject({ status: 'True' });
      expect(await condition(name, ns, 'api', 'Conflict')).toMatchObject({ status: 'False', reason: 'NoConflicts' });
    }
  });

  it('the oldest export wins a port conflict, and the Conflict condition says which field and which cluster', async () => {
    const ns = 'conf-port-conflict';
    await inEveryMember(ns);
    await m('cluster-3').put(service(ns, 'web', '10.96.3.2', [{ name: 'http', port: 80, protocol: 'TCP' }]));
    await m('cluster-3').put(mcsExport(ns, 'web'));
    await nextSecond();
    // Younger, and its port named http is another port: it cannot join.
    await m('cluster-1').put(service(ns, 'web', '10.96.1.2', [{ name: 'http', port: 8080, protocol: 'TCP' }]));
    await m('cluster-1').put(mcsExport(ns, 'web'));
    for (const name of ['cluster-1', 'cluster-3'] as const) {
      const c = await until(`Conflict on ${name}`, async () => {
        const c = await condition(name, ns, 'web', 'Conflict');
        return c?.status === 'True' && c;
      });
      expect(c.reason).toBe('PortConflict');
      expect(c.message).toMatch(/default\/default\/default\/cluster-1 exports port http 8080\/TCP, which clashes with http 80\/TCP of default\/default\/default\/cluster-3 \(older, used\)/);
    }
    for (const name of MEMBERS) expect(portsOf(await until(`import in ${name}`, () => mcsImport(name, ns, 'web')))).toEqual(['http:80/TCP']);
  });

  it('the oldest export wins a type conflict: headless if the oldest export is (TypeConflict)', async () => {
    const ns = 'conf-type-conflict';
    await inEveryMember(ns);
    await m('cluster-2').put(service(ns, 'db', 'None', [{ port: 5432, protocol: 'TCP' }]));
    await m('cluster-2').put(mcsExport(ns, 'db'));
    await nextSecond();
    await m('cluster-1').put(service(ns, 'db', '10.96.1.3', [{ port: 5432, protocol: 'TCP' }]));
    await m('cluster-1').put(mcsExport(ns, 'db'));
    const c = await until('Conflict on cluster-1', async () => {
      const c = await condition('cluster-1', ns, 'db', 'Conflict');
      return c?.status === 'True' && c;
    });
    expect(c).toMatchObject({ reason: 'TypeConflict' });
    expect(c.message).toMatch(/cluster-1 exports a ClusterSetIP service, default\/default\/default\/cluster-2 \(oldest\) a Headless one/);
    expect(await condition('cluster-2', ns, 'db', 'Conflict')).toMatchObject({ status: 'True', reason: 'TypeConflict' });
    for (const name of MEMBERS) {
      const imp = await until(`import in ${name}`, () => mcsImport(name, ns, 'db'));
      expect(imp.spec.type).toBe('Headless');
      expect(imp.spec.ips).toBeUndefined();
      // No address, so no EndpointSlice.
      expect(await m(name).object(Kinds.EndpointSlice, ns, 'db-ecnet')).toBeUndefined();
      // The left-out export is not among the exporting clusters.
      const withClusters = await until(`status.clusters in ${name}`, async () => {
        const i = await mcsImport(name, ns, 'db');
        return !!i?.status?.clusters?.length && i;
      });
      expect(withClusters.status!.clusters).toEqual([{ cluster: 'cluster-2' }]);
    }
  });

  it('the import exists in every member, the exporting one included, with its address there', async () => {
    const ns = 'conf-everywhere';
    await inEveryMember(ns);
    await m('cluster-2').put(service(ns, 'echo', '10.96.2.4', [{ name: 'http', port: 8080, protocol: 'TCP' }], { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } } }));
    await m('cluster-2').put(mcsExport(ns, 'echo'));
    for (const name of MEMBERS) {
      const imp = await until(`import with ips in ${name}`, async () => {
        const i = await mcsImport(name, ns, 'echo');
        return !!i?.spec.ips?.length && i;
      });
      expect(imp.metadata.labels?.['app.kubernetes.io/managed-by']).toBe('ecnet-controller');
      expect(imp.spec).toMatchObject({ type: 'ClusterSetIP', sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } } });
      // The address of the name there: the exporter's own Service, elsewhere the derived one.
      const local = (await m(name).object<Service>(Kinds.Service, ns, 'echo'))!;
      expect(imp.spec.ips).toEqual([local.spec.clusterIP]);
      if (name === 'cluster-2') expect(imp.spec.ips).toEqual(['10.96.2.4']);
      const withClusters = await until(`status in ${name}`, async () => {
        const i = await mcsImport(name, ns, 'echo');
        return !!i?.status?.clusters?.length && i;
      });
      expect(withClusters.status!.clusters).toEqual([{ cluster: 'cluster-2' }]);
    }
    await until('Ready', async () => (await condition('cluster-2', ns, 'echo', 'Ready'))?.status === 'True');
  });

  it("clusterset.local resolves to the import's ClusterSetIP in every importing member", async () => {
    // CoreDNS itself does not run here, nor a pod. On the API servers, the name is put through daemonset/coredns's
    // rewrite (clusterset.local to cluster.local) and answered as CoreDNS's kubernetes plugin would, from the
    // member's Service of the rewritten name. In local mode, it is looked up in the /etc/hosts `ecnet local`
    // writes into each pod (src/local/endpoints.ts hostsText, from the member's Services).
    const ns = 'conf-dns';
    await inEveryMember(ns);
    await m('cluster-1').put(service(ns, 'web', '10.96.1.11', [{ name: 'http', port: 80, protocol: 'TCP' }]));
    await m('cluster-1').put(mcsExport(ns, 'web'));
    await m('cluster-3').put(service(ns, 'web', '10.96.3.11', [{ name: 'http', port: 80, protocol: 'TCP' }]));
    await m('cluster-3').put(mcsExport(ns, 'web'));
    for (const name of MEMBERS) {
      const imp = await until(`import with ips in ${name}`, async () => {
        const i = await mcsImport(name, ns, 'web');
        return !!i?.spec.ips?.length && i?.status?.clusters?.length === 2 && i;
      });
      expect(imp.spec.type).toBe('ClusterSetIP');
      expect(await backend.resolveClusterSet(name, ns, 'web'), name).toBe(imp.spec.ips![0]);
    }
    // cluster-2 exports nothing: its answer is the derived Service's address, not an exporter's.
    expect(await backend.resolveClusterSet('cluster-2', ns, 'web')).not.toMatch(/^10\.96\.[13]\.11$/);
    // A name nothing exports has no answer.
    expect(await backend.resolveClusterSet('cluster-2', ns, 'nothing')).toBeUndefined();
  });

  // API servers only: it counts the requests that try to create the slice, which only a server's request log
  // shows (the local source has no requests, and writes by reading its files).
  if (api) {
    it("a slice of ecnet's name that is not ecnet's is left alone, without a retry storm", async () => {
      const ns = 'conf-squat';
      await inEveryMember(ns);
      // A tenant's slice named as ecnet's would be, without ecnet's labels, before the export.
      await m('cluster-2').put(k({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'sq-ecnet', namespace: ns, labels: { team: 'x' } }, addressType: 'IPv4', endpoints: [{ addresses: ['10.9.9.9'] }], ports: [] }));
      await m('cluster-1').put(service(ns, 'sq', '10.96.1.9', [{ name: 'http', port: 80, protocol: 'TCP' }]));
      await m('cluster-1').put(mcsExport(ns, 'sq'));
      for (const name of MEMBERS) await until(`import in ${name}`, async () => (await mcsImport(name, ns, 'sq'))?.spec.ips?.length);
      await until('Ready', async () => (await condition('cluster-1', ns, 'sq', 'Ready'))?.status === 'True');
      // Each attempt to create it (the source reads the name first, then would POST).
      const creates = () => api.server('cluster-2').requests.filter((r) => r.path.includes(`/namespaces/${ns}/endpointslices`)).length;
      const before = creates();
      await sleep(2_000);
      // Not retried pass after pass (a failed write would be, with backoff): at the resync only.
      expect(creates() - before).toBe(0);
      expect((await m('cluster-2').object<EndpointSlice>(Kinds.EndpointSlice, ns, 'sq-ecnet'))?.metadata.labels).toEqual({ team: 'x' });
      expect(await m('cluster-3').object<EndpointSlice>(Kinds.EndpointSlice, ns, 'sq-ecnet')).toBeDefined();
    });
  }

  it('an MCS import has an EndpointSlice labelled multicluster.kubernetes.io/service-name, pointing at its ClusterSetIP, in every member; it goes with the import', async () => {
    const ns = 'conf-slices';
    await inEveryMember(ns);
    const slice = (name: MemberName) => m(name).object<EndpointSlice>(Kinds.EndpointSlice, ns, 'echo-ecnet');
    // Someone else's slice for the same import (another MCS implementation's, say): ecnet leaves it alone.
    const theirs: EndpointSlice = {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'echo-theirs', namespace: ns, labels: { 'multicluster.kubernetes.io/service-name': 'echo', 'endpointslice.kubernetes.io/managed-by': 'someone-else' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.1.2.3'] }],
      ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    };
    await m('cluster-2').put(k(theirs));
    await m('cluster-1').put(service(ns, 'echo', '10.96.1.7', [{ name: 'http', port: 80, protocol: 'TCP', appProtocol: 'http' }]));
    await m('cluster-1').put(mcsExport(ns, 'echo'));
    for (const name of MEMBERS) {
      const imp = await until(`import with ips in ${name}`, async () => {
        const i = await mcsImport(name, ns, 'echo');
        return !!i?.spec.ips?.length && i;
      });
      const s = await until(`slice in ${name}`, () => slice(name));
      expect(s.metadata.labels).toEqual({
        'multicluster.kubernetes.io/service-name': 'echo',
        'endpointslice.kubernetes.io/managed-by': 'ecnet-controller',
        'app.kubernetes.io/managed-by': 'ecnet-controller',
      });
      // Never kubernetes.io/service-name: kube-proxy would program the derived Service's ClusterIP with it.
      expect(s.metadata.labels?.['kubernetes.io/service-name']).toBeUndefined();
      expect(s.addressType).toBe('IPv4');
      expect(s.endpoints).toEqual([{ addresses: [imp.spec.ips![0]], conditions: { ready: true, serving: true, terminating: false } }]);
      expect(s.ports).toEqual([{ name: 'http', protocol: 'TCP', port: 80, appProtocol: 'http' }]);
    }
    expect((await slice('cluster-1'))!.endpoints![0]!.addresses).toEqual(['10.96.1.7']);
    // The import's ports change: so do the slices'.
    await m('cluster-1').put(service(ns, 'echo', '10.96.1.7', [{ name: 'http', port: 80, protocol: 'TCP', appProtocol: 'http' }, { name: 'grpc', port: 9090, protocol: 'TCP' }]));
    for (const name of MEMBERS) await until(`two ports in ${name}`, async () => (await slice(name))?.ports?.length === 2);
    expect((await slice('cluster-3'))!.ports!.map((p) => p.name).sort()).toEqual(['grpc', 'http']);
    // Converged: nothing more is written (a slice is written only when it differs).
    const before = await backend.sliceWrites();
    await m('cluster-1').put(mcsExport(ns, 'echo'));
    await sleep(300);
    expect(await backend.sliceWrites()).toBe(before);
    // Withdrawn: the slices go with the imports; the other one stays.
    await m('cluster-1').remove(Kinds.McsServiceExport, ns, 'echo');
    await until('imports withdrawn everywhere', () => noMcsImportAnywhere(ns, 'echo'), WITHDRAW_MS);
    await until('slices gone everywhere', async () => (await Promise.all(MEMBERS.map(slice))).every((s) => !s), WITHDRAW_MS);
    expect(await m('cluster-2').object<EndpointSlice>(Kinds.EndpointSlice, ns, 'echo-theirs')).toMatchObject({ endpoints: [{ addresses: ['10.1.2.3'] }] });
  });

  it(`removing the last export withdraws the import from every member within the stated bound (${WITHDRAW_MS} ms; on the watch event, not the resync)`, async () => {
    const ns = 'conf-withdraw';
    await inEveryMember(ns);
    for (const name of ['cluster-1', 'cluster-3'] as const) {
      await m(name).put(service(ns, 'queue', name === 'cluster-1' ? '10.96.1.5' : '10.96.3.5', [{ port: 5672, protocol: 'TCP' }]));
      await m(name).put(mcsExport(ns, 'queue'));
    }
    for (const name of MEMBERS) await until(`import from both in ${name}`, async () => (await mcsImport(name, ns, 'queue'))?.status?.clusters?.length === 2);
    // One export of two gone: the import stays, from the other.
    await m('cluster-1').remove(Kinds.McsServiceExport, ns, 'queue');
    for (const name of MEMBERS) await until(`import from cluster-3 only in ${name}`, async () => (await mcsImport(name, ns, 'queue'))?.status?.clusters?.length === 1);
    expect((await mcsImport('cluster-2', ns, 'queue'))!.status!.clusters).toEqual([{ cluster: 'cluster-3' }]);
    // The last one.
    const t0 = Date.now();
    await m('cluster-3').remove(Kinds.McsServiceExport, ns, 'queue');
    await until('imports withdrawn everywhere', () => noMcsImportAnywhere(ns, 'queue'), WITHDRAW_MS, 5);
    const took = Date.now() - t0;
    if (process.env.ECNET_MCS_TIMINGS) process.stderr.write(`withdrawal on ${backend.name}: ${took} ms\n`);
    expect(took).toBeLessThan(WITHDRAW_MS);
    // The derived Service of the member that exported nothing goes too; the exporters' own Services stay.
    await until('derived Service gone', async () => !(await m('cluster-2').object(Kinds.Service, ns, 'queue')), WITHDRAW_MS);
    expect(await m('cluster-1').object(Kinds.Service, ns, 'queue')).toBeDefined();
  });

  it('a Service deleted before its export leaves no import behind (and the export says why)', async () => {
    const ns = 'conf-service-first';
    await inEveryMember(ns);
    await m('cluster-1').put(service(ns, 'cache', '10.96.1.6', [{ port: 6379, protocol: 'TCP' }]));
    await m('cluster-1').put(mcsExport(ns, 'cache'));
    for (const name of MEMBERS) await until(`import in ${name}`, () => mcsImport(name, ns, 'cache'));
    await m('cluster-1').remove(Kinds.Service, ns, 'cache');
    const valid = await until('Valid=False', async () => {
      const c = await condition('cluster-1', ns, 'cache', 'Valid');
      return c?.status === 'False' && c;
    });
    expect(valid.reason).toBe('NoService');
    expect(await condition('cluster-1', ns, 'cache', 'Ready')).toMatchObject({ status: 'False' });
    for (const name of MEMBERS) await until(`no import in ${name}`, async () => !(await mcsImport(name, ns, 'cache')), WITHDRAW_MS);
    await m('cluster-1').remove(Kinds.McsServiceExport, ns, 'cache');
    await sleep(200);
    for (const name of MEMBERS) {
      expect(await mcsImport(name, ns, 'cache'), name).toBeUndefined();
      expect(await flomeshImport(name, ns, 'cache'), name).toBeUndefined();
      expect(await m(name).object(Kinds.Service, ns, 'cache'), name).toBeUndefined();
    }
  });

  it('an export of an ExternalName Service is not Valid (InvalidServiceType) and imports nothing', async () => {
    const ns = 'conf-external';
    await inEveryMember(ns);
    await m('cluster-3').put(k({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'ext', namespace: ns }, spec: { type: 'ExternalName', externalName: 'example.internal' } }));
    await m('cluster-3').put(mcsExport(ns, 'ext'));
    const valid = await until('Valid=False', () => condition('cluster-3', ns, 'ext', 'Valid'));
    expect(valid).toMatchObject({ status: 'False', reason: 'InvalidServiceType' });
    expect(await condition('cluster-3', ns, 'ext', 'Conflict')).toMatchObject({ status: 'False' });
    for (const name of MEMBERS) expect(await mcsImport(name, ns, 'ext')).toBeUndefined();
  });

  it('both APIs in one cluster set: a Service exported both ways gets one import of each kind, with the same ports and address', async () => {
    const ns = 'conf-both';
    await inEveryMember(ns);
    await m('cluster-1').put(service(ns, 'both', '10.96.1.7', [{ name: 'http', port: 80, protocol: 'TCP' }]));
    await m('cluster-1').put(flomeshExport(ns, 'both'));
    await m('cluster-1').put(mcsExport(ns, 'both'));
    await m('cluster-2').put(service(ns, 'both', '10.96.2.7', [{ name: 'admin', port: 9000, protocol: 'TCP' }]));
    await m('cluster-2').put(mcsExport(ns, 'both'));
    for (const name of MEMBERS) {
      const done = async () => {
        const f = await flomeshImport(name, ns, 'both');
        const i = await mcsImport(name, ns, 'both');
        return !!f?.spec.ips?.length && !!i?.spec.ips?.length && f.spec.ports.length === 2 && i.spec.ports.length === 2 && f.status?.clusters?.length === 2 && i.status?.clusters?.length === 2 && { f, i };
      };
      const { f, i } = await until(`both imports in ${name}`, done);
      expect(await m(name).objects(Kinds.ServiceImport, ns)).toHaveLength(1);
      expect(await m(name).objects(Kinds.McsServiceImport, ns)).toHaveLength(1);
      expect(i.spec.ports).toEqual(f.spec.ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), protocol: p.protocol, port: p.port })));
      expect(i.spec.ips).toEqual(f.spec.ips);
      expect(i.spec.type).toBe(f.spec.type);
      expect(i.spec.sessionAffinity).toBe(f.spec.sessionAffinity);
      // The same exporting clusters: the flomesh.io import names them by key, the MCS one by cluster id.
      expect(i.status!.clusters!.map((c) => c.cluster)).toEqual(f.status!.clusters!.map((c) => c.cluster.split('/')[3]));
    }
    // Both exports of cluster-1 have their conditions.
    await until('MCS export Ready', async () => (await condition('cluster-1', ns, 'both', 'Ready'))?.status === 'True');
    await until('flomesh export Valid', async () => (await m('cluster-1').object<ServiceExport>(Kinds.ServiceExport, ns, 'both'))?.status?.conditions?.find((c) => c.type === 'Valid')?.status === 'True');
    // The MCS export withdrawn from cluster-1: the flomesh.io import stays, and so does the MCS one (cluster-2's export).
    await m('cluster-1').remove(Kinds.McsServiceExport, ns, 'both');
    await sleep(200);
    for (const name of MEMBERS) {
      expect((await flomeshImport(name, ns, 'both'))?.spec.ports).toHaveLength(2);
      expect((await mcsImport(name, ns, 'both'))?.spec.ports).toHaveLength(2);
    }
    // And cluster-2's too: no MCS export is left, so no MCS import; the flomesh.io one stays.
    await m('cluster-2').remove(Kinds.McsServiceExport, ns, 'both');
    for (const name of MEMBERS) await until(`MCS import gone in ${name}`, async () => !(await mcsImport(name, ns, 'both')), WITHDRAW_MS);
    for (const name of MEMBERS) await until(`flomesh import of cluster-1 only in ${name}`, async () => (await flomeshImport(name, ns, 'both'))?.spec.ports.length === 1);
  });

  it("an MCS-only export gives MCS imports, and the flomesh.io import the node agents route by, alike", async () => {
    const ns = 'conf-mcs-only';
    await inEveryMember(ns);
    await m('cluster-3').put(service(ns, 'only', '10.96.3.8', [{ port: 443, protocol: 'TCP' }]));
    await m('cluster-3').put(mcsExport(ns, 'only'));
    for (const name of MEMBERS) await until(`MCS import in ${name}`, async () => (await mcsImport(name, ns, 'only'))?.spec.ips?.length);
    await until('Ready', async () => (await condition('cluster-3', ns, 'only', 'Ready'))?.status === 'True');
    for (const name of MEMBERS) {
      const f = await flomeshImport(name, ns, 'only');
      expect(f?.spec.ports.map((p) => p.port), name).toEqual([443]);
      expect(f?.spec.ips, name).toEqual((await mcsImport(name, ns, 'only'))?.spec.ips);
    }
  });
});

// API servers only: a member without the MCS CRDs is an API server that answers 404 for multicluster.x-k8s.io.
// A local cluster directory has no CRDs: every kind can be written there, so there is no such member.
describe('a member whose API server has no MCS CRDs', () => {
  let set: ControlledSet;
  let full: KubeApiServer;
  let bare: KubeApiServer;

  beforeAll(async () => {
    full = await startKubeApiServer();
    // As a real server with only the flomesh.io CRDs installed: multicluster.x-k8s.io answers 404.
    bare = await startKubeApiServer({ strict: true });
    for (const [file, text] of crdFiles()) if (file.startsWith('flomesh.io_')) bare.put(parse(text) as KubeObject);
    set = await startControlledSet([['full', full], ['bare', bare]], { subnet: '10.0.3', resyncMs: 600_000 });
  });
  afterAll(async () => {
    await set?.close();
  });

  it('is read without them: flomesh.io imports as before, no MCS import there, and Ready does not wait for it', async () => {
    const probe = createKubernetesSource({ kubeconfig: bare.kubeconfig });
    await expect(probe.list(Kinds.McsServiceImport)).rejects.toMatchObject({ code: 'ECNET_SOURCE_NOT_FOUND' });
    probe.destroy();
    const ns = 'conf-bare';
    for (const s of [full, bare]) s.put(namespace(ns));
    full.put(service(ns, 'svc', '10.96.4.1', [{ port: 80, protocol: 'TCP' }]));
    full.put(flomeshExport(ns, 'svc'));
    full.put(mcsExport(ns, 'svc'));
    await until('flomesh.io import in bare', () => bare.object<ServiceImport>(Kinds.ServiceImport, ns, 'svc')?.spec.ips?.length);
    await until('MCS import in full', () => full.object<McsServiceImport>(Kinds.McsServiceImport, ns, 'svc'));
    const ready = await until('Ready', () => full.object<McsServiceExport>(Kinds.McsServiceExport, ns, 'svc')?.status?.conditions?.find((c) => c.type === 'Ready' && c.status === 'True'));
    expect(ready.reason).toBe('Ready');
    const managed = set.hubServer.object<Cluster>(Kinds.Cluster, undefined, 'bare')?.status?.conditions?.find((c) => c.type === 'Managed');
    expect(managed?.status).toBe('True');
    // No write was tried there.
    expect(bare.requests.filter((r) => r.path.includes('multicluster.x-k8s.io') && r.method !== 'GET')).toEqual([]);
  });
});
