// The kubernetes Source, driving the real @kubernetes/client-node (ListWatch, Watch, KubeConfig) against the
// in-memory API server: sync, events, bookmarks, recovery from drops, 410 and failing lists, writes with
// conflict retries, events, and shutdown without leftover timers or watches.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TrackingClock } from './helpers/clocks.js';
import { createKubernetesSource, type KubernetesSourceOptions } from '../src/sources/kubernetes.js';
import { Kinds, SourceError, type KindRef, type KubeObject, type Source, type WatchEvent } from '../src/sources/source.js';
import { startKubeApiServer, type KubeApiServer, type KubeApiServerOptions, type RecordedRequest } from './helpers/kube-api-server.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

async function setup(serverOptions: KubeApiServerOptions = {}, sourceOptions: Partial<KubernetesSourceOptions> = {}) {
  const server = await startKubeApiServer({ bookmarkIntervalMs: 50, ...serverOptions });
  cleanups.push(() => server.close());
  const clock = new TrackingClock();
  const source = createKubernetesSource({
    kubeconfig: server.kubeconfig,
    clock,
    backoff: { initialMs: 50, maxMs: 400, jitter: 0 },
    ...sourceOptions,
  });
  cleanups.push(() => source.close());
  server.put(namespace('default'));
  server.put(namespace('demo'));
  return { server, source, clock };
}

const namespace = (name: string): KubeObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });

function service(name: string, opts: { ns?: string; port?: number; labels?: Record<string, string>; clusterIP?: string } = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: opts.ns ?? 'demo', ...(opts.labels ? { labels: opts.labels } : {}) },
    spec: { selector: { app: name }, ports: [{ name: 'http', port: opts.port ?? 80 }], ...(opts.clusterIP ? { clusterIP: opts.clusterIP } : {}) },
  };
}

function serviceExport(name: string, ns = 'demo'): KubeObject {
  return {
    apiVersion: 'flomesh.io/v1alpha1',
    kind: 'ServiceExport',
    metadata: { name, namespace: ns },
    spec: { loadBalancer: 'RoundRobinLoadBalancer', rules: [{ portNumber: 80, path: '/', pathType: 'Prefix' }] },
  };
}

const names = (objs: KubeObject[]) => objs.map((o) => o.metadata.name).sort();
const summary = (events: WatchEvent[]) => events.map((e) => `${e.type} ${e.object.metadata.name}`);
const watches = (server: KubeApiServer, path = '/api/v1/services') => server.requests.filter((r) => r.path === path && r.watch);
const lists = (server: KubeApiServer, path = '/api/v1/services') =>
  server.requests.filter((r) => r.path === path && r.method === 'GET' && !r.watch);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rejection(p: Promise<unknown>): Promise<SourceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SourceError);
  return err as SourceError;
}

function collect(source: Source, kind: KindRef = Kinds.Service) {
  const events: WatchEvent[] = [];
  const health: (Error | undefined)[] = [];
  const informer = source.informer(kind, { onEvent: (e) => events.push(e), onHealth: (h) => health.push(h) });
  return { informer, events, health };
}

describe('createKubernetesSource', () => {
  it('rejects an unusable kubeconfig with ECNET_SOURCE_INVALID and says why', async () => {
    const server = await startKubeApiServer();
    cleanups.push(() => server.close());
    const invalid = (o: KubernetesSourceOptions): SourceError => {
      try {
        createKubernetesSource(o);
      } catch (err) {
        expect(err).toBeInstanceOf(SourceError);
        expect((err as SourceError).code).toBe('ECNET_SOURCE_INVALID');
        return err as SourceError;
      }
      throw new Error('expected a throw');
    };
    expect(invalid({ kubeconfig: 'clusters: [' }).message).toMatch(/cannot use the given kubeconfig text/);
    expect(invalid({ kubeconfig: 'apiVersion: v1\nkind: Config\n' }).message).toMatch(/no current-context/);
    expect(invalid({ kubeconfig: server.kubeconfig, context: 'nope' }).message).toMatch(/no context "nope"/);
    expect(invalid({ kubeconfig: server.kubeconfig.replace('    insecure-skip-tls-verify: true\n', '') }).message).toMatch(
      /http:\/\/ without insecure-skip-tls-verify/,
    );
    expect(invalid({ kubeconfigPath: '/nonexistent/kubeconfig' }).message).toMatch(/\/nonexistent\/kubeconfig.*ENOENT/);
    const ok = createKubernetesSource({ kubeconfig: server.kubeconfig, context: 'test' });
    expect(ok.description).toBe(`kubernetes ${server.url}`);
    await ok.close();
  });
});

