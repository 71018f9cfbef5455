// The node proxy under a flood from one pod, with the real datapath: a client process in the test cgroup opens
// 2,000 connections to a redirected ClusterIP from one address, each tunnelled through a gateway to a backend
// that holds it open. The proxy holds the pod to its per-source limit and resets the rest at once, its memory
// stays under a stated bound, and another pod is still served while the flood holds its connections. Root only.
import { spawn } from 'node:child_process';
import { type Server, type Socket, createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Datapath } from '../src/bpf/datapath.js';
import { connectMarked } from '../src/native/sockets.js';
import { defaults } from '../src/config.js';
import { staticCatalog } from '../src/gateway/catalog.js';
import { Gateway } from '../src/gateway/gateway.js';
import { packageRoot } from '../src/paths.js';
import { NodeProxy, type Route } from '../src/proxy/proxy.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { type TestCgroup, type TestNetns, cleanupAll, makeCgroup, makeNetns, makePinDir } from './helpers/host.js';

const CLUSTER_IP = '10.96.0.10';
const PER_SOURCE = 300;
const FLOOD = 2_000;

function flood(cgroup: string): Promise<{ open: number; reset: number; timeout: number; other: string }> {
  const args = [join(packageRoot, 'test', 'fixtures', 'flood.mjs'), JSON.stringify({ cgroup, target: `${CLUSTER_IP}:8080`, from: '127.0.0.2', other: '127.0.0.3', count: FLOOD, timeoutMs: 10_000 })];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`flood client exited ${code}: ${err}`))));
  });
}

describeKernel('node proxy under a flood from one pod', () => {
  const pins = makePinDir();
  let ns: TestNetns | undefined;
  let cg: TestCgroup | undefined;
  let dp: Datapath | undefined;
  let proxy: NodeProxy | undefined;
  let gateway: Gateway | undefined;
  let backend: Server | undefined;
  const conns = new Set<Socket>();
  const route: Route = {
    service: 'hold',
    namespace: 'ns',
    port: 8080,
    exporters: [{ clusterKey: 'default/default/default/cluster-1', gateway: { host: '127.0.0.11', port: 8081 } }],
    policy: { lbType: 'ActiveActive', targets: [{ clusterKey: 'default/default/default/cluster-1' }] },
    localEndpoints: [],
  };

  beforeAll(async () => {
    ns = makeNetns(['10.96.0.0/16']);
    ns.enter();
    cg = makeCgroup();
    dp = Datapath.open({ bpffs: pins.path, cgroup: cg.path, objectDir: defaults.objectDir, settings: { proxy: { ip: '127.0.0.1', port: 15001 }, proxyMark: defaults.proxyMark } });
    dp.services.set({ ip: CLUSTER_IP, port: 8080, protocol: 'tcp' }, { id: 1, disabled: false });
    // A backend that greets and holds every connection: each one the flood keeps costs a tunnel end to end.
    backend = createServer((c) => {
      conns.add(c);
      c.on('close', () => conns.delete(c));
      c.on('error', () => undefined);
      c.write('hi\n');
    });
    await new Promise<void>((r) => backend!.listen(9000, '127.0.0.21', r));
    gateway = await Gateway.start({
      host: '127.0.0.11',
      port: 8081,
      catalog: staticCatalog([{ namespace: 'ns', name: 'hold', ports: new Map([[8080, [{ ip: '127.0.0.21', port: 9000 }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } }]),
      limits: { perSource: 4_000 },
    });
    proxy = await NodeProxy.start({
      host: '127.0.0.1',
      port: 15001,
      localCluster: 'default/default/default/cluster-2',
      routes: { lookup: (ip, port) => (ip === CLUSTER_IP && port === 8080 ? route : undefined) },
      originalDestination: (s) => dp!.takeOriginalDestination(s),
      connect: (host, port) => connectMarked({ host, port, mark: defaults.proxyMark }),
      limits: { total: 1_000, perSource: PER_SOURCE },
    });
  });
  afterAll(async () => {
    for (const c of conns) c.destroy();
    await proxy?.close(100);
    await gateway?.close(100);
    backend?.close();
    cleanupAll(
      () => dp?.uninstall(),
      () => cg?.remove(),
      () => pins.remove(),
      () => ns?.remove(),
    );
  });

  it(`holds one pod to ${PER_SOURCE} of ${FLOOD.toLocaleString('en-US')} connections, resets the rest at once, and still serves another pod`, async () => {
    const heapBefore = process.memoryUsage().heapUsed;
    const r = await flood(cg!.path);
    expect(r).toEqual({ open: PER_SOURCE, reset: FLOOD - PER_SOURCE, timeout: 0, other: 'open' });
    expect(proxy!.stats.limited).toBe(FLOOD - PER_SOURCE);
    // The pod's 300 tunnels, another pod's one, and 1,700 refusals: a bound on what they cost, not a measurement.
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 << 20);
  }, 120_000);
});
