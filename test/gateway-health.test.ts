// The gateway's truth about itself on loopback: /readyz follows its catalog (synced, watches working, not
// closing) while /healthz stays liveness; /healthz/services tells each caller the services it may open a tunnel
// to, with ready endpoints not ejected, and answers 304 to an unchanged ETag; endpoints that fail to connect are
// ejected (tried last, left out of the native front's table), at most half of a service port's at once.
// No privileges.
import { request as httpsRequest } from 'node:https';
import { type Server, connect, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterKey } from '../src/api/flomesh.js';
import { type LocalService, staticCatalog } from '../src/gateway/catalog.js';
import { GatewayFront } from '../src/gateway/front.js';
import { Gateway } from '../src/gateway/gateway.js';
import { LiveCatalog } from '../src/gateway/live-catalog.js';
import { type KeyPair, createCa, issue } from '../src/identity/pki.js';
import { clusterSpiffeId } from '../src/identity/spiffe.js';
import type { KernelSplicer } from '../src/native/kernel-splice.js';
import type { NativeFrontEntry } from '../src/native/addon.js';
import { checkServices, parseServicesAnswer } from '../src/proxy/health-checks.js';
import type { InformerOptions, KindRef, KubeObject } from '../src/sources/source.js';
import { openTunnel } from '../src/tunnel/client.js';
import { MemorySource } from './helpers/memory-source.js';
import { clusterKey, endpointSlice, service, serviceExport } from './helpers/objects.js';

/** A memory source whose informers sync when the test says, and whose watches break when it says. */
class GatedSource extends MemorySource {
  #open!: () => void;
  readonly #gate = new Promise<void>((r) => (this.#open = r));
  readonly health: ((err: Error | undefined) => void)[] = [];
  sync(): void {
    this.#open();
  }
  override informer<T extends KubeObject = KubeObject>(kind: KindRef, options: InformerOptions<T> = {}) {
    const inner = super.informer<T>(kind, options);
    if (options.onHealth) this.health.push(options.onHealth);
    const synced = inner.synced.then(() => this.#gate);
    return Object.assign(Object.create(inner) as typeof inner, { synced });
  }
}

const get = async (port: number, path: string, headers: Record<string, string> = {}) => {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { headers });
  return { status: r.status, etag: r.headers.get('etag') ?? undefined, text: await r.text() };
};

const exported = (name: string, ports: Map<number, { ip: string; port: number }[]>, targetClusters?: ClusterKey[]): LocalService => ({
  namespace: 'ns',
  name,
  ports,
  export: { loadBalancer: 'RoundRobinLoadBalancer', ...(targetClusters ? { targetClusters } : {}) },
});

describe('gateway readiness: /readyz follows the catalog, /healthz stays liveness', () => {
  it('is not ready before the first sync (and tunnels get 503), ready after; a watch broken for long makes it unready', async () => {
    const source = new GatedSource();
    source.put(service('shop', 'web', { ports: [{ name: 'http', port: 80, protocol: 'TCP' }] }));
    source.put(endpointSlice('shop', 'web', ['10.42.0.1', '10.42.0.2'], { portName: 'http', port: 8080 }));
    source.put(serviceExport('shop', 'web'));
    let t = 1_000_000;
    const catalog = new LiveCatalog({ now: () => t });
    const gw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog });
    const started = catalog.start(source, 1);
    try {
      const port = gw.address.port;
      const before = await get(port, '/readyz');
      expect(before.status).toBe(503);
      expect(before.text).toMatch(/not synced/);
      expect((await get(port, '/healthz')).status).toBe(200);
      expect(JSON.parse((await get(port, '/healthz/services')).text)).toEqual({ synced: false, services: {} });
      await expect(openTunnel({ gateway: { host: '127.0.0.1', port }, target: { service: 'web', namespace: 'shop', port: 80 }, sourceCluster: clusterKey(2), timeoutMs: 2000 })).rejects.toMatchObject({ status: 503 });

      source.sync();
      await started;
      expect(await get(port, '/readyz')).toMatchObject({ status: 200, text: 'ready\n' });
      expect(JSON.parse((await get(port, '/healthz/services')).text)).toEqual({ synced: true, services: { 'shop/web': { ready: true, ports: { '80': 2 } } } });

      // A watch breaks: the last known catalog still serves for the grace time, then the gateway says unready.
      for (const h of source.health) h(new Error('connection refused'));
      expect((await get(port, '/readyz')).status).toBe(200);
      t += 30_000;
      const broken = await get(port, '/readyz');
      expect(broken.status).toBe(503);
      expect(broken.text).toMatch(/watch is broken.*connection refused/);
      expect((await get(port, '/healthz')).status).toBe(200);
      for (const h of source.health) h(undefined);
      expect((await get(port, '/readyz')).status).toBe(200);
    } finally {
      await gw.close(0);
      catalog.close();
      await source.close();
    }
  });
});

