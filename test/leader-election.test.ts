// Leader election of `ecnet controller --leader-elect`, through client-node's CoordinationV1Api against the
// in-memory API server. Time is a manual clock that only moves while no lease request is in flight, so the
// outcome does not depend on how fast this machine answers HTTP.
import { KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, controllerConfig, leaderElectionDefaults } from '../src/config.js';
import { LeaderElector, type LeaseClient, kubernetesLeaseClient } from '../src/controlplane/leader.js';
import type { KindRef, KubeObject } from '../src/sources/source.js';
import { ManualClock } from './helpers/clocks.js';
import { type KubeApiServer, startKubeApiServer } from './helpers/kube-api-server.js';

const Lease: KindRef = { group: 'coordination.k8s.io', version: 'v1', kind: 'Lease', plural: 'leases', namespaced: true };
const NS = 'ecnet-system';
const NAME = 'ecnet-controller';
const timing = { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 200 };

let server: KubeApiServer;
let clock: ManualClock;
let inflight = 0;
let electors: LeaderElector[] = [];

/** Counts requests in flight, so time stands still while one is. */
function counted(c: LeaseClient): LeaseClient {
  const wrap =
    <A extends unknown[], R>(f: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      inflight++;
      try {
        return await f(...a);
      } finally {
        inflight--;
      }
    };
  return { get: wrap(c.get), create: wrap(c.create), replace: wrap(c.replace) };
}

async function settle(): Promise<void> {
  do await new Promise((r) => setTimeout(r, 2));
  while (inflight > 0);
  await new Promise((r) => setTimeout(r, 1));
}

/** Advances the clock by `ms` in small steps, letting requests finish in between. */
async function advance(ms: number, stepMs = 50): Promise<void> {
  for (let done = 0; done < ms; done += stepMs) {
    await settle();
    clock.step(Math.min(stepMs, ms - done));
  }
  await settle();
}

/** Advances until `cond` holds; returns the time it took, or throws after `maxMs`. */
async function until(cond: () => boolean, maxMs: number): Promise<number> {
  const start = clock.now();
  while (!cond()) {
    if (clock.now() - start > maxMs) throw new Error(`condition not met within ${maxMs} ms of clock time`);
    await advance(50);
  }
  return clock.now() - start;
}

function elector(identity: string, client?: LeaseClient): LeaderElector {
  const kc = new KubeConfig();
  kc.loadFromString(server.kubeconfig);
  const e = new LeaderElector({ client: client ?? counted(kubernetesLeaseClient(kc)), namespace: NS, name: NAME, identity, clock, random: () => 0.5, ...timing });
  electors.push(e);
  return e;
}

type StoredLease = KubeObject & { spec?: NonNullable<V1Lease['spec']> };
const lease = () => server.object<StoredLease>(Lease, NS, NAME);

beforeEach(async () => {
  server = await startKubeApiServer({ kinds: [Lease] });
  server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  clock = new ManualClock();
  inflight = 0;
  electors = [];
});

afterEach(async () => {
  for (const e of electors) e.destroy();
  await settle();
  await server.close();
});

