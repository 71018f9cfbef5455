// Convergence over random event sequences: exports, Services and Clusters come and go in random order (with
// late joiners and deleted members), written by another "process" into real cluster directories while the
// controller runs. After each sequence, what every member holds must equal a fresh aggregation of the current
// state — whatever order things happened in.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Service } from '../src/api/core.js';
import type { Cluster, ServiceExport, ServiceImport } from '../src/api/flomesh.js';
import { type MemberView, aggregate, isManaged } from '../src/controlplane/aggregate.js';
import { canonical } from '../src/controlplane/conditions.js';
import { memberConnector } from '../src/controlplane/connect.js';
import { Controller } from '../src/controlplane/controller.js';
import { clusterKeyOf } from '../src/controlplane/members.js';
import { LocalSource } from '../src/sources/local.js';
import { Kinds } from '../src/sources/source.js';

/** mulberry32: a small seeded PRNG, so a failing sequence can be replayed from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const MEMBERS = ['m1', 'm2', 'm3', 'm4'];
const SERVICES = ['alpha', 'beta', 'gamma'];
const PORTS = [[{ name: 'http', port: 80 }], [{ name: 'http', port: 8080 }], [{ name: 'http', port: 80 }, { name: 'grpc', port: 9000 }], [{ port: 80 }]];

const cluster = (name: string, n: number): Cluster => ({
  apiVersion: 'flomesh.io/v1alpha1',
  kind: 'Cluster',
  metadata: { name },
  spec: { region: 'r', zone: 'z', group: 'g', gatewayHost: `192.0.2.${n}`, gatewayPort: 8443 },
});
const exportOf = (name: string, targets?: string[]): ServiceExport => ({
  apiVersion: 'flomesh.io/v1alpha1',
  kind: 'ServiceExport',
  metadata: { name, namespace: 'shop' },
  spec: { loadBalancer: 'RoundRobinLoadBalancer', ...(targets ? { targetClusters: targets } : {}) },
});
const serviceOf = (name: string, ports: (typeof PORTS)[number], external = false): Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'shop' },
  spec: external ? { type: 'ExternalName', externalName: 'example.org', ports } : { ports, selector: { app: name } },
});

describe('controller convergence over random event sequences (local mode)', () => {
  const roots: string[] = [];
  afterAll(() => {
    for (const r of roots) rmSync(r, { recursive: true, force: true });
  });

  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it(`seed ${seed}: members hold what a fresh computation gives`, async () => {
      const rand = prng(seed);
      const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
      const root = mkdtempSync(join(tmpdir(), `ecnet-conv-${seed}-`));
      roots.push(root);
      mkdirSync(join(root, 'control-plane'));
      // The "user": writes through sources of its own, as another process would.
      const user = new Map<string, LocalSource>();
      const userSource = (name: string) => {
        let s = user.get(name);
        if (!s) user.set(name, (s = new LocalSource({ dir: join(root, name), watch: false })));
        return s;
      };
      const registered = new Set<string>();
      for (const m of MEMBERS.slice(0, 2)) {
        mkdirSync(join(root, m));
        await userSource('control-plane').apply(cluster(m, MEMBERS.indexOf(m) + 1), { manager: 'test' });
        registered.add(m);
      }
      const controlPlane = new LocalSource({ dir: join(root, 'control-plane'), rescanMs: 500 });
      const controller = new Controller({ controlPlane, connect: memberConnector({ controlPlane, clustersDir: root }), memberTimeoutMs: 60_000, resyncMs: 1_000, debounceMs: 5 });
      const log: string[] = [];
      try {
        await controller.start();
        // Converged: every member's imports, derived Services and export conditions are the fresh computation's.
        const fresh = async () => {
          const clusters = await userSource('control-plane').list<Cluster>(Kinds.Cluster);
          const views: MemberView[] = [];
          for (const c of clusters) {
            const src = userSource(c.metadata.name);
            views.push({
              name: c.metadata.name,
              key: clusterKeyOf(c),
              gateway: { host: c.spec.gatewayHost!, port: c.spec.gatewayPort },
              exports: await src.list<ServiceExport>(Kinds.ServiceExport),
              services: await src.list<Service>(Kinds.Service),
            });
          }
          return { views, desired: aggregate(views) };
        };
        const mismatch = async (): Promise<string | undefined> => {
          for (const s of user.values()) s.destroy();
          user.clear();
          const { views, desired } = await fresh();
          for (const v of views) {
            const d = desired.get(v.name)!;
            const src = userSource(v.name);
            const imports = (await src.list<ServiceImport>(Kinds.ServiceImport)).filter(isManaged);
            const want = [...d.imports.values()].map((i) => ({ key: `${i.namespace}/${i.name}`, spec: i.spec, clusters: i.clusters })).sort((a, b) => (a.key < b.key ? -1 : 1));
            const have = imports
              .map((i) => ({ key: `${i.metadata.namespace}/${i.metadata.name}`, spec: i.spec, clusters: (i.status?.clusters ?? []).map((c) => c.cluster) }))
              .sort((a, b) => (a.key < b.key ? -1 : 1));
            if (canonical(want) !== canonical(have)) return `${v.name} imports: want ${canonical(want)}\n have ${canonical(have)}`;
            const derived = v.services.filter(isManaged).map((s) => `${s.metadata.namespace}/${s.metadata.name}`).sort();
            if (canonical(derived) !== canonical([...d.services.keys()].sort())) return `${v.name} derived services: want ${[...d.services.keys()]} have ${derived}`;
            for (const e of v.exports) {
              const cond = d.exportConditions.get(`${e.metadata.namespace}/${e.metadata.name}`)!;
              const got = (e.status?.conditions ?? []).map((c) => ({ type: c.type, status: c.status, reason: c.reason, message: c.message }));
              if (canonical(got) !== canonical(cond)) return `${v.name} export ${e.metadata.name} conditions: want ${canonical(cond)} have ${canonical(got)}`;
            }
          }
          // A deleted member keeps nothing ecnet wrote.
          for (const m of MEMBERS.filter((x) => !registered.has(x))) {
            const left = (await userSource(m).list<ServiceImport>(Kinds.ServiceImport).catch(() => [])).filter(isManaged);
            if (left.length) return `deleted member ${m} still has imports ${left.map((i) => i.metadata.name)}`;
          }
          return undefined;
        };
        const converge = async (step: number) => {
          const deadline = Date.now() + 15_000;
          let last: string | undefined;
          while ((last = await mismatch()) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
          expect(last, `seed ${seed}, step ${step}, after:\n${log.join('\n')}`).toBeUndefined();
        };
        for (let step = 1; step <= 60; step++) {
          const m = pick(MEMBERS);
          const svc = pick(SERVICES);
          const r = rand();
          if (!registered.has(m) || r < 0.05) {
            if (registered.has(m) && registered.size > 1) {
              log.push(`delete cluster ${m}`);
              await userSource('control-plane').delete(Kinds.Cluster, m);
              registered.delete(m);
            } else if (!registered.has(m)) {
              // A late joiner: sometimes its directory (with exports already in it) exists first, sometimes after.
              log.push(`join ${m}`);
              if (rand() < 0.5) mkdirSync(join(root, m), { recursive: true });
              await userSource('control-plane').apply(cluster(m, MEMBERS.indexOf(m) + 1), { manager: 'test' });
              registered.add(m);
              mkdirSync(join(root, m), { recursive: true });
            }
          } else if (r < 0.35) {
            const targets = rand() < 0.15 ? [`r/z/g/${pick(MEMBERS)}`] : undefined;
            log.push(`export ${m}/${svc}${targets ? ` to ${targets[0]}` : ''}`);
            await userSource(m).apply(exportOf(svc, targets), { manager: 'test' });
          } else if (r < 0.5) {
            log.push(`unexport ${m}/${svc}`);
            await userSource(m).delete(Kinds.ServiceExport, svc, 'shop');
          } else if (r < 0.8) {
            const ports = pick(PORTS);
            const external = rand() < 0.08;
            log.push(`service ${m}/${svc} ${JSON.stringify(ports)}${external ? ' ExternalName' : ''}`);
            await userSource(m).apply(serviceOf(svc, ports, external), { manager: 'test' });
          } else {
            log.push(`delete service ${m}/${svc}`);
            const own = await userSource(m).get<Service>(Kinds.Service, svc, 'shop');
            if (own && !isManaged(own)) await userSource(m).delete(Kinds.Service, svc, 'shop');
          }
          if (rand() < 0.3) await new Promise((res) => setTimeout(res, rand() * 40));
          if (step % 10 === 0) await converge(step);
        }

        // And something happened at all: the sequence exported at least one service somewhere.
        expect(log.some((l) => l.startsWith('export'))).toBe(true);
      } finally {
        await controller.close();
        controlPlane.destroy();
        for (const s of user.values()) s.destroy();
      }
    });
  }
});

describe('controller restarts (local mode)', () => {
  it('a new controller over a converged set writes nothing and deletes nothing, and goes on from there', async () => {
    const root = mkdtempSync(join(tmpdir(), 'ecnet-restart-'));
    mkdirSync(join(root, 'control-plane'));
    const user = (name: string) => new LocalSource({ dir: join(root, name), watch: false });
    const cp = user('control-plane');
    for (const [i, m] of ['m1', 'm2'].entries()) {
      mkdirSync(join(root, m));
      await cp.apply(cluster(m, i + 1), { manager: 'test' });
      const src = user(m);
      for (const svc of SERVICES) {
        await src.apply(serviceOf(svc, PORTS[0]!), { manager: 'test' });
        await src.apply(exportOf(svc), { manager: 'test' });
      }
      src.destroy();
    }
    cp.destroy();
    const controlPlane = new LocalSource({ dir: join(root, 'control-plane'), rescanMs: 500 });
    const start = async () => {
      const c = new Controller({ controlPlane, connect: memberConnector({ controlPlane, clustersDir: root }), memberTimeoutMs: 60_000, resyncMs: 1_000, debounceMs: 5 });
      await c.start();
      return c;
    };
    const importsOf = async (m: string) => {
      const src = user(m);
      try {
        return (await src.list<ServiceImport>(Kinds.ServiceImport)).filter(isManaged).map((i) => `${m}:${i.metadata.name}@${i.metadata.resourceVersion}`).sort();
      } finally {
        src.destroy();
      }
    };
    const until = async (what: string, ok: () => Promise<boolean>) => {
      const deadline = Date.now() + 15_000;
      while (!(await ok())) {
        if (Date.now() > deadline) throw new Error(`not within 15 s: ${what}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    let controller = await start();
    try {
      await until('3 imports in each member', async () => (await importsOf('m1')).length === 3 && (await importsOf('m2')).length === 3);
      // Settled: two resyncs later, the same objects at the same resourceVersions.
      await new Promise((r) => setTimeout(r, 2_500));
      const before = [...(await importsOf('m1')), ...(await importsOf('m2'))];
      // A crash (no close: nothing released), then the next controller, which resyncs every second.
      controller.destroy();
      controller = await start();
      await new Promise((r) => setTimeout(r, 2_500));
      expect([...(await importsOf('m1')), ...(await importsOf('m2'))]).toEqual(before);
      // And it carries on: an export withdrawn in m1 and m2 leaves no import of it anywhere.
      for (const m of ['m1', 'm2']) {
        const src = user(m);
        await src.delete(Kinds.ServiceExport, 'beta', 'shop');
        src.destroy();
      }
      await until('beta imported nowhere', async () => ![...(await importsOf('m1')), ...(await importsOf('m2'))].some((i) => i.includes(':beta@')));
      expect((await importsOf('m1')).length).toBe(2);
    } finally {
      await controller.close();
      controlPlane.destroy();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
