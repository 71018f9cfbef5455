// Review proofs: what a hostile tenant or member can do through the MCS API's objects.
import { request, createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { endpointSlice, service, serviceExport } from './helpers/objects.js';
import { staticCatalog } from '../src/gateway/catalog.js';
import { Gateway } from '../src/gateway/gateway.js';
import { localService } from '../src/gateway/live-catalog.js';
import { aggregate } from '../src/controlplane/aggregate.js';
import { planMember } from '../src/controlplane/member-plan.js';

const get = (port: number, path: string) =>
  new Promise<number>((resolve, reject) => {
    const r = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    r.on('error', reject);
    r.end();
  });

describe('an MCS export next to a flomesh.io export with targetClusters', () => {
  const servers: Server[] = [];
  let gw: Gateway | undefined;
  afterAll(async () => {
    await gw?.close(100);
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  it('does not make its ingress rules public (an export for some clusters only serves no ingress caller)', async () => {
    const backend = createServer((_req, res) => res.end('secret\n'));
    servers.push(backend);
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
    const port = (backend.address() as AddressInfo).port;
    const svc = service('shop', 'admin', { clusterIP: '10.96.0.9', ports: [{ name: 'http', port: 80 }] });
    const slice = endpointSlice('shop', 'admin', ['127.0.0.1'], { portName: 'http', port });
    // Open to cluster-2 only, with an ingress rule: the gateway answers 403 to every ingress caller.
    const narrow = serviceExport('shop', 'admin', { targetClusters: ['default/default/default/cluster-2'], rules: [{ portNumber: 80, path: '/admin', pathType: 'Prefix' }] });
    const mcs = { apiVersion: 'multicluster.x-k8s.io/v1alpha1' as const, kind: 'ServiceExport' as const, metadata: { name: 'admin', namespace: 'shop', creationTimestamp: '2026-01-01T00:00:00Z' } };
    // (localEndpoints leaves loopback out: the backend's address is put in by hand.)
    const reach = { ports: new Map([[80, [{ ip: '127.0.0.1', port }]]]) };
    const alone = { ...localService(svc, [slice], narrow)!, ...reach };
    const both = { ...localService(svc, [slice], narrow, undefined, mcs)!, ...reach };
    gw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog: staticCatalog([alone]), headerTimeoutMs: 1000, ingressIdleMs: 1000 });
    expect(await get(gw.address.port, '/admin/x')).toBe(403);
    await gw.close(100);
    // The same export with an MCS ServiceExport beside it (cluster-set wide, not public).
    gw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog: staticCatalog([both]), headerTimeoutMs: 1000, ingressIdleMs: 1000 });
    expect(await get(gw.address.port, '/admin/x')).toBe(403);
  });
});

describe('a malformed MCS ServiceExport status (a hostile member API server, or a CRD without the schema)', () => {
  it('does not throw out of the plan (which would fail every pass, for every member)', () => {
    const m = { name: 'c1', key: 'default/default/default/cluster-1' as const, gateway: { host: '10.0.0.1', port: 4443 } };
    const svc = service('shop', 'web', { clusterIP: '10.96.0.1', ports: [{ port: 80 }] });
    const mcsExp = { apiVersion: 'multicluster.x-k8s.io/v1alpha1' as const, kind: 'ServiceExport' as const, metadata: { name: 'web', namespace: 'shop', uid: 'u', creationTimestamp: '2026-01-01T00:00:00Z' } };
    const desired = aggregate([{ ...m, exports: [{ ...mcsExp, apiVersion: 'flomesh.io/v1alpha1', spec: { loadBalancer: 'RoundRobinLoadBalancer' }, api: 'mcs' } as never], services: [svc] }]).get('c1')!;
    for (const status of [{ conditions: 'broken' }, { conditions: [null, 7, 'x'] }, { conditions: { type: 'Valid' } }, 'nonsense']) {
      const plan = () => planMember({ member: 'c1', holds: { imports: [], services: [svc], exports: [], mcsImports: [], mcsExports: [{ ...mcsExp, status } as never] }, desired, now: '2026-01-02T00:00:00Z' });
      expect(plan, JSON.stringify(status)).not.toThrow();
      const write = plan().writes.find((w) => w.key === 'c1|McsServiceExport|shop/web');
      expect(write, JSON.stringify(status)).toBeDefined();
    }
  });
});
