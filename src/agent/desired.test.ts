import { describe, expect, it } from 'vitest';
import type { Service } from '../api/core.js';
import type { ServiceImport } from '../api/flomesh.js';
import type { EndpointSlice } from '../api/core.js';
import { dialable } from '../endpoints/dialable.js';
import { localEndpoints } from '../endpoints/slices.js';
import { desiredNode, redirectId } from './desired.js';

const imp = (ips: string[] | undefined, extra: Partial<ServiceImport['spec']> = {}): ServiceImport => ({
  apiVersion: 'flomesh.io/v1alpha1',
  kind: 'ServiceImport',
  metadata: { name: 'httpbin', namespace: 'httpbin' },
  spec: {
    type: 'ClusterSetIP',
    sessionAffinity: 'None',
    ...(ips ? { ips } : {}),
    ports: [
      {
        protocol: 'TCP',
        port: 8080,
        endpoints: [{ clusterKey: 'default/default/default/cluster-1', target: { host: 'gw-1.example.org', ip: '', port: 80, path: '/' } }],
      },
      { protocol: 'UDP', port: 53, endpoints: [] },
    ],
    ...extra,
  },
});
const service: Service = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'httpbin', namespace: 'httpbin' },
  spec: { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 8080, targetPort: 'web' }] },
};
const slice = (ready: boolean[]): EndpointSlice => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: 'httpbin-abc', namespace: 'httpbin', labels: { 'kubernetes.io/service-name': 'httpbin' } },
  endpoints: ready.map((r, i) => ({ addresses: [`10.42.0.${i + 1}`], conditions: { ready: r } })),
  ports: [{ name: 'http', port: 9080, protocol: 'TCP' }],
});

