// The controller's metrics as Prometheus scrapes them (the real HTTP server, read with the strict parser): three
// members held in memory, whose API can be made unreachable or refuse writes; status writes come back as
// events, as an API server's do. What is counted must match what happened.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { parse } from 'yaml';
import type { Service } from '../src/api/core.js';
import type { Cluster, ServiceExport, ServiceImport } from '../src/api/flomesh.js';
import { Controller } from '../src/controlplane/controller.js';
import { type ControllerPhase, ControllerMetrics, controllerProbes } from '../src/controlplane/metrics.js';
import { type Family, parseMetrics, sumOf } from '../src/metrics/parse.js';
import { componentRegistry } from '../src/metrics/registry.js';
import { startMetricsServer } from '../src/metrics/server.js';
import { packageRoot } from '../src/paths.js';
import { type ApplyOptions, type Informer, type InformerOptions, type KindRef, Kinds, type KubeObject, SourceError } from '../src/sources/source.js';
import { MemorySource } from './helpers/memory-source.js';

/** A member in memory whose API can go away (informers unhealthy, writes refused) or refuse writes only. */
class MemberApi extends MemorySource {
  reachable = true;
  refuseWrites = false;
  readonly #health = new Set<(err: Error | undefined) => void>();

  override informer<T extends KubeObject = KubeObject>(kind: KindRef, options: InformerOptions<T> = {}): Informer<T> {
    const inner = super.informer<T>(kind, options);
    const self = this;
    const onHealth = options.onHealth;
    if (onHealth) this.#health.add(onHealth);
    return {
      kind: inner.kind,
      synced: inner.synced,
      get isSynced() {
        return inner.isSynced;
      },
      get healthy() {
        return self.reachable;
      },
      get lastError() {
        return self.reachable ? undefined : new SourceError('ECNET_SOURCE_UNREACHABLE', 'member down');
      },
      list: (ns?: string) => inner.list(ns),
      get: (name: string, ns?: string) => inner.get(name, ns),
      close: () => {
        if (onHealth) this.#health.delete(onHealth);
        inner.close();
      },
    };
  }

  setReachable(v: boolean): void {
    this.reachable = v;
    for (const h of [...this.#health]) h(v ? undefined : new SourceError('ECNET_SOURCE_UNREACHABLE', 'member down'));
  }

  #check(): void {
    if (!this.reachable || this.refuseWrites) throw new SourceError('ECNET_SOURCE_UNREACHABLE', 'write refused');
  }

  override async apply<T extends KubeObject = KubeObject>(object: T, options: ApplyOptions): Promise<T> {
    this.#check();
    return super.apply(object, options);
  }

  override async delete(kind: KindRef, name: string, namespace?: string): Promise<boolean> {
    this.#check();
    return super.delete(kind, name, namespace);
  }

  /** As an API server: the status lands on the object, and watchers hear of it. */
  override async writeStatus(kind: KindRef, name: string, namespace: string | undefined, status: unknown): Promise<void> {
    this.#check();
    const o = await this.get(kind, name, namespace);
    if (o) this.put({ ...o, status } as KubeObject);
  }
}

const MEMBERS = ['m1', 'm2', 'm3'];
const service = (name: string, port: number, portName = 'http'): Service => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' }, spec: { ports: [{ name: portName, port, protocol: 'TCP' }], selector: { app: name } } });
const serviceExport = (name: string): ServiceExport => ({ apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceExport', metadata: { name, namespace: 'shop' }, spec: { loadBalancer: 'RoundRobinLoadBalancer' } });

async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    const v = await fn();
    if (v) return v;
    last = v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the controller\'s metrics, scraped', () => {
  const apis = new Map<string, MemberApi>();
  const controlPlane = new MemorySource();
  let controller: Controller;
  let server: Server;
  let phase: ControllerPhase = 'starting';
  let base = '';
  const scrape = async (): Promise<Map<string, Family>> => {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    return parseMetrics(await res.text());
  };
  const value = async (name: string, labels: Record<string, string> = {}, sample = name) => sumOf(await scrape(), name, labels, sample);
  const propagated = () => value('ecnet_controller_propagation_seconds', {}, 'ecnet_controller_propagation_seconds_count');
  const importsOf = async (m: string) => (await apis.get(m)!.list<ServiceImport>(Kinds.ServiceImport)).map((i) => i.metadata.name).sort();
  /** Waits for `n` more passes to end: whatever was set off before has been looked at. */
  const passesLater = async (n = 2) => {
    const target = controller.passes + n;
    controller.trigger();
    await until(`${n} more passes`, () => {
      controller.trigger();
      return controller.passes >= target;
    });
    await until('those passes to end', async () => (await value('ecnet_controller_reconcile_duration_seconds', {}, 'ecnet_controller_reconcile_duration_seconds_count')) >= target);
  };

  beforeAll(async () => {
    for (const [i, name] of MEMBERS.entries()) {
      const api = new MemberApi();
      apis.set(name, api);
      controlPlane.put({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name }, spec: { region: 'r', zone: 'z', group: 'g', gatewayHost: `192.0.2.${i + 1}`, gatewayPort: 8443 } } as Cluster);
    }
    // There before the controller starts: learned, not a change.
    apis.get('m1')!.put(service('web', 80));
    apis.get('m1')!.put(serviceExport('web'));
    const registry = componentRegistry('controller');
    const metrics = new ControllerMetrics(registry);
    metrics.setLeader(true);
    server = await startMetricsServer(registry, { host: '127.0.0.1', port: 0, extra: controllerProbes(() => phase) });
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    controller = new Controller({ controlPlane, connect: async (c) => apis.get(c.metadata.name)!, memberTimeoutMs: 60_000, resyncMs: 60_000, debounceMs: 5, metrics, logger: pino({ level: 'silent' }) });
  });
  afterAll(async () => {
    await controller?.close();
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r));
  });

