// The agent against what a tenant or an operator can do to it (found by a hostile review of the incremental
// agent): an import without a spec, an import asking for thousands of ports its Service does not have, and the
// map changed behind the agent's back. A MemorySource feeds the real Agent; the redirect set is a stand-in
// that behaves as the map's diff writer does. No privileges.
import { afterEach, describe, expect, it } from 'vitest';
import { Agent, RouteMap, type RedirectSet } from '../src/agent/agent.js';
import { MAX_PORTS_PER_IMPORT } from '../src/agent/desired.js';
import { serviceKeyCodec, serviceValueCodec } from '../src/bpf/codecs.js';
import { ServiceTable } from '../src/bpf/services.js';
import { FakeMap } from './helpers/fake-map.js';
import { MemorySource, memoryRedirects } from './helpers/memory-source.js';
import { clusterKey, kube, service, serviceImport, trafficPolicy } from './helpers/objects.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(5);
  }
}

describe('agent: what a tenant or an operator can do to it', () => {
  let agent: Agent | undefined;
  afterEach(() => agent?.destroy());

  const start = async (src: MemorySource, map: RedirectSet, resyncMs?: number) => {
    agent = new Agent({ source: src, localCluster: clusterKey(2), redirects: map, routes: new RouteMap(), debounceMs: 5, ...(resyncMs ? { resyncMs } : {}) });
    await agent.start();
    return agent;
  };

  it('an import without a spec is reported and costs only itself: later changes of others still reach the map', async () => {
    const src = new MemorySource();
    for (const o of [service('a', 'web', { clusterIP: '10.96.0.2' }), serviceImport('a', 'web', { ips: ['10.96.0.2'] }), trafficPolicy('a', 'web')]) src.put(kube(o));
    src.put({ apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceImport', metadata: { name: 'broken', namespace: 'b' } });
    const map = memoryRedirects();
    const a = await start(src, map);
    expect([...map.held.keys()]).toEqual(['10.96.0.2:80']);
    expect(a.status.degraded).toEqual([{ import: 'b/broken', error: 'it has no spec: not redirected' }]);
    src.put(kube(service('c', 'api', { clusterIP: '10.96.0.3', ports: [{ port: 81 }] })));
    src.put(kube(serviceImport('c', 'api', { ips: ['10.96.0.3'], ports: [81] })));
    src.put(kube(trafficPolicy('c', 'api')));
    await until(() => map.held.has('10.96.0.3:81'), 'the other import redirected');
    expect(a.status.lastError).toBeUndefined();
  });

  it('an import cannot make up ports: only its Service\'s, at most MAX_PORTS_PER_IMPORT, and the rest is reported', async () => {
    const src = new MemorySource();
    const many = Array.from({ length: 16_000 }, (_, i) => 1000 + i);
    src.put(kube(service('aaa', 'greedy', { clusterIP: '10.96.0.9', ports: many.slice(0, 150).map((port) => ({ port })) })));
    src.put(kube(serviceImport('aaa', 'greedy', { ips: ['10.96.0.9'], ports: many })));
    src.put(kube(trafficPolicy('aaa', 'greedy')));
    const map = memoryRedirects();
    const a = await start(src, map);
    expect(map.held.size).toBe(MAX_PORTS_PER_IMPORT);
    expect(a.status.degraded.map((p) => p.error)).toEqual([
      `150 ports: only the first ${MAX_PORTS_PER_IMPORT} are redirected`,
      'port 1150, 1151, 1152, 1153, 1154, … is not a port of Service aaa/greedy in this cluster: not redirected',
    ]);
  });

  it('what an operator changed in the map behind its back is written over at the next resync', async () => {
    const src = new MemorySource();
    for (const o of [service('a', 'web', { clusterIP: '10.96.0.2' }), serviceImport('a', 'web', { ips: ['10.96.0.2'] }), trafficPolicy('a', 'web')]) src.put(kube(o));
    const map = memoryRedirects();
    await start(src, map, 200);
    map.held.delete('10.96.0.2:80');
    map.held.set('10.96.0.7:80', { ip: '10.96.0.7', port: 80, protocol: 'tcp', id: 1, disabled: false });
    await until(() => map.held.has('10.96.0.2:80') && !map.held.has('10.96.0.7:80'), 'the map written whole again');
  });

  it('the resync repairs the real ServiceTable too, whose replaceAll otherwise trusts what it last wrote', async () => {
    const src = new MemorySource();
    for (const o of [service('a', 'web', { clusterIP: '10.96.0.2' }), serviceImport('a', 'web', { ips: ['10.96.0.2'] }), trafficPolicy('a', 'web')]) src.put(kube(o));
    const map = new FakeMap(100);
    const table = new ServiceTable(() => map);
    await start(src, table, 200);
    const key = (ip: string) => serviceKeyCodec.encode({ ip, port: 80, protocol: 'tcp' }).toString('hex');
    expect([...map.data.keys()]).toEqual([key('10.96.0.2')]);
    map.data.delete(key('10.96.0.2'));
    map.data.set(key('10.96.0.7'), serviceValueCodec.encode({ id: 1, disabled: false }));
    await until(() => map.data.has(key('10.96.0.2')) && !map.data.has(key('10.96.0.7')), 'the map checked and written again');
  });
});