describe('gateway /healthz/services', () => {
  let ca: KeyPair;
  let gw: Gateway;
  const SET = 'health-set';
  beforeAll(async () => {
    ca = await createCa(SET);
    const tls = { ...(await issue(ca, clusterSpiffeId(SET, clusterKey(1)), 3_600_000)), ca: ca.cert, clusterSet: SET };
    const ep = [{ ip: '10.42.0.9', port: 8080 }];
    gw = await Gateway.start({
      host: '127.0.0.1',
      port: 0,
      tls,
      catalog: staticCatalog([
        exported('open', new Map([[80, ep]])),
        exported('only2', new Map([[80, ep]]), [clusterKey(2)]),
        exported('empty', new Map([[80, []]])),
        { namespace: 'ns', name: 'private', ports: new Map([[80, ep]]), export: undefined },
        // A rule for port 80 only: 81 is not exported, and not listed.
        { ...exported('ruled', new Map([[80, ep], [81, ep]])), export: { loadBalancer: 'RoundRobinLoadBalancer', rules: [{ portNumber: 80, pathType: 'Prefix' as const }] } },
      ]),
    });
  });
  afterAll(async () => {
    await gw?.close(0);
  });

  /** GET over HTTPS as cluster `n` (its certificate), or without one. */
  const asCluster = async (n: number | undefined, path = '/healthz/services', etag?: string) => {
    const cert = n === undefined ? {} : await issue(ca, clusterSpiffeId(SET, clusterKey(n)), 3_600_000);
    return new Promise<{ status: number; etag: string | undefined; text: string }>((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port: gw.address.port, path, rejectUnauthorized: false, agent: false, ...cert, headers: etag ? { 'if-none-match': etag } : {} }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, etag: res.headers.etag, text }));
      });
      req.on('error', reject);
      req.end();
    });
  };

  it("lists only the services the caller's cluster may open a tunnel to, with their exported ports", async () => {
    const c3 = JSON.parse((await asCluster(3)).text);
    expect(c3).toEqual({ synced: true, services: { 'ns/open': { ready: true, ports: { '80': 1 } }, 'ns/empty': { ready: false, ports: { '80': 0 } }, 'ns/ruled': { ready: true, ports: { '80': 1 } } } });
    const c2 = JSON.parse((await asCluster(2)).text);
    expect(Object.keys(c2.services).sort()).toEqual(['ns/empty', 'ns/only2', 'ns/open', 'ns/ruled']);
    // No certificate: no cluster proven, nothing told.
    expect((await asCluster(undefined)).status).toBe(403);
    // The kubelet's probes need none.
    expect((await asCluster(undefined, '/readyz')).status).toBe(200);
  });

  it('answers 304 to the ETag of an unchanged answer, per caller', async () => {
    const first = await asCluster(3);
    expect(first.etag).toMatch(/^"[\w-]+"$/);
    expect((await asCluster(3, '/healthz/services', first.etag)).status).toBe(304);
    expect((await asCluster(3, '/healthz/services', `"other", ${first.etag}`)).status).toBe(304);
    // Cluster 2 is told more: another answer, another ETag.
    const c2 = await asCluster(2, '/healthz/services', first.etag);
    expect(c2.status).toBe(200);
    expect(c2.etag).not.toBe(first.etag);
  });
});

describe('gateway /healthz/services at size, and with a changing catalog', () => {
  it('1,000 services: one bounded answer, cheap to ask again (304), truncated past maxHealthServices', async () => {
    const services = Array.from({ length: 1000 }, (_, i) => exported(`svc-${String(i).padStart(4, '0')}`, new Map([[80, [{ ip: `10.42.${i >> 8}.${i & 255}`, port: 8080 }]]])));
    const gw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog: staticCatalog(services), maxHealthServices: 600 });
    try {
      const r = await get(gw.address.port, '/healthz/services');
      const body = JSON.parse(r.text);
      expect(Object.keys(body.services)).toHaveLength(600);
      expect(body.truncated).toBe(true);
      expect(r.text.length).toBeLessThan(60 * 1024);
      expect(parseServicesAnswer(r.text)).toMatchObject({ synced: true, truncated: true });
      expect((await get(gw.address.port, '/healthz/services', { 'if-none-match': r.etag! })).status).toBe(304);
    } finally {
      await gw.close(0);
    }
    const all = await Gateway.start({ host: '127.0.0.1', port: 0, catalog: staticCatalog(services) });
    try {
      const r = await get(all.address.port, '/healthz/services');
      expect(Object.keys(JSON.parse(r.text).services)).toHaveLength(1000);
      expect(JSON.parse(r.text).truncated).toBeUndefined();
      // 200 polls of an unchanged answer, as 100 proxies in 2 s would send: all 304.
      const statuses = await Promise.all(Array.from({ length: 200 }, () => get(all.address.port, '/healthz/services', { 'if-none-match': r.etag! }).then((x) => x.status)));
      expect(new Set(statuses)).toEqual(new Set([304]));
    } finally {
      await all.close(0);
    }
  });

  it('a catalog change gives a new answer and ETag', async () => {
    const source = new MemorySource();
    source.put(service('shop', 'web'));
    source.put(serviceExport('shop', 'web'));
    const catalog = new LiveCatalog();
    await catalog.start(source, 1);
    const gw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog });
    try {
      const first = await get(gw.address.port, '/healthz/services');
      expect(JSON.parse(first.text).services['shop/web'].ready).toBe(false);
      expect((await get(gw.address.port, '/healthz/services', { 'if-none-match': first.etag! })).status).toBe(304);
      source.put(endpointSlice('shop', 'web', ['10.42.0.1'], { port: 8080 }));
      await new Promise((r) => setTimeout(r, 50));
      const second = await get(gw.address.port, '/healthz/services', { 'if-none-match': first.etag! });
      expect(second.status).toBe(200);
      expect(JSON.parse(second.text).services['shop/web']).toEqual({ ready: true, ports: { '80': 1 } });
      // What the proxy's check makes of it.
      const c = await checkServices({ host: '127.0.0.1', port: gw.address.port }, (h, p) => connect(p, h), 1000, undefined, undefined, second.etag);
      expect(c).toEqual({ kind: 'unchanged' });
    } finally {
      await gw.close(0);
      catalog.close();
      await source.close();
    }
  });
});