  it('/healthz answers while the process runs; /readyz once started (or as a standby)', async () => {
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    phase = 'standby';
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    phase = 'starting';
    await controller.start();
    phase = 'started';
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect((await fetch(`${base}/nope`)).status).toBe(404);
  });

  it('a member\'s first list is no change: imports written, nothing counted as propagated', async () => {
    for (const m of MEMBERS) await until(`web imported in ${m}`, async () => (await importsOf(m)).includes('web'));
    await until('the conditions on the export', async () => ((await apis.get('m1')!.get<ServiceExport>(Kinds.ServiceExport, 'web', 'shop'))?.status?.conditions?.length ?? 0) > 0);
    await passesLater();
    const f = await scrape();
    expect(sumOf(f, 'ecnet_controller_propagation_seconds', {}, 'ecnet_controller_propagation_seconds_count')).toBe(0);
    expect(sumOf(f, 'ecnet_controller_exports')).toBe(1);
    expect(sumOf(f, 'ecnet_controller_imports')).toBe(3);
    expect(sumOf(f, 'ecnet_controller_leader')).toBe(1);
    expect(sumOf(f, 'ecnet_controller_reconcile_duration_seconds', { kind: 'full' }, 'ecnet_controller_reconcile_duration_seconds_count')).toBeGreaterThanOrEqual(1);
    for (const m of MEMBERS) expect(sumOf(f, 'ecnet_controller_writes_total', { cluster: m, kind: 'ServiceImport', result: 'ok' }), m).toBe(1);
    expect(sumOf(f, 'ecnet_controller_writes_total', { result: 'error' })).toBe(0);
  });

  it('an export in one member reaches the others: one propagation, counted once its imports are everywhere', async () => {
    apis.get('m2')!.put(service('api', 8080));
    apis.get('m2')!.put(serviceExport('api'));
    for (const m of MEMBERS) await until(`api imported in ${m}`, async () => (await importsOf(m)).includes('api'));
    await until('one propagation', async () => (await propagated()) === 1);
    // The Valid/Conflict conditions the controller wrote on the export came back as an event: not a change.
    await until('the conditions on the export', async () => ((await apis.get('m2')!.get<ServiceExport>(Kinds.ServiceExport, 'api', 'shop'))?.status?.conditions?.length ?? 0) > 0);
    await passesLater();
    const f = await scrape();
    expect(sumOf(f, 'ecnet_controller_propagation_seconds', {}, 'ecnet_controller_propagation_seconds_count')).toBe(1);
    expect(sumOf(f, 'ecnet_controller_propagation_seconds', { le: '+Inf' }, 'ecnet_controller_propagation_seconds_bucket')).toBe(1);
    expect(sumOf(f, 'ecnet_controller_propagation_seconds', {}, 'ecnet_controller_propagation_seconds_sum')).toBeGreaterThan(0);
    expect(sumOf(f, 'ecnet_controller_exports')).toBe(2);
    expect(sumOf(f, 'ecnet_controller_imports')).toBe(6);
    expect(sumOf(f, 'ecnet_controller_export_conflicts')).toBe(0);
  });

  it('an export that conflicts (same port name, another port) counts one conflict until it goes', async () => {
    apis.get('m3')!.put(service('api', 9090));
    apis.get('m3')!.put(serviceExport('api'));
    await until('the conflict', async () => (await value('ecnet_controller_export_conflicts')) === 1);
    const conflict = (await apis.get('m3')!.get<ServiceExport>(Kinds.ServiceExport, 'api', 'shop'))?.status?.conditions?.find((c) => c.type === 'Conflict');
    expect(conflict).toMatchObject({ status: 'True', reason: 'PortConflict' });
    await until('the second propagation', async () => (await propagated()) === 2);
    expect(await value('ecnet_controller_exports')).toBe(3);
    await apis.get('m3')!.delete(Kinds.ServiceExport, 'api', 'shop');
    await until('no conflict', async () => (await value('ecnet_controller_export_conflicts')) === 0);
    await until('the third propagation', async () => (await propagated()) === 3);
    await passesLater();
    expect(await propagated()).toBe(3);
  });

