// `npm run bench`: how fast exports become imports, local mode, `ecnet controller` as its own process.
//  1. bulk: 1,000 exports (each with its Service) across 3 members; time from the last write until all 3
//     members hold all 1,000 imports with their ClusterIP. Baseline, same run: the same 2,000 writes seen
//     by a watcher of another process (what the local source itself costs, no controller).
//  2. single change: one exporting Service gains a port; time until the imports of all 3 members show it,
//     p50/p99 over many changes. Baseline: one write seen by a watcher of the same directory.
// Needs no privileges. Figures are ratios against the baseline; absolute times are for context.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Service } from '../../src/api/core.js';
import type { Cluster, ServiceExport, ServiceImport } from '../../src/api/flomesh.js';
import { packageRoot } from '../../src/paths.js';
import { LocalSource } from '../../src/sources/local.js';
import { type Informer, Kinds } from '../../src/sources/source.js';

const EXPORTS = 1000;
const MEMBERS = ['cluster-1', 'cluster-2', 'cluster-3'];
const CHANGES = Number(process.env.CHANGES ?? 60);
const cli = join(packageRoot, 'dist', 'cli', 'main.js');

const now = () => Number(process.hrtime.bigint()) / 1e6;
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
const f1 = (n: number) => n.toFixed(1);

function until(cond: () => boolean, timeoutMs: number, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const end = Date.now() + timeoutMs;
    const tick = () => {
      if (cond()) return resolve(now());
      if (Date.now() > end) return reject(new Error(`timed out: ${what}`));
      setImmediate(tick);
    };
    tick();
  });
}

const svc = (i: number, ports = [{ name: 'http', port: 8080 }]): Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: `svc-${i}`, namespace: 'bench' },
  spec: { ports, selector: { app: `svc-${i}` } },
});
const exp = (i: number): ServiceExport => ({
  apiVersion: 'flomesh.io/v1alpha1',
  kind: 'ServiceExport',
  metadata: { name: `svc-${i}`, namespace: 'bench' },
  spec: { loadBalancer: 'RoundRobinLoadBalancer' },
});

async function baselineBulk(root: string): Promise<number> {
  const dir = join(root, 'baseline');
  mkdirSync(dir);
  const watcher = new LocalSource({ dir });
  const seen = watcher.informer(Kinds.Service);
  await seen.synced;
  const writer = new LocalSource({ dir, watch: false });
  for (let i = 0; i < EXPORTS; i++) {
    await writer.apply(svc(i), { manager: 'bench' });
    await writer.apply({ ...exp(i) }, { manager: 'bench' });
  }
  const last = now();
  const done = await until(() => seen.list().length === EXPORTS, 60_000, 'baseline watcher');
  writer.destroy();
  watcher.destroy();
  return done - last;
}

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'ecnet-bench-prop-'));
  let controller: ChildProcess | undefined;
  const sources: LocalSource[] = [];
  try {
    for (const d of ['control-plane', ...MEMBERS]) mkdirSync(join(root, d));
    const hub = new LocalSource({ dir: join(root, 'control-plane'), watch: false });
    sources.push(hub);
    for (const [i, m] of MEMBERS.entries()) {
      const c: Cluster = { apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: m }, spec: { region: 'default', zone: 'default', group: 'default', gatewayHost: `10.0.2.${4 + i}`, gatewayPort: 80 } };
      await hub.apply(c, { manager: 'bench' });
    }
    controller = spawn(process.execPath, [cli, 'controller', '--clusters-dir', root], { stdio: ['ignore', 'ignore', 'inherit'] });

    // Watch the imports of every member from this process, as an agent would.
    const importers: Informer<ServiceImport>[] = [];
    const writers = new Map<string, LocalSource>();
    for (const m of MEMBERS) {
      const w = new LocalSource({ dir: join(root, m) });
      sources.push(w);
      importers.push(w.informer<ServiceImport>(Kinds.ServiceImport));
      const u = new LocalSource({ dir: join(root, m), watch: false });
      sources.push(u);
      writers.set(m, u);
    }
    await Promise.all(importers.map((i) => i.synced));

    // 1. bulk
    const t0 = now();
    for (let i = 0; i < EXPORTS; i++) {
      const w = writers.get(MEMBERS[i % MEMBERS.length]!)!;
      await w.apply(svc(i), { manager: 'bench' });
      await w.apply(exp(i), { manager: 'bench' });
    }
    const lastWrite = now();
    const converged = await until(
      () => importers.every((inf) => inf.list().filter((x) => x.spec.ips?.length && x.spec.ports[0]?.endpoints.length === 1).length === EXPORTS),
      120_000,
      'bulk convergence',
    );
    const bulk = converged - lastWrite;
    const base = await baselineBulk(root);

    // 2. single changes: svc-N gains a port; visible in all three members' imports.
    const single: number[] = [];
    for (let k = 0; k < CHANGES; k++) {
      const i = k % EXPORTS;
      const owner = writers.get(MEMBERS[i % MEMBERS.length]!)!;
      const ports = [{ name: 'http', port: 8080 }, { name: `extra-${k}`, port: 9000 + k }];
      const start = now();
      await owner.apply(svc(i, ports), { manager: 'bench' });
      const end = await until(() => importers.every((inf) => inf.get(`svc-${i}`, 'bench')?.spec.ports.some((p) => p.port === 9000 + k) ?? false), 10_000, `change ${k}`);
      single.push(end - start);
    }
    const baseSingle: number[] = [];
    {
      const dir = join(root, 'baseline-single');
      mkdirSync(dir);
      const watcher = new LocalSource({ dir });
      const seen = watcher.informer(Kinds.Service);
      await seen.synced;
      const writer = new LocalSource({ dir, watch: false });
      for (let k = 0; k < CHANGES; k++) {
        const start = now();
        await writer.apply(svc(0, [{ name: 'http', port: 9000 + k }]), { manager: 'bench' });
        const end = await until(() => (seen.get('svc-0', 'bench')?.spec as Service['spec'] | undefined)?.ports?.[0]?.port === 9000 + k, 10_000, 'baseline change');
        baseSingle.push(end - start);
      }
      watcher.destroy();
      writer.destroy();
    }

    console.log(`propagation benchmark (local mode, ${cpus().length} cores, controller in its own process)`);
    console.log(`  writes of ${EXPORTS} exports + Services across ${MEMBERS.length} members: ${f1(lastWrite - t0)} ms`);
    console.log(`  bulk: last write → ${EXPORTS * MEMBERS.length} imports converged: ${f1(bulk)} ms`);
    console.log(`        baseline (the same ${EXPORTS * 2} writes seen by a watcher): ${f1(base)} ms   ratio ${f1(bulk / Math.max(base, 0.1))}×`);
    console.log(`  single change → visible in all ${MEMBERS.length} members (${CHANGES} changes): p50 ${f1(pct(single, 50))} ms, p99 ${f1(pct(single, 99))} ms`);
    console.log(`        baseline (one write seen by a watcher): p50 ${f1(pct(baseSingle, 50))} ms, p99 ${f1(pct(baseSingle, 99))} ms   ratio p50 ${f1(pct(single, 50) / pct(baseSingle, 50))}×, p99 ${f1(pct(single, 99) / pct(baseSingle, 99))}×`);
    const ok = pct(single, 99) < 1000;
    console.log(`  single-change p99 < 1 s: ${ok ? 'yes' : 'NO'}`);
    if (!ok) process.exitCode = 1;
  } finally {
    controller?.kill('SIGTERM');
    for (const s of sources) s.destroy();
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