describe('kubernetes informer', () => {
  it('keeps objects without managedFields, listed or watched (a real server sends them with every object)', async () => {
    const { server, source } = await setup();
    const fields = [{ manager: 'kubectl', operation: 'Update', fieldsV1: { 'f:spec': { 'f:ports': {} } } }];
    server.put({ ...service('a'), metadata: { ...service('a').metadata, managedFields: fields } } as KubeObject);
    const { informer, events } = collect(source);
    await informer.synced;
    server.put({ ...service('b'), metadata: { ...service('b').metadata, managedFields: fields } } as KubeObject);
    await vi.waitFor(() => expect(informer.get('b', 'demo')).toBeDefined());
    expect(server.object(Kinds.Service, 'demo', 'a')?.metadata).toHaveProperty('managedFields');
    for (const name of ['a', 'b']) expect(informer.get(name, 'demo')?.metadata).not.toHaveProperty('managedFields');
    expect(events.every((e) => !('managedFields' in e.object.metadata))).toBe(true);
  });

  it('syncs the initial list, delivering every object as added, with kind and apiVersion filled in', async () => {
    const { server, source } = await setup();
    server.put(service('a'));
    server.put(service('b', { ns: 'default' }));
    const { informer, events, health } = collect(source);
    expect(informer.isSynced).toBe(false);
    await informer.synced;
    expect(informer.isSynced).toBe(true);
    expect(summary(events).sort()).toEqual(['added a', 'added b']);
    expect(names(informer.list())).toEqual(['a', 'b']);
    expect(names(informer.list('demo'))).toEqual(['a']);
    const a = informer.get('a', 'demo');
    expect(a?.kind).toBe('Service');
    expect(a?.apiVersion).toBe('v1');
    expect((a?.spec as { clusterIP?: string }).clusterIP).toBeUndefined(); // put() stores as given
    expect(informer.get('a', 'default')).toBeUndefined();
    expect(informer.healthy).toBe(true);
    expect(health).toEqual([]);
    // One list of all namespaces, then a watch from its resourceVersion asking for bookmarks.
    const [list] = lists(server);
    expect(list?.query.limit).toBe('500');
    await vi.waitFor(() => expect(watches(server)).toHaveLength(1));
    const [watch] = watches(server);
    expect(watch?.query.resourceVersion).toBe(server.resourceVersion);
    expect(watch?.query.allowWatchBookmarks).toBe('true');
    expect(Number(watch?.query.timeoutSeconds)).toBeGreaterThanOrEqual(300);
  });

  it('delivers added, updated and deleted events and keeps the cache in step', async () => {
    const { server, source } = await setup();
    server.put(service('a'));
    server.put(service('b'));
    const { informer, events } = collect(source);
    await informer.synced;
    events.length = 0;
    server.put(service('c'));
    server.put(service('a', { labels: { tier: 'web' } }));
    server.remove(Kinds.Service, 'demo', 'b');
    await vi.waitFor(() => expect(summary(events)).toEqual(['added c', 'updated a', 'deleted b']));
    expect(informer.get('a', 'demo')?.metadata.labels).toEqual({ tier: 'web' });
    expect(names(informer.list())).toEqual(['a', 'c']);
    expect(events[2]?.object.metadata.name).toBe('b');
  });

  it('filters by namespace and label selector', async () => {
    const { server, source } = await setup();
    server.put(service('a', { labels: { app: 'x' } }));
    server.put(service('b', { labels: { app: 'y' } }));
    server.put(service('c', { ns: 'default', labels: { app: 'x' } }));
    const events: WatchEvent[] = [];
    const informer = source.informer(Kinds.Service, { namespace: 'demo', labelSelector: 'app=x', onEvent: (e) => events.push(e) });
    await informer.synced;
    expect(names(informer.list())).toEqual(['a']);
    server.put(service('b', { labels: { app: 'x' } }));
    server.put(service('d', { ns: 'default', labels: { app: 'x' } }));
    await vi.waitFor(() => expect(summary(events)).toEqual(['added a', 'added b']));
    expect(lists(server, '/api/v1/namespaces/demo/services')[0]?.query.labelSelector).toBe('app=x');
    expect(watches(server, '/api/v1/namespaces/demo/services')[0]?.query.labelSelector).toBe('app=x');
  });

  it('resumes a dropped watch from the resourceVersion of the last bookmark', async () => {
    const { server, source } = await setup();
    server.put(service('a'));
    const { informer, events } = collect(source);
    await informer.synced;
    const lastServiceVersion = informer.get('a', 'demo')?.metadata.resourceVersion;
    // Changes to another kind move the global resourceVersion; only bookmarks tell the Service watch about it.
    for (let i = 0; i < 3; i++) server.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: `s${i}`, namespace: 'demo' } });
    const expected = server.resourceVersion;
    expect(Number(expected)).toBeGreaterThan(Number(lastServiceVersion));
    await sleep(250); // several bookmark intervals
    expect(server.dropWatches()).toBe(1);
    await vi.waitFor(() => expect(watches(server)).toHaveLength(2));
    expect(watches(server)[1]?.query.resourceVersion).toBe(expected);
    expect(watches(server)[1]?.query.allowWatchBookmarks).toBe('true');
    expect(lists(server)).toHaveLength(1);
    expect(summary(events)).toEqual(['added a']);
  });

  it('after a drop, reports unhealthy once, restarts with growing backoff and catches up with what changed', async () => {
    const { server, source } = await setup();
    server.put(service('a'));
    server.put(service('b'));
    const { informer, events, health } = collect(source);
    await informer.synced;
    await vi.waitFor(() => expect(server.openWatches).toBe(1));
    events.length = 0;
    // The first two watches after the drop fail too: three attempts, 50 then 100 then 200 ms apart.
    server.failNext(2, 503, { watch: true });
    server.dropWatches();
    server.put(service('a', { port: 8080 }));
    server.remove(Kinds.Service, 'demo', 'b');
    server.put(service('c'));
    await vi.waitFor(() => expect(informer.healthy).toBe(false));
    expect(informer.lastError).toBeInstanceOf(SourceError);
    expect((informer.lastError as SourceError).code).toBe('ECNET_SOURCE_UNREACHABLE');
    expect(informer.lastError?.message).toMatch(/dropped/);
    await vi.waitFor(() => expect(summary(events)).toEqual(['updated a', 'deleted b', 'added c']), { timeout: 3000 });
    await vi.waitFor(() => expect(informer.healthy).toBe(true));
    expect(informer.lastError).toBeUndefined();
    expect(health).toHaveLength(2);
    expect((health[0] as SourceError).code).toBe('ECNET_SOURCE_UNREACHABLE');
    expect(health[1]).toBeUndefined();
    expect(names(informer.list())).toEqual(['a', 'c']);
    expect((informer.get('a', 'demo')?.spec as { ports: { port: number }[] }).ports[0]?.port).toBe(8080);
    // Resumed by watch from the old resourceVersion (no relist), after backoff delays that grew.
    const w = watches(server);
    expect(w).toHaveLength(4);
    expect(lists(server)).toHaveLength(1);
    expect(new Set(w.slice(1).map((r) => r.query.resourceVersion))).toEqual(new Set([w[0]?.query.resourceVersion]));
    const gaps = [(w[2]?.at ?? 0) - (w[1]?.at ?? 0), (w[3]?.at ?? 0) - (w[2]?.at ?? 0)];
    expect(gaps[0]).toBeGreaterThanOrEqual(90);
    expect(gaps[1]).toBeGreaterThanOrEqual(190);
    // The successful reconnect reset the backoff: the next drop is retried after the initial 50 ms, not 400.
    await vi.waitFor(() => expect(server.openWatches).toBe(1));
    const droppedAt = Date.now();
    server.dropWatches();
    await vi.waitFor(() => expect(watches(server)).toHaveLength(5));
    expect((watches(server)[4]?.at ?? 0) - droppedAt).toBeLessThan(250);
    await vi.waitFor(() => expect(health).toHaveLength(4));
  });

  it('relists on 410 Gone and reports what was deleted meanwhile', async () => {
    const { server, source } = await setup();
    server.put(service('a'));
    server.put(service('b'));
    const { informer, events } = collect(source);
    await informer.synced;
    await vi.waitFor(() => expect(server.openWatches).toBe(1));
    events.length = 0;
    server.dropWatches();
    server.remove(Kinds.Service, 'demo', 'b');
    server.put(service('c'));
    server.put(service('a', { labels: { v: '2' } }));
    server.compact();
    await vi.waitFor(() => expect(summary(events).sort()).toEqual(['added c', 'deleted b', 'updated a']));
    expect(names(informer.list())).toEqual(['a', 'c']);
    expect(lists(server)).toHaveLength(2);
    // The second watch got 410 Expired; the third starts from the relist.
    await vi.waitFor(() => expect(watches(server)).toHaveLength(3));
    expect(watches(server)[2]?.query.resourceVersion).toBe(server.resourceVersion);
    await vi.waitFor(() => expect(informer.healthy).toBe(true));
  });

  it('retries a failing list with backoff until it syncs', async () => {
    const { server, source } = await setup();
    server.put(service('a'));
    server.failNext(2, 500, { watch: false });
    server.failNext(1, 503, { watch: false });
    const { informer, events, health } = collect(source);
    await vi.waitFor(() => expect(informer.healthy).toBe(false));
    expect((informer.lastError as SourceError).status).toBe(500);
    expect(informer.isSynced).toBe(false);
    await informer.synced;
    expect(lists(server)).toHaveLength(4);
    expect(summary(events)).toEqual(['added a']);
    await vi.waitFor(() => expect(informer.healthy).toBe(true));
    expect(health).toHaveLength(2);
    expect((health[0] as SourceError).code).toBe('ECNET_SOURCE_UNREACHABLE');
    expect(health[1]).toBeUndefined();
  });

  it('rewatches by itself when the server ends a watch cleanly (its timeout), staying healthy', async () => {
    const { server, source } = await setup({}, { watchTimeoutSeconds: 1 });
    server.put(service('a'));
    const { informer, events, health } = collect(source);
    await informer.synced;
    server.put(service('b'));
    await vi.waitFor(() => expect(watches(server).length).toBeGreaterThanOrEqual(2), { timeout: 3000 });
    expect(watches(server)[0]?.query.timeoutSeconds).toBe('1');
    expect(lists(server)).toHaveLength(1);
    expect(health).toEqual([]);
    expect(informer.healthy).toBe(true);
    server.put(service('c'));
    await vi.waitFor(() => expect(summary(events)).toEqual(['added a', 'added b', 'added c']));
  });

  it('watches custom resources at /apis/{group}/{version}', async () => {
    const { server, source } = await setup();
    server.put(serviceExport('web'));
    server.put({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: 'c1' }, spec: { region: 'r', zone: 'z', group: 'g', gatewayPort: 8091 } });
    const exports = collect(source, Kinds.ServiceExport);
    const clusters = collect(source, Kinds.Cluster);
    await Promise.all([exports.informer.synced, clusters.informer.synced]);
    expect(names(exports.informer.list())).toEqual(['web']);
    expect(clusters.informer.get('c1')?.metadata.name).toBe('c1');
    expect(lists(server, '/apis/flomesh.io/v1alpha1/serviceexports')).toHaveLength(1);
    expect(lists(server, '/apis/flomesh.io/v1alpha1/clusters')).toHaveLength(1);
  });
});