  it('a write that fails holds the propagation until the retry writes it; the failure is counted', async () => {
    const before = await scrape();
    const sum0 = sumOf(before, 'ecnet_controller_propagation_seconds', {}, 'ecnet_controller_propagation_seconds_sum');
    apis.get('m3')!.refuseWrites = true;
    apis.get('m1')!.put(service('db', 5432, 'pg'));
    apis.get('m1')!.put(serviceExport('db'));
    // The controller saw the export (synchronously, as the informer delivers it) no later than this.
    const t0 = Date.now();
    await until('a refused write', async () => (await value('ecnet_controller_writes_total', { cluster: 'm3', result: 'error' })) >= 1);
    await until('the failed pass counted', async () => (await value('ecnet_controller_reconcile_errors_total')) >= 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(await propagated()).toBe(3);
    apis.get('m3')!.refuseWrites = false;
    const held = Date.now() - t0;
    await until('db imported in m3', async () => (await importsOf('m3')).includes('db'));
    await until('the fourth propagation', async () => (await propagated()) === 4);
    // Timed from the export's event: at least as long as the writes were refused.
    const sum = (await value('ecnet_controller_propagation_seconds', {}, 'ecnet_controller_propagation_seconds_sum')) - sum0;
    expect(sum).toBeGreaterThanOrEqual(held / 1000 - 0.001);
  });

  it('a member made unreachable is down; back, it is up', async () => {
    const up = async () => Object.fromEntries((await scrape()).get('ecnet_controller_member_up')!.samples.map((s) => [s.labels.cluster, s.value]));
    await until('all up', async () => Object.values(await up()).every((v) => v === 1));
    expect(Object.keys(await up()).sort()).toEqual(MEMBERS);
    apis.get('m2')!.setReachable(false);
    expect(await up()).toEqual({ m1: 1, m2: 0, m3: 1 });
    // Its exports are kept for the member timeout (60 s here), so still counted.
    expect(await value('ecnet_controller_exports')).toBe(3);
    apis.get('m2')!.setReachable(true);
    expect(await up()).toEqual({ m1: 1, m2: 1, m3: 1 });
  });

  it('the Deployment probes /healthz and /readyz on the metrics port, paths these probes answer', async () => {
    const docs = readFileSync(join(packageRoot, 'daemonset', 'control-plane', 'deployment.yaml'), 'utf8');
    const container = (parse(docs) as { spec: { template: { spec: { containers: Record<string, { httpGet: { path: string; port: string | number } }>[] } } } }).spec.template.spec.containers[0]!;
    for (const [kind, path] of [
      ['livenessProbe', '/healthz'],
      ['readinessProbe', '/readyz'],
    ] as const) {
      expect(container[kind]?.httpGet, kind).toMatchObject({ path, port: 'metrics' });
      expect((await fetch(`${base}${path}`)).status, kind).toBe(200);
    }
  });
});

describe('`ecnet controller --metrics` (the CLI, local mode)', () => {
  let root = '';
  let child: ChildProcess | undefined;
  afterAll(() => {
    child?.kill('SIGKILL');
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('serves /metrics, /healthz and /readyz until SIGTERM, then closes the listener', async () => {
    root = mkdtempSync(join(tmpdir(), 'ecnet-ctl-metrics-'));
    mkdirSync(join(root, 'control-plane'));
    // A free port (the listener is the child's to open).
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    let log = '';
    child = spawn(process.execPath, [join(packageRoot, 'dist', 'cli', 'main.js'), 'controller', '--clusters-dir', root, '--metrics', `127.0.0.1:${port}`], { env: { ...process.env, ECNET_LOG_LEVEL: 'warn' } });
    child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    const url = `http://127.0.0.1:${port}`;
    await until(`/readyz 200 (controller said: ${log})`, () => fetch(`${url}/readyz`).then((r) => r.status === 200, () => false));
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const f = parseMetrics(await (await fetch(`${url}/metrics`)).text());
    expect(sumOf(f, 'ecnet_controller_leader')).toBe(1);
    expect(sumOf(f, 'ecnet_build_info', { component: 'controller' })).toBe(1);
    for (const name of ['ecnet_controller_reconcile_duration_seconds', 'ecnet_controller_reconcile_errors_total', 'ecnet_controller_propagation_seconds', 'ecnet_controller_member_up', 'ecnet_controller_exports', 'ecnet_controller_imports', 'ecnet_controller_export_conflicts', 'ecnet_controller_writes_total']) {
      expect(f.has(name), name).toBe(true);
    }
    child.kill('SIGTERM');
    expect(await new Promise((r) => child!.once('exit', r))).toBe(0);
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  });

  it('refuses a --metrics that is not ip:port', () => {
    const r = spawnSync(process.execPath, [join(packageRoot, 'dist', 'cli', 'main.js'), 'controller', '--clusters-dir', tmpdir(), '--metrics', 'nowhere'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--metrics must be ip:port or off/);
  });
});