describe('leader election on a Lease', () => {
  it('one of two candidates leads; the other takes over once the leader stops renewing, and not before the lease expired', async () => {
    const a = elector('controller-a');
    const b = elector('controller-b');
    void a.acquire();
    await until(() => a.isLeader, 1000);
    void b.acquire();
    // The leader renews; the follower keeps seeing fresh records and never takes over.
    await advance(3 * timing.leaseDurationMs);
    expect([a.isLeader, b.isLeader]).toEqual([true, false]);
    expect(lease()?.spec).toMatchObject({ holderIdentity: 'controller-a', leaseDurationSeconds: 2, leaseTransitions: 0 });

    // a crashes (no release): b waits for the lease duration on its own clock, then takes over.
    a.destroy();
    const took = await until(() => b.isLeader, 3 * timing.leaseDurationMs);
    expect(took).toBeGreaterThanOrEqual(timing.leaseDurationMs);
    expect(took).toBeLessThanOrEqual(timing.leaseDurationMs + 2 * timing.retryPeriodMs + 100);
    expect(lease()?.spec).toMatchObject({ holderIdentity: 'controller-b', leaseTransitions: 1 });
  });

  it('close() releases the lease: a waiting candidate takes over within a retry period, not a lease duration', async () => {
    const a = elector('controller-a');
    const b = elector('controller-b');
    void a.acquire();
    await until(() => a.isLeader, 1000);
    void b.acquire();
    await advance(timing.leaseDurationMs);
    const closing = a.close();
    await settle();
    await closing;
    expect(a.isLeader).toBe(false);
    expect(lease()?.spec?.holderIdentity).toBe('');
    const took = await until(() => b.isLeader, timing.leaseDurationMs);
    expect(took).toBeLessThanOrEqual(2 * timing.retryPeriodMs);
    await expect(a.acquire()).rejects.toMatchObject({ code: 'ECNET_LEADER_CLOSED' });
  });

  it('candidates starting together: exactly one wins (create and update carry preconditions)', async () => {
    const all = ['a', 'b', 'c'].map((n) => elector(`controller-${n}`));
    for (const e of all) void e.acquire();
    await until(() => all.some((e) => e.isLeader), 1000);
    await advance(3 * timing.leaseDurationMs);
    expect(all.filter((e) => e.isLeader).map((e) => e.identity)).toEqual([lease()?.spec?.holderIdentity]);
    expect(server.requests.filter((r) => r.method === 'POST').length).toBeGreaterThanOrEqual(1);
  });

  it('a leader that cannot renew for the renew deadline gives up (before anyone else may take over)', async () => {
    const a = elector('controller-a');
    void a.acquire();
    await until(() => a.isLeader, 1000);
    server.failNext(1000, 503, { path: /\/leases\// });
    const lostAfter = await until(() => !a.isLeader, 2 * timing.leaseDurationMs);
    expect(lostAfter).toBeLessThanOrEqual(timing.renewDeadlineMs + timing.retryPeriodMs);
    expect(lostAfter).toBeLessThan(timing.leaseDurationMs);
    await expect(a.lost).resolves.toMatchObject({ code: 'ECNET_LEADER_LOST' });
  });

  it('a leader that finds the lease held by someone else steps down at once', async () => {
    const a = elector('controller-a');
    void a.acquire();
    await until(() => a.isLeader, 1000);
    const l = lease()!;
    server.put({ ...l, spec: { ...l.spec, holderIdentity: 'intruder' } });
    await until(() => !a.isLeader, 2 * timing.retryPeriodMs);
    await expect(a.lost).resolves.toMatchObject({ code: 'ECNET_LEADER_LOST', message: expect.stringMatching(/held by intruder/) });
  });
});

describe('controller flags: --leader-elect', () => {
  const kube = { kubeconfig: '/dev/null' };
  it('is off by default, and its other flags need it', () => {
    expect(controllerConfig(kube, {}).leaderElection).toBeUndefined();
    expect(() => controllerConfig({ ...kube, leaderElectName: 'x' }, {})).toThrow(/--leader-elect-name needs --leader-elect/);
  });

  it('takes the pod identity and namespace from the downward API, durations from flags', () => {
    const cfg = controllerConfig({ ...kube, leaderElect: true, leaderElectLeaseDuration: '30s' }, { POD_NAME: 'ecnet-controller-7d9-abc', POD_NAMESPACE: 'mcs' });
    expect(cfg.leaderElection).toEqual({ ...leaderElectionDefaults, namespace: 'mcs', identity: 'ecnet-controller-7d9-abc', leaseDurationMs: 30_000 });
    expect(controllerConfig({ ...kube, leaderElect: true, leaderElectNamespace: 'x' }, { POD_NAMESPACE: 'mcs' }).leaderElection?.namespace).toBe('x');
  });

  it('refuses a local hub and inconsistent durations', () => {
    expect(() => controllerConfig({ clustersDir: '/tmp/x', leaderElect: true }, {})).toThrow(ConfigError);
    expect(() => controllerConfig({ ...kube, leaderElect: true, leaderElectRenewDeadline: '20s' }, {})).toThrow(/lease duration > renew deadline/);
  });
});