describe('gateway endpoint ejection', () => {
  const servers: Server[] = [];
  let good = 0;
  let refusing = 0;
  beforeAll(async () => {
    const s = createServer((c) => c.end('hi\n'));
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    servers.push(s);
    good = (s.address() as { port: number }).port;
    // A port just freed: connections to it are refused.
    const gone = createServer();
    await new Promise<void>((r) => gone.listen(0, '127.0.0.1', r));
    refusing = (gone.address() as { port: number }).port;
    await new Promise<void>((r) => gone.close(() => r()));
  });
  afterAll(() => {
    for (const s of servers) s.close();
  });

  it('three refusals eject an endpoint (tried last from then on); no more than half of a port\'s endpoints are ejected', async () => {
    let t = 0;
    const gw = await Gateway.start({ host: '127.0.0.1', port: 0, now: () => t, catalog: staticCatalog([exported('web', new Map([[80, [{ ip: '127.0.0.1', port: refusing }, { ip: '127.0.0.1', port: good }]]]))]) });
    const tunnel = () => openTunnel({ gateway: { host: '127.0.0.1', port: gw.address.port }, target: { service: 'web', namespace: 'ns', port: 80 }, sourceCluster: clusterKey(2), timeoutMs: 2000 });
    const ready = async () => JSON.parse((await get(gw.address.port, '/healthz/services')).text).services['ns/web'].ports['80'];
    try {
      // Round robin: every other tunnel tries the refusing endpoint first, then the good one.
      for (let i = 0; i < 6; i++) (await tunnel()).destroy();
      expect(await ready()).toBe(1);
      // Ejected: the good one first every time (a refusal would show in the log and the count below stays).
      for (let i = 0; i < 4; i++) (await tunnel()).destroy();
      // The good endpoint failing (as the native front would report): 2 of 2 would be over half, so it stays in.
      for (let i = 0; i < 3; i++) gw.endpointFailed('ns/web:80', '127.0.0.1', good);
      expect(await ready()).toBe(1);
      // The ejection runs out (5 s): both count again.
      t += 5_000;
      expect(await ready()).toBe(2);
    } finally {
      await gw.close(0);
    }
  });

  it("the native front's table leaves ejected endpoints out (all of them when all are: then all stay)", () => {
    const pushes: NativeFrontEntry[][] = [];
    const splicer = { startFront: () => undefined, frontRoutes: (e: NativeFrontEntry[]) => pushes.push(e) } as unknown as KernelSplicer;
    const out = new Set<string>();
    const catalog = Object.assign(staticCatalog([exported('web', new Map([[80, [{ ip: '10.42.0.1', port: 8080 }, { ip: '10.42.0.2', port: 8080 }]]]))]), { subscribe: () => () => undefined });
    const front = new GatewayFront(splicer, [], catalog, { idleMs: 0, connectMs: 1000, headerMs: 1000, maxTotal: 10, maxPerSource: 10 }, { handed: () => undefined, succeeded: () => undefined }, (group, e) => out.has(`${group} ${e.ip}`));
    const addrs = () => pushes.at(-1)!.at(-1)!.choices![0]!.addrs.map((a) => a.ip);
    expect(addrs()).toEqual(['10.42.0.1', '10.42.0.2']);
    out.add('ns/web:80 10.42.0.1');
    front.refresh(['ns/web']);
    expect(addrs()).toEqual(['10.42.0.2']);
    out.add('ns/web:80 10.42.0.2');
    front.refresh(['ns/web']);
    expect(addrs()).toEqual(['10.42.0.1', '10.42.0.2']);
    front.close();
  });
});
