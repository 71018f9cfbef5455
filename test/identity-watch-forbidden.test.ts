// A member whose RBAC predates the identity Secret's watch (get and update on ecnet-identity, no list/watch):
// the controller still issues its identity (a GET stands in), and the refused watch is retried with backoff,
// not in a loop.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Secret } from '../src/api/core.js';
import { Kinds, type KubeObject } from '../src/sources/source.js';
import { type ControlledSet, startControlledSet } from './helpers/controlled-set.js';
import { type KubeApiServer, startKubeApiServer } from './helpers/kube-api-server.js';

describe('a member that refuses the identity Secret watch (older RBAC)', () => {
  let member: KubeApiServer;
  let set: ControlledSet;
  beforeAll(async () => {
    member = await startKubeApiServer({ bookmarkIntervalMs: 100 });
    member.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ecnet-system' } } as KubeObject);
    member.failNext(1_000_000, 403, { method: 'GET', path: '/api/v1/namespaces/ecnet-system/secrets' });
    set = await startControlledSet([['cluster-1', member]], { subnet: '10.0.5', resyncMs: 500, identities: true });
  });
  afterAll(async () => {
    await set?.close();
  });

  it('issues the identity anyway and retries the watch with backoff', async () => {
    const end = Date.now() + 10_000;
    while (!member.object<Secret>(Kinds.Secret, 'ecnet-system', 'ecnet-identity') && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    expect(member.object<Secret>(Kinds.Secret, 'ecnet-system', 'ecnet-identity')).toBeDefined();
    const t0 = Date.now();
    const lists = () => member.requests.filter((r) => r.path === '/api/v1/namespaces/ecnet-system/secrets').length;
    const gets = () => member.requests.filter((r) => r.method === 'GET' && r.path === '/api/v1/namespaces/ecnet-system/secrets/ecnet-identity').length;
    const [l0, g0] = [lists(), gets()];
    await new Promise((r) => setTimeout(r, 3_000));
    console.error('FORBIDDEN', { lists: lists() - l0, gets: gets() - g0, ms: Date.now() - t0 });
    expect(lists() - l0).toBeLessThan(10);
  });
});