describe('a node\'s desired state', () => {
  it('redirects every ClusterIP:port of an imported service (TCP only), routed to the exporters with the policy', () => {
    const d = desiredNode({
      localCluster: 'default/default/default/cluster-2',
      imports: [imp(['10.96.0.10'])],
      policies: [{ apiVersion: 'flomesh.io/v1alpha1', kind: 'GlobalTrafficPolicy', metadata: { name: 'httpbin', namespace: 'httpbin' }, spec: { lbType: 'ActiveActive' } }],
      services: [service],
      endpointSlices: [],
    });
    expect(d.redirects.map((r) => `${r.ip}:${r.port}`)).toEqual(['10.96.0.10:8080']);
    // The id the agent reports with the route (for `ecnet bpf dump`) is the one it programs.
    expect(d.redirects[0]!.id).toBe(redirectId('httpbin/httpbin', 8080));
    expect(d.routes.get('10.96.0.10:8080')).toMatchObject({
      service: 'httpbin',
      namespace: 'httpbin',
      port: 8080,
      exporters: [{ clusterKey: 'default/default/default/cluster-1', gateway: { host: 'gw-1.example.org', port: 80 } }],
      policy: { lbType: 'ActiveActive' },
      localEndpoints: [],
    });
  });

  it('no address yet (the derived Service not created) or headless: nothing to redirect', () => {
    const base = { localCluster: 'x/x/x/x', policies: [], services: [], endpointSlices: [] };
    expect(desiredNode({ ...base, imports: [imp(undefined)] }).redirects).toEqual([]);
    expect(desiredNode({ ...base, imports: [imp(['10.96.0.10'], { type: 'Headless' })] }).redirects).toEqual([]);
  });

  it("only this cluster's ClusterIP of the same-named Service is redirected; never the cluster's own machinery", () => {
    const aa = (ns: string, name: string) => ({ apiVersion: 'flomesh.io/v1alpha1' as const, kind: 'GlobalTrafficPolicy' as const, metadata: { name, namespace: ns }, spec: { lbType: 'ActiveActive' as const } });
    // An import claiming the API server's address and another team's VIP besides its own.
    const greedy = imp(['10.96.0.10', '10.96.0.1', '10.96.99.99']);
    const d = desiredNode({ localCluster: 'default/default/default/cluster-2', imports: [greedy], policies: [aa('httpbin', 'httpbin')], services: [service], endpointSlices: [] });
    expect(d.redirects.map((r) => r.ip)).toEqual(['10.96.0.10']);
    expect(d.problems[0]!.error).toMatch(/10\.96\.0\.1, 10\.96\.99\.99 are not the ClusterIP of Service httpbin\/httpbin/);
    // No Service of that name here: nothing.
    expect(desiredNode({ localCluster: 'default/default/default/cluster-2', imports: [imp(['10.96.0.10'])], policies: [aa('httpbin', 'httpbin')], services: [], endpointSlices: [] }).redirects).toEqual([]);
    for (const [ns, name] of [['default', 'kubernetes'], ['kube-system', 'kube-dns']] as const) {
      const i = imp(['10.96.0.1']);
      i.metadata = { name, namespace: ns };
      const own: Service = { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec: { clusterIP: '10.96.0.1', ports: [{ port: 8080 }] } };
      const m = desiredNode({ localCluster: 'default/default/default/cluster-2', imports: [i], policies: [aa(ns, name)], services: [own], endpointSlices: [] });
      expect(m.redirects).toEqual([]);
      expect(m.problems[0]!.error).toMatch(/cluster's own Service/);
    }
  });

  it('what the datapath cannot take is left out by a stated rule, never the whole set: one ip:port once, IPs only, up to capacity', () => {
    const aa = (name: string) => ({ apiVersion: 'flomesh.io/v1alpha1' as const, kind: 'GlobalTrafficPolicy' as const, metadata: { name, namespace: 'httpbin' }, spec: { lbType: 'ActiveActive' as const } });
    const named = (name: string, ip: string): [ServiceImport, Service] => {
      const i = imp([ip]);
      i.metadata.name = name;
      return [i, { ...service, metadata: { name, namespace: 'httpbin' }, spec: { ...service.spec, clusterIP: ip } }];
    };
    const all = [named('a', '10.96.0.1'), named('b', '10.96.0.1'), named('c', 'not-an-ip'), named('d', '10.96.0.4'), named('e', '10.96.0.5')];
    const d = desiredNode({
      localCluster: 'default/default/default/cluster-2',
      imports: all.map(([i]) => i).reverse(),
      policies: ['a', 'b', 'c', 'd', 'e'].map(aa),
      services: all.map(([, s]) => s),
      endpointSlices: [],
      capacity: 2,
    });
    expect(d.redirects.map((r) => r.ip)).toEqual(['10.96.0.1', '10.96.0.4']);
    expect(d.routes.get('10.96.0.1:8080')!.service).toBe('a');
    expect(d.problems.map((p) => `${p.import}: ${p.error}`)).toEqual([
      'httpbin/b: 10.96.0.1:8080 is redirected for httpbin/a already: left out',
      'httpbin/c: not-an-ip is not an IP address: not redirected',
      'httpbin/e: the datapath holds 2 redirects: 10.96.0.5:8080 left out',
    ]);
  });

  it('endpoints anyone can write never open a way in: no names, FQDN slices, loopback, link-local or denied addresses, no bad ports', () => {
    for (const ip of [
      'localhost', 'metadata.google.internal', '127.0.0.1', '127.9.9.9', '0.0.0.0', '169.254.169.254', '::1', '::', 'fe80::1', '::ffff:127.0.0.1', '10.0.2.4',
      // other spellings of the same
      '::ffff:7f00:1', '0:0:0:0:0:ffff:7f00:1', '0:0:0:0:0:0:0:1', '::0:1', '::0', '0::', '::1%lo', '::ffff:0:0', '::ffff:a9fe:a9fe', '::ffff:a00:204', '::7f00:1',
      '64:ff9b::7f00:1', 'fd00:ec2::254', 'ff02::1', 'fe80::1%eth0',
      // IPv4 multicast, reserved, broadcast
      '224.0.0.1', '239.255.255.250', '240.0.0.1', '255.255.255.255', '::ffff:224.0.0.1',
    ]) {
      expect(dialable(ip, new Set(['10.0.2.4'])), ip).toBe(false);
    }
    for (const ip of ['10.42.0.7', 'fd00::7', '192.168.1.1']) expect(dialable(ip), ip).toBe(true);
    const hostile: EndpointSlice = { ...slice([true]), endpoints: [{ addresses: ['localhost', '127.0.0.1', '169.254.169.254', '10.42.0.9'] }] };
    expect(localEndpoints(service, [hostile]).get(8080)).toEqual([{ ip: '10.42.0.9', port: 9080 }]);
    expect(localEndpoints(service, [{ ...hostile, addressType: 'FQDN' }]).get(8080)).toEqual([]);
    expect(localEndpoints(service, [{ ...hostile, ports: [{ name: 'http', port: 70000, protocol: 'TCP' }] }]).get(8080)).toEqual([]);
    expect(localEndpoints(service, [hostile], new Set(['10.42.0.9'])).get(8080)).toEqual([]);
  });

  it('local endpoints: ready ones only, with the target port the slices name', () => {
    expect(localEndpoints(service, [slice([true, false, true])]).get(8080)).toEqual([
      { ip: '10.42.0.1', port: 9080 },
      { ip: '10.42.0.3', port: 9080 },
    ]);
  });

  describe('the exporting cluster keeps its own traffic unless its policy may send it elsewhere', () => {
    const c1 = 'default/default/default/cluster-1';
    const c3 = 'default/default/default/cluster-3';
    // httpbin exported by cluster-1 (this node's cluster, with ready endpoints) and by cluster-3.
    const exported = (): ServiceImport => {
      const i = imp(['10.96.0.10']);
      i.spec.ports[0]!.endpoints.unshift({ clusterKey: c1, target: { host: '', ip: '10.0.2.4', port: 80, path: '/' } });
      i.spec.ports[0]!.endpoints[1]!.clusterKey = c3;
      return i;
    };
    const gtp = (spec: Record<string, unknown>) => [{ apiVersion: 'flomesh.io/v1alpha1' as const, kind: 'GlobalTrafficPolicy' as const, metadata: { name: 'httpbin', namespace: 'httpbin' }, spec }];
    const node = (policies: ReturnType<typeof gtp> | [], ready: boolean[] = [true]) =>
      desiredNode({ localCluster: c1, imports: [exported()], policies: policies as never, services: [service], endpointSlices: [slice(ready)] });
    const redirected = (d: ReturnType<typeof desiredNode>) => d.redirects.map((r) => `${r.ip}:${r.port}`);

    it('no policy or Locality with ready local endpoints: left to kube-proxy (kept, not redirected)', () => {
      for (const d of [node([]), node(gtp({ lbType: 'Locality' })), node(gtp({ lbType: 'Locality', targets: [{ clusterKey: c1 }] }))]) {
        expect(redirected(d)).toEqual([]);
        expect([...d.kept.keys()]).toEqual(['10.96.0.10:8080']);
        expect(d.routes.size).toBe(0);
      }
    });

    it('ActiveActive, FailOver with another target, Locality naming another cluster: redirected', () => {
      for (const p of [gtp({ lbType: 'ActiveActive' }), gtp({ lbType: 'FailOver', targets: [{ clusterKey: c3 }] }), gtp({ lbType: 'Locality', targets: [{ clusterKey: c3 }] })]) {
        const d = node(p);
        expect(redirected(d)).toEqual(['10.96.0.10:8080']);
        expect(d.kept.size).toBe(0);
      }
    });

    it('policies that can only stay here are kept: FailOver without other targets, ActiveActive with weight 0 elsewhere', () => {
      expect(redirected(node(gtp({ lbType: 'FailOver', targets: [{ clusterKey: c1 }] })))).toEqual([]);
      expect(redirected(node(gtp({ lbType: 'ActiveActive', targets: [{ clusterKey: c1 }, { clusterKey: c3, weight: 0 }] })))).toEqual([]);
    });

    it('a policy that refuses what kube-proxy would serve here is the proxy\'s to enforce: redirected', () => {
      const c9 = 'default/default/default/cluster-9';
      expect(redirected(node(gtp({ lbType: 'Locality', targets: [{ clusterKey: c9 }] })))).toEqual(['10.96.0.10:8080']);
      expect(redirected(node(gtp({ lbType: 'ActiveActive', targets: [{ clusterKey: c1, weight: 0 }, { clusterKey: c3, weight: 0 }] })))).toEqual(['10.96.0.10:8080']);
      // Nothing here and nothing elsewhere: kube-proxy refuses it as well as the proxy would.
      expect(redirected(node([], [false]))).toEqual([]);
    });

    it('an lbType the schema does not know: refused by the proxy, never guessed (redirected, no candidate)', () => {
      expect(redirected(node(gtp({ lbType: 'Bogus' })))).toEqual(['10.96.0.10:8080']);
    });

    it('an import that does not hold together is left out alone, with the reason; the others stay', () => {
      const other = imp(['10.96.0.11']);
      other.metadata.name = 'other';
      other.spec.ports[0]!.endpoints[0]!.clusterKey = c3;
      const broken = exported();
      (broken.spec.ports[0] as { endpoints: unknown }).endpoints = 'not a list';
      const policies = [...gtp({ lbType: 'ActiveActive' }), ...gtp({ lbType: 'ActiveActive' }).map((p) => ({ ...p, metadata: { name: 'other', namespace: 'httpbin' } }))];
      const otherService = { ...service, metadata: { name: 'other', namespace: 'httpbin' }, spec: { ...service.spec, clusterIP: '10.96.0.11' } };
      const d = desiredNode({ localCluster: c1, imports: [broken, other], policies: policies as never, services: [service, otherService], endpointSlices: [] });
      expect(redirected(d)).toEqual(['10.96.0.11:8080']);
      expect(d.problems.map((p) => p.import)).toEqual(['httpbin/httpbin']);
    });

    it('the only exporter is this cluster: nothing elsewhere to send to, whatever the policy', () => {
      const only = imp(['10.96.0.10']);
      only.spec.ports[0]!.endpoints[0]!.clusterKey = c1;
      const d = desiredNode({ localCluster: c1, imports: [only], policies: gtp({ lbType: 'ActiveActive' }) as never, services: [service], endpointSlices: [slice([true])] });
      expect(redirected(d)).toEqual([]);
    });
  });
});