describe('kubernetes reads and writes', () => {
  it('lists and gets one-shot; a missing object is undefined', async () => {
    const { server, source } = await setup();
    server.put(service('a'));
    server.put(service('b', { ns: 'default' }));
    expect(names(await source.list(Kinds.Service))).toEqual(['a', 'b']);
    const inDemo = await source.list(Kinds.Service, 'demo');
    expect(names(inDemo)).toEqual(['a']);
    expect(inDemo[0]?.kind).toBe('Service');
    expect((await source.get(Kinds.Service, 'a', 'demo'))?.metadata.uid).toBe(server.object(Kinds.Service, 'demo', 'a')?.metadata.uid);
    expect(await source.get(Kinds.Service, 'zz', 'demo')).toBeUndefined();
    expect(names(await source.list(Kinds.Namespace))).toEqual(['default', 'demo']);
  });

  it('apply and writeStatus with what the caller saw send one request each; a stale copy is read again, never lost', async () => {
    const { server, source } = await setup();
    const writes = () => server.requests.filter((r) => !r.watch).map((r) => `${r.method} ${r.path}`);
    const before = server.requests.length;
    // Seen absent: a POST alone.
    const created = await source.apply(service('web'), { manager: 'ecnet-test', seen: null });
    expect(writes().slice(before)).toEqual(['POST /api/v1/namespaces/demo/services']);
    // Seen as it is: a PUT alone; and a status write against what that PUT returned, a PUT alone.
    let at = server.requests.length;
    const updated = await source.apply(service('web', { port: 81 }), { manager: 'ecnet-test', seen: created });
    await source.writeStatus(Kinds.Service, 'web', 'demo', { loadBalancer: { ingress: [{ ip: '1.2.3.4' }] } }, updated);
    expect(writes().slice(at)).toEqual(['PUT /api/v1/namespaces/demo/services/web', 'PUT /api/v1/namespaces/demo/services/web/status']);
    // A stale copy (the server moved on): 409, then read and written as without it.
    at = server.requests.length;
    const last = await source.apply(service('web', { port: 82 }), { manager: 'ecnet-test', seen: created });
    expect(writes().slice(at)).toEqual(['PUT /api/v1/namespaces/demo/services/web', 'GET /api/v1/namespaces/demo/services/web', 'PUT /api/v1/namespaces/demo/services/web']);
    expect((last.spec as { ports: { port: number }[] }).ports[0]?.port).toBe(82);
    expect((server.object(Kinds.Service, 'demo', 'web')?.status as { loadBalancer: unknown }).loadBalancer).toEqual({ ingress: [{ ip: '1.2.3.4' }] });
    // Seen absent but there is one: without a precondition it is replaced; with `absent` it is refused.
    at = server.requests.length;
    await source.apply(service('web', { port: 83 }), { manager: 'ecnet-test', seen: null });
    expect(writes().slice(at)).toEqual(['POST /api/v1/namespaces/demo/services', 'GET /api/v1/namespaces/demo/services/web', 'PUT /api/v1/namespaces/demo/services/web']);
    expect((await rejection(source.apply(service('web'), { manager: 'ecnet-test', seen: null, precondition: { absent: true } }))).code).toBe('ECNET_SOURCE_CONFLICT');
    // A stale status write is read again too.
    at = server.requests.length;
    await source.writeStatus(Kinds.Service, 'web', 'demo', { loadBalancer: {} }, created);
    expect(writes().slice(at)).toEqual(['PUT /api/v1/namespaces/demo/services/web/status', 'GET /api/v1/namespaces/demo/services/web', 'PUT /api/v1/namespaces/demo/services/web/status']);
  });

  it('apply creates, then updates keeping the allocated clusterIP, the status and server-owned metadata', async () => {
    const { server, source } = await setup();
    const created = await source.apply(service('web', { labels: { app: 'web' } }), { manager: 'ecnet-test' });
    const ip = (created.spec as { clusterIP: string }).clusterIP;
    expect(ip).toMatch(/^10\.96\.\d+\.\d+$/);
    expect(created.metadata.uid).toBeTruthy();
    expect(created.metadata.generation).toBe(1);
    // Someone (the cloud controller) writes status; apply must not remove it.
    const withStatus = server.put({ ...server.object(Kinds.Service, 'demo', 'web')!, status: { loadBalancer: { ingress: [{ ip: '1.2.3.4' }] } } });
    const updated = await source.apply(service('web', { port: 8080, labels: { app: 'web', tier: 'edge' } }), { manager: 'ecnet-test' });
    expect((updated.spec as { clusterIP: string }).clusterIP).toBe(ip);
    expect((updated.spec as { clusterIPs: string[] }).clusterIPs).toEqual([ip]);
    expect((updated.spec as { ports: { port: number }[] }).ports[0]?.port).toBe(8080);
    expect(updated.metadata.labels).toEqual({ app: 'web', tier: 'edge' });
    expect(updated.metadata.uid).toBe(created.metadata.uid);
    expect(updated.metadata.creationTimestamp).toBe(created.metadata.creationTimestamp);
    expect(updated.metadata.generation).toBe(2);
    expect(Number(updated.metadata.resourceVersion)).toBeGreaterThan(Number(withStatus.metadata.resourceVersion));
    expect(updated.status).toEqual({ loadBalancer: { ingress: [{ ip: '1.2.3.4' }] } });
    expect(server.object(Kinds.Service, 'demo', 'web')?.status).toEqual(updated.status);
    const writes = server.requests.filter((r) => r.method !== 'GET');
    expect(writes.map((r) => `${r.method} ${r.path} ${r.query.fieldManager}`)).toEqual([
      'POST /api/v1/namespaces/demo/services ecnet-test',
      'PUT /api/v1/namespaces/demo/services/web ecnet-test',
    ]);
    // Labels left unset keep the live ones.
    const again = await source.apply(service('web', { port: 8080 }), { manager: 'ecnet-test' });
    expect(again.metadata.labels).toEqual({ app: 'web', tier: 'edge' });
  });

  it('apply of custom resources, and of a kind it learns by discovery', async () => {
    const widget: KindRef = { group: 'example.com', version: 'v1', kind: 'Widget', plural: 'widgets', namespaced: true };
    const { server, source } = await setup({ kinds: [widget] });
    const se = await source.apply(serviceExport('web'), { manager: 'm' });
    expect(se.metadata.resourceVersion).toBe(server.object(Kinds.ServiceExport, 'demo', 'web')?.metadata.resourceVersion);
    const w = await source.apply({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w', namespace: 'demo' }, spec: { size: 1 } }, { manager: 'm' });
    expect(w.spec).toEqual({ size: 1 });
    expect(server.requests.some((r) => r.path === '/apis/example.com/v1')).toBe(true);
    expect(server.objects(widget)).toHaveLength(1);
    const bad = await rejection(source.apply({ apiVersion: 'example.com/v1', kind: 'Gadget', metadata: { name: 'g', namespace: 'demo' } }, { manager: 'm' }));
    expect(bad.code).toBe('ECNET_SOURCE_INVALID');
  });

  it('apply surfaces a missing namespace as NOT_FOUND and an immutable-field change as INVALID', async () => {
    const { source } = await setup();
    const nf = await rejection(source.apply(service('web', { ns: 'nowhere' }), { manager: 'm' }));
    expect(nf.code).toBe('ECNET_SOURCE_NOT_FOUND');
    expect(nf.status).toBe(404);
    expect(nf.message).toMatch(/namespaces "nowhere" not found/);
    await source.apply(service('web'), { manager: 'm' });
    const inv = await rejection(source.apply(service('web', { clusterIP: '10.96.99.99' }), { manager: 'm' }));
    expect(inv.code).toBe('ECNET_SOURCE_INVALID');
    expect(inv.status).toBe(422);
    expect((inv.cause as { reason: string }).reason).toBe('Invalid');
  });

  it('apply retries on 409 Conflict: injected, and a real concurrent write', async () => {
    const { server, source } = await setup();
    await source.apply(service('web'), { manager: 'm' });
    server.failNext(1, 409, { method: 'PUT' });
    const r1 = await source.apply(service('web', { port: 81 }), { manager: 'm' });
    expect((r1.spec as { ports: { port: number }[] }).ports[0]?.port).toBe(81);
    expect(server.requests.filter((r) => r.method === 'PUT')).toHaveLength(2);
    // Someone else updates between our read and our write: the stale resourceVersion gets a real 409.
    server.beforeNext({ method: 'PUT' }, () => {
      server.put({ ...server.object(Kinds.Service, 'demo', 'web')!, metadata: { ...server.object(Kinds.Service, 'demo', 'web')!.metadata, annotations: { other: 'writer' } } });
    });
    const r2 = await source.apply(service('web', { port: 82 }), { manager: 'm' });
    expect((r2.spec as { ports: { port: number }[] }).ports[0]?.port).toBe(82);
    expect(r2.metadata.annotations).toEqual({ other: 'writer' });
    expect(server.requests.filter((r) => r.method === 'PUT')).toHaveLength(4);
    // A conflict that never clears gives up after a few attempts.
    server.failNext(100, 409, { method: 'PUT' });
    const err = await rejection(source.apply(service('web', { port: 83 }), { manager: 'm' }));
    expect(err.code).toBe('ECNET_SOURCE_CONFLICT');
    expect(err.status).toBe(409);
    expect(server.requests.filter((r) => r.method === 'PUT')).toHaveLength(9);
  });

  it('apply retries a create that lost a race (409 AlreadyExists) as an update', async () => {
    const { server, source } = await setup();
    server.beforeNext({ method: 'POST' }, () => server.put(service('web', { labels: { by: 'other' } })));
    const r = await source.apply(service('web', { port: 90 }), { manager: 'm' });
    expect((r.spec as { ports: { port: number }[] }).ports[0]?.port).toBe(90);
    expect(server.requests.filter((q) => q.method !== 'GET').map((q) => q.method)).toEqual(['POST', 'PUT']);
  });

  it('writeStatus writes only the status subresource and retries a conflicting concurrent write', async () => {
    const { server, source } = await setup();
    await source.apply(serviceExport('web'), { manager: 'm' });
    let concurrent = 0;
    server.beforeNext({ method: 'PUT', path: /\/status$/ }, () => {
      concurrent++;
      const live = server.object(Kinds.ServiceExport, 'demo', 'web')!;
      server.put({ ...live, metadata: { ...live.metadata, labels: { touched: 'yes' } } });
    });
    const status = { conditions: [{ type: 'Valid', status: 'True', reason: 'Ok', message: '', lastTransitionTime: '2024-01-01T00:00:00Z' }] };
    await source.writeStatus(Kinds.ServiceExport, 'web', 'demo', status);
    expect(concurrent).toBe(1);
    const live = server.object(Kinds.ServiceExport, 'demo', 'web')!;
    expect(live.status).toEqual(status);
    expect(live.metadata.labels).toEqual({ touched: 'yes' });
    expect(live.spec).toEqual(serviceExport('web').spec);
    const puts = server.requests.filter((r) => r.method === 'PUT');
    expect(puts.map((r) => r.path)).toEqual([
      '/apis/flomesh.io/v1alpha1/namespaces/demo/serviceexports/web/status',
      '/apis/flomesh.io/v1alpha1/namespaces/demo/serviceexports/web/status',
    ]);
    const nf = await rejection(source.writeStatus(Kinds.ServiceExport, 'gone', 'demo', status));
    expect(nf.code).toBe('ECNET_SOURCE_NOT_FOUND');
    // Cluster-scoped kinds, custom and core.
    server.put({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: 'c1' }, spec: { region: 'r' } });
    await source.writeStatus(Kinds.Cluster, 'c1', undefined, status);
    expect(server.object(Kinds.Cluster, undefined, 'c1')?.status).toEqual(status);
    await source.writeStatus(Kinds.Namespace, 'demo', undefined, { phase: 'Terminating' });
    expect(server.object(Kinds.Namespace, undefined, 'demo')?.status).toEqual({ phase: 'Terminating' });
  });

  it('delete is true when the object existed and false when it did not', async () => {
    const { server, source } = await setup();
    server.put(service('web'));
    expect(await source.delete(Kinds.Service, 'web', 'demo')).toBe(true);
    expect(server.object(Kinds.Service, 'demo', 'web')).toBeUndefined();
    expect(await source.delete(Kinds.Service, 'web', 'demo')).toBe(false);
    const inv = await rejection(source.delete(Kinds.Service, 'web'));
    expect(inv.code).toBe('ECNET_SOURCE_INVALID');
  });

  it('records Events about objects, best effort', async () => {
    const { server, source } = await setup();
    const svc = server.put(service('web'));
    await source.event(svc, { type: 'Warning', reason: 'PortConflict', message: 'port 80 is taken' });
    const [ev] = server.objects<KubeObject & Record<string, unknown>>(Kinds.Event, 'demo');
    expect(ev).toBeDefined();
    expect(ev?.involvedObject).toEqual({ apiVersion: 'v1', kind: 'Service', name: 'web', namespace: 'demo', uid: svc.metadata.uid, resourceVersion: svc.metadata.resourceVersion });
    expect(ev).toMatchObject({ reason: 'PortConflict', message: 'port 80 is taken', type: 'Warning', source: { component: 'ecnet' }, count: 1 });
    expect(ev?.firstTimestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(ev?.metadata.name).toMatch(/^web\.[0-9a-f]+$/);
    // A cluster-scoped object's events go to "default".
    const cluster = server.put({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: 'c1' }, spec: {} });
    await source.event(cluster, { type: 'Normal', reason: 'Joined', message: 'ok' });
    expect(server.objects(Kinds.Event, 'default')).toHaveLength(1);
    // Failures are logged, never thrown.
    server.failNext(1, 500);
    await expect(source.event(svc, { type: 'Normal', reason: 'X', message: 'y' })).resolves.toBeUndefined();
    expect(server.objects(Kinds.Event)).toHaveLength(2);
  });

  it('maps HTTP and network failures to SourceError codes', async () => {
    const { server, source } = await setup();
    server.failNext(1, 403);
    const forbidden = await rejection(source.get(Kinds.Service, 'a', 'demo'));
    expect([forbidden.code, forbidden.status]).toEqual(['ECNET_SOURCE_FORBIDDEN', 403]);
    expect(forbidden.message).toMatch(/^GET \/api\/v1\/namespaces\/demo\/services\/a: 403 Forbidden/);
    server.failNext(1, 503);
    const unavailable = await rejection(source.list(Kinds.Service));
    expect([unavailable.code, unavailable.status]).toEqual(['ECNET_SOURCE_UNREACHABLE', 503]);

    const wrongToken = createKubernetesSource({ kubeconfig: server.kubeconfig.replace(/token: .*/, 'token: wrong') });
    cleanups.push(() => wrongToken.close());
    const unauthorized = await rejection(wrongToken.list(Kinds.Service));
    expect([unauthorized.code, unauthorized.status]).toEqual(['ECNET_SOURCE_FORBIDDEN', 401]);

    const dead = await startKubeApiServer();
    const kubeconfig = dead.kubeconfig;
    await dead.close();
    const unreachable = createKubernetesSource({ kubeconfig, requestTimeoutMs: 2000 });
    cleanups.push(() => unreachable.close());
    const refused = await rejection(unreachable.get(Kinds.Service, 'a', 'demo'));
    expect(refused.code).toBe('ECNET_SOURCE_UNREACHABLE');
    expect(refused.status).toBeUndefined();
    expect(refused.message).toMatch(/ECONNREFUSED/);
    expect(refused.cause).toBeInstanceOf(Error);
  });
});

describe('kubernetes source shutdown', () => {
  it('close drains writes in flight, stops informers, leaves no timers or watches; then every call is CLOSED', async () => {
    const { server, source, clock } = await setup();
    server.put(service('a'));
    const { informer } = collect(source);
    await informer.synced;
    await vi.waitFor(() => expect(server.openWatches).toBe(1));
    const order: string[] = [];
    const write = source.apply(service('b'), { manager: 'm' }).then(() => order.push('apply'));
    const closing = source.close().then(() => order.push('close'));
    expect(source.close()).toBe(source.close());
    await closing;
    await write;
    expect(order).toEqual(['apply', 'close']);
    expect(server.object(Kinds.Service, 'demo', 'b')).toBeDefined();
    await vi.waitFor(() => expect(server.openWatches).toBe(0));
    expect(clock.pending.size).toBe(0);
    // The cache stays readable; nothing new arrives.
    expect(names(informer.list())).toEqual(['a']);
    const calls: Promise<unknown>[] = [
      source.list(Kinds.Service),
      source.get(Kinds.Service, 'a', 'demo'),
      source.apply(service('c'), { manager: 'm' }),
      source.delete(Kinds.Service, 'a', 'demo'),
      source.writeStatus(Kinds.Service, 'a', 'demo', {}),
    ];
    for (const c of calls) expect((await rejection(c)).code).toBe('ECNET_SOURCE_CLOSED');
    expect(() => source.informer(Kinds.Service)).toThrow(expect.objectContaining({ code: 'ECNET_SOURCE_CLOSED' }));
    await expect(source.event(server.put(service('d')), { type: 'Normal', reason: 'r', message: 'm' })).resolves.toBeUndefined();
    expect(server.objects(Kinds.Event)).toHaveLength(0);
    informer.close();
  });

  it('closing an informer that never synced rejects synced and cancels its pending restart', async () => {
    const { server, source, clock } = await setup({}, { backoff: { initialMs: 10_000, maxMs: 10_000, jitter: 0 } });
    server.failNext(1, 500, { watch: false });
    const { informer } = collect(source);
    await vi.waitFor(() => expect(informer.healthy).toBe(false));
    expect(clock.pending.size).toBe(1); // the restart
    informer.close();
    informer.close();
    expect(clock.pending.size).toBe(0);
    expect((await rejection(informer.synced)).code).toBe('ECNET_SOURCE_CLOSED');
    await sleep(100);
    expect(lists(server)).toHaveLength(1);
  });

  it('destroy aborts requests, informers and retry delays at once', async () => {
    const { server, source, clock } = await setup();
    await source.apply(service('web'), { manager: 'm' });
    const { informer } = collect(source);
    await informer.synced;
    server.failNext(100, 409, { method: 'PUT' });
    const stuck = source.apply(service('web', { port: 81 }), { manager: 'm' });
    await vi.waitFor(() => expect(server.requests.filter((r: RecordedRequest) => r.method === 'PUT').length).toBeGreaterThanOrEqual(1));
    source.destroy(new Error('shutting down'));
    source.destroy();
    expect((await rejection(stuck)).code).toBe('ECNET_SOURCE_CLOSED');
    expect((await rejection(source.get(Kinds.Service, 'web', 'demo'))).code).toBe('ECNET_SOURCE_CLOSED');
    await source.close();
    expect(clock.pending.size).toBe(0);
    await vi.waitFor(() => expect(server.openWatches).toBe(0));
  });
});
