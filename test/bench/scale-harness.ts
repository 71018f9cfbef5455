// The measurements of issue 18 (scale), shared by `npm run bench:scale` (full sizes) and test/scale.test.ts
// (reduced). Everything goes through the real code paths: the controller through the real kubernetes source
// against in-memory API servers (test/helpers/kube-api-server.ts, with a per-request latency), real Agents
// with their own sources. The server counts requests (by client token), TCP connections and bytes.
import { spawn } from 'node:child_process';
import { Agent as HttpAgent, request } from 'node:http';
import { join } from 'node:path';
import { Agent, RouteMap } from '../../src/agent/agent.js';
import { type Cluster, IMPORTED_LABEL } from '../../src/api/flomesh.js';
import { setLogLevel } from '../../src/logger.js';
import { createKubernetesSource } from '../../src/sources/kubernetes.js';
import { Kinds, type KubeObject, type Source, type WatchEvent } from '../../src/sources/source.js';
import { startControlledSet, type ControlledSet } from '../helpers/controlled-set.js';
import { type KubeApiServer, type RecordedRequest, startKubeApiServer } from '../helpers/kube-api-server.js';
import { clusterKey, endpointSlice, kube, service, serviceExport, serviceImport, trafficPolicy } from '../helpers/objects.js';

export const now = () => performance.now();
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]! : NaN;
};

export async function until(what: string, cond: () => boolean, timeoutMs: number, stepMs = 20): Promise<number> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (cond()) return now();
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(stepMs);
  }
}

const NS = 'scale';
const MEMBERS = ['cluster-1', 'cluster-2', 'cluster-3'];
const namespace = (name: string): KubeObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
const ipOf = (base: number, i: number) => `10.${base}.${Math.floor(i / 250) % 250}.${(i % 250) + 2}`;
const exportedService = (i: number) => kube(service(NS, `svc-${i}`, { clusterIP: ipOf(100, i), ports: [{ name: 'http', port: 80, protocol: 'TCP' }] }));
const exportOf = (i: number) => kube(serviceExport(NS, `svc-${i}`, { loadBalancer: 'RoundRobinLoadBalancer' } as never));

/** `METHOD /api…/namespaces/{ns}/plural/{name}` (watches marked): what a request is, without its names. */
export function pattern(r: RecordedRequest): string {
  const seg = r.path.split('/').filter(Boolean);
  const base = seg[0] === 'api' ? 2 : 3;
  const rest = seg.slice(base);
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    rest[1] = '{ns}';
    if (rest.length >= 4) rest[3] = '{name}';
  } else if (rest.length >= 2) rest[1] = '{name}';
  return `${r.method}${r.watch ? '(watch)' : ''} /${[...seg.slice(0, base), ...rest].join('/')}`;
}

export function byPattern(reqs: RecordedRequest[]): [string, number][] {
  const m = new Map<string, number>();
  for (const r of reqs) m.set(pattern(r), (m.get(pattern(r)) ?? 0) + 1);
  return [...m].sort((a, b) => b[1] - a[1]);
}

export interface RequestCounts {
  total: number;
  watches: number;
  reads: number;
  writes: number;
  /** Writes answered with the object as stored (nothing changed). */
  unchanged: number;
  /** Writes refused (4xx/5xx: conflicts, already exists). */
  refused: number;
}

export function counts(reqs: RecordedRequest[]): RequestCounts {
  const writes = reqs.filter((r) => !r.watch && r.method !== 'GET');
  return {
    total: reqs.length,
    watches: reqs.filter((r) => r.watch).length,
    reads: reqs.filter((r) => !r.watch && r.method === 'GET').length,
    writes: writes.length,
    unchanged: writes.filter((r) => r.unchanged).length,
    refused: writes.filter((r) => (r.status ?? 0) >= 400).length,
  };
}

// ---- 1. convergence of N exports ----

export interface Convergence {
  exports: number;
  latencyMs: number;
  ms: number;
  /** CPU time of this process (the servers, the controller and its clients share it) until convergence. */
  cpuMs: number;
  /** Requests to the members and the hub until convergence. */
  requests: RequestCounts;
  memberRequests: RequestCounts;
  connections: number;
  /** GETs of one object (not lists): reads before writes. */
  objectReads: number;
  top: [string, number][];
  set: ControlledSet;
  servers: KubeApiServer[];
}

/** N Services + flomesh ServiceExports in cluster-1 before the controller starts; until every member holds N imports with addresses and N Services. */
export async function convergence(o: { exports: number; latencyMs: number; timeoutMs: number; resyncMs?: number; identities?: boolean; kubeconfigSecrets?: boolean }): Promise<Convergence> {
  const servers: KubeApiServer[] = [];
  for (let i = 0; i < MEMBERS.length; i++) servers.push(await startKubeApiServer({ latencyMs: o.latencyMs }));
  for (const s of servers) s.put(namespace(NS));
  for (let i = 0; i < o.exports; i++) {
    servers[0]!.put(exportedService(i));
    servers[0]!.put(exportOf(i));
  }
  const cpu0 = process.cpuUsage();
  const t0 = now();
  const set = await startControlledSet(
    MEMBERS.map((m, i) => [m, servers[i]!]),
    { subnet: '10.0.2', resyncMs: o.resyncMs ?? 30_000, hub: { latencyMs: o.latencyMs }, ...(o.identities ? { identities: true } : {}), ...(o.kubeconfigSecrets ? { kubeconfigSecrets: true } : {}) },
  );
  const done = () =>
    servers.every(
      (s) => s.count<KubeObject & { spec: { ips?: string[] } }>(Kinds.ServiceImport, NS, (x) => (x.spec.ips?.length ?? 0) > 0) === o.exports && s.count(Kinds.Service, NS) === o.exports,
    );
  const t1 = await until(`${o.exports} imports in every member`, done, o.timeoutMs, 10);
  const cpu = process.cpuUsage(cpu0);
  const all = [...servers, set.hubServer].flatMap((s) => s.requests);
  return {
    exports: o.exports,
    latencyMs: o.latencyMs,
    ms: t1 - t0,
    cpuMs: (cpu.user + cpu.system) / 1000,
    requests: counts(all),
    memberRequests: counts(servers.flatMap((s) => s.requests)),
    connections: [...servers, set.hubServer].reduce((n, s) => n + s.connectionsAccepted, 0),
    objectReads: all.filter((r) => !r.watch && r.method === 'GET' && pattern(r).includes('{name}')).length,
    top: byPattern(all.filter((r) => !r.watch)).slice(0, 8),
    set,
    servers,
  };
}

/** What the server itself costs: `writes` creates by a plain keep-alive client, `concurrency` at a time, against a server with the same latency. */
export async function baselineWrites(o: { writes: number; concurrency: number; latencyMs: number }): Promise<{ ms: number; connections: number }> {
  const server = await startKubeApiServer({ latencyMs: o.latencyMs });
  server.put(namespace(NS));
  const agent = new HttpAgent({ keepAlive: true, maxSockets: o.concurrency });
  const url = new URL(server.url);
  const post = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const body = JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `cm-${i}`, namespace: NS }, data: { i: String(i) } });
      const req = request(
        { host: url.hostname, port: url.port, method: 'POST', path: `/api/v1/namespaces/${NS}/configmaps`, agent, headers: { authorization: 'Bearer ecnet-test-token', 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 201 ? resolve() : reject(new Error(`baseline write: ${res.statusCode}`))));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  let next = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: Math.min(o.concurrency, o.writes) }, async () => {
      while (next < o.writes) await post(next++);
    }),
  );
  const ms = now() - t0;
  agent.destroy();
  const connections = server.connectionsAccepted;
  await server.close();
  return { ms, connections };
}

// ---- 2. controller memory (in a child process) ----

export interface MemoryFigure {
  exports: number;
  heapUsed: number;
  rss: number;
  convergeMs: number;
}

/** The controller in its own process (node --expose-gc) against 3 members holding `exports` exports: its heap after GC once converged. */
export async function controllerMemory(o: { exports: number; timeoutMs: number }): Promise<MemoryFigure> {
  const servers: KubeApiServer[] = [];
  for (let i = 0; i < MEMBERS.length; i++) servers.push(await startKubeApiServer());
  const hub = await startKubeApiServer();
  for (const s of servers) s.put(namespace(NS));
  for (let i = 0; i < o.exports; i++) {
    servers[0]!.put(exportedService(i));
    servers[0]!.put(exportOf(i));
  }
  for (const [i, s] of servers.entries()) {
    hub.put({
      apiVersion: 'flomesh.io/v1alpha1',
      kind: 'Cluster',
      metadata: { name: MEMBERS[i]! },
      spec: { region: 'default', zone: 'default', group: 'default', gatewayHost: `10.0.2.${4 + i}`, gatewayPort: 80, kubeconfig: s.kubeconfig },
    } as Cluster as unknown as KubeObject);
  }
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', join(import.meta.dirname, 'scale-controller.ts')], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    env: { ...process.env, ECNET_HUB_KUBECONFIG: hub.kubeconfig, ECNET_LOG_LEVEL: 'error' },
  });
  const ask = (msg: string) =>
    new Promise<NodeJS.MemoryUsage>((resolve, reject) => {
      child.once('message', (m) => resolve(m as NodeJS.MemoryUsage));
      child.once('exit', (code) => reject(new Error(`controller child exited (${code})`)));
      child.send(msg);
    });
  try {
    const t0 = now();
    await ask('started');
    const done = () =>
      servers.every((s) => s.count<KubeObject & { spec: { ips?: string[] } }>(Kinds.ServiceImport, NS, (x) => (x.spec.ips?.length ?? 0) > 0) === o.exports);
    const t1 = await until(`${o.exports} imports (memory run)`, done, o.timeoutMs, 50);
    // The pass that wrote the last import may still be finishing (status writes): let it settle.
    let last = -1;
    while (last !== servers.reduce((n, s) => n + s.requests.length, 0)) {
      last = servers.reduce((n, s) => n + s.requests.length, 0);
      await sleep(o.exports === 0 ? 1500 : 1000);
    }
    const m = await ask('memory');
    return { exports: o.exports, heapUsed: m.heapUsed, rss: m.rss, convergeMs: t1 - t0 };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
    await Promise.all([hub, ...servers].map((s) => s.close()));
  }
}

// ---- 3. what one agent receives of unrelated changes ----

export interface AgentBytes {
  changes: number;
  agentBytes: number;
  baselineBytes: number;
  agentRequests: number;
  /** What the agent redirects: its imported service is still seen (1). */
  agentRedirects: number;
}

/** One real Agent and one watcher of every Service and EndpointSlice; then `unrelated` Services with their slices are created and their slices changed. */
export async function agentBytes(o: { unrelated: number; timeoutMs: number }): Promise<AgentBytes> {
  const server = await startKubeApiServer({ clients: ['agent', 'all'], bookmarkIntervalMs: 600_000 });
  const sources: Source[] = [];
  let agent: Agent | undefined;
  try {
    for (const ns of ['shop', 'other']) server.put(namespace(ns));
    // The imported service as the controller labels it (and the EndpointSlice controller copies to its slices).
    server.put(kube(service('shop', 'web', { clusterIP: '10.96.0.10', labels: { [IMPORTED_LABEL]: 'web' }, selector: { app: 'web' } })));
    server.put(kube(serviceImport('shop', 'web', { ips: ['10.96.0.10'], gateways: [{ cluster: 1, ip: '10.0.2.4', port: 80 }] })));
    server.put(kube(trafficPolicy('shop', 'web')));
    const own = kube(endpointSlice('shop', 'web', ['10.1.0.5']));
    server.put({ ...own, metadata: { ...own.metadata, labels: { ...own.metadata.labels, [IMPORTED_LABEL]: 'web' } } });
    const source = createKubernetesSource({ kubeconfig: server.kubeconfigFor('agent') });
    sources.push(source);
    agent = new Agent({ source, localCluster: clusterKey(2), redirects: { replaceAll: () => undefined }, routes: new RouteMap(), debounceMs: 5 });
    await agent.start();
    const watcher = createKubernetesSource({ kubeconfig: server.kubeconfigFor('all') });
    sources.push(watcher);
    const services = watcher.informer(Kinds.Service);
    const slices = watcher.informer<KubeObject & { endpoints?: unknown[] }>(Kinds.EndpointSlice);
    await Promise.all([services.synced, slices.synced]);
    const a0 = server.client('agent').bytes;
    const b0 = server.client('all').bytes;
    const ar0 = server.client('agent').requests;
    for (let i = 0; i < o.unrelated; i++) {
      server.put(kube(service('other', `u-${i}`, { clusterIP: ipOf(120, i), selector: { app: `u-${i}` } })));
      server.put(kube(endpointSlice('other', `u-${i}`, [ipOf(130, i)])));
    }
    for (let i = 0; i < o.unrelated; i++) server.put(kube(endpointSlice('other', `u-${i}`, [ipOf(130, i), ipOf(140, i)])));
    await until(
      'the watcher sees every change',
      () => services.list().length === o.unrelated + 1 && slices.get(`u-${o.unrelated - 1}-1`, 'other')?.endpoints?.length === 2,
      o.timeoutMs,
    );
    // The agent's streams are written by the same put() calls; give its socket a moment to drain.
    await sleep(300);
    return {
      changes: o.unrelated * 3,
      agentBytes: server.client('agent').bytes - a0,
      baselineBytes: server.client('all').bytes - b0,
      agentRequests: server.client('agent').requests - ar0,
      agentRedirects: agent.status.redirects,
    };
  } finally {
    agent?.destroy();
    for (const s of sources) s.destroy();
    await server.close();
  }
}

// ---- 4. many agents, one API server; 5. steady state ----

export interface ManyAgents {
  agents: number;
  /** Until every agent's start() resolved (its informers listed). */
  startMs: number;
  /** Until every informer's watch is open. */
  watchingMs: number;
  watchesOpen: number;
  startRequests: RequestCounts;
  connections: number;
  changes: number;
  bytesPerChange: number;
  /** Per change: from the write until the last agent has it. */
  allSeen: number[];
  /** Every agent's delay, over all changes. */
  each: number[];
  steady: { windowMs: number; requests: RequestCounts; top: [string, number][]; bytes: number };
}

/** `agents` real Agents in this process, each with its own source (client token), against one server. */
export async function manyAgents(o: { agents: number; services: number; changes: number; latencyMs: number; windowMs: number; bookmarkIntervalMs: number; timeoutMs: number }): Promise<ManyAgents> {
  const tokens = Array.from({ length: o.agents }, (_, i) => `agent-${i}`);
  const server = await startKubeApiServer({ clients: tokens, latencyMs: o.latencyMs, bookmarkIntervalMs: o.bookmarkIntervalMs });
  const agents: Agent[] = [];
  const sources: Source[] = [];
  try {
    server.put(namespace('shop'));
    for (let i = 0; i < o.services; i++) {
      // Labelled as the controller labels the Services of imports (and the EndpointSlice controller their slices).
      const imported = { [IMPORTED_LABEL]: `s-${i}` };
      server.put(kube(service('shop', `s-${i}`, { clusterIP: ipOf(96, i), labels: imported, selector: { app: `s-${i}` } })));
      server.put(kube(serviceImport('shop', `s-${i}`, { ips: [ipOf(96, i)], gateways: [{ cluster: 1, ip: '10.0.2.4', port: 80 }] })));
      server.put(kube(trafficPolicy('shop', `s-${i}`)));
      const slice = kube(endpointSlice('shop', `s-${i}`, [ipOf(97, i)]));
      server.put({ ...slice, metadata: { ...slice.metadata, labels: { ...slice.metadata.labels, ...imported } } });
    }
    // Which policy resourceVersion each agent has seen (through its own informer's events).
    const seen = new Map<string, number>();
    let waiting: { rv: string; at: number; times: number[] } | undefined;
    const r0 = server.requests.length;
    const t0 = now();
    await Promise.all(
      tokens.map(async (token) => {
        const real = createKubernetesSource({ kubeconfig: server.kubeconfigFor(token) });
        sources.push(real);
        const onPolicy = (e: WatchEvent) => {
          seen.set(token, now());
          if (waiting && e.object.metadata.resourceVersion === waiting.rv) waiting.times.push(now() - waiting.at);
        };
        const source = new Proxy(real, {
          get(target, p) {
            if (p === 'informer') {
              return (kind: typeof Kinds.Service, opts: { onEvent?: (e: WatchEvent) => void } = {}) =>
                target.informer(kind, kind === Kinds.GlobalTrafficPolicy ? { ...opts, onEvent: (e: WatchEvent) => (opts.onEvent?.(e), onPolicy(e)) } : opts);
            }
            const v = Reflect.get(target, p, target) as unknown;
            return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
          },
        }) as Source;
        const agent = new Agent({ source, localCluster: clusterKey(2), redirects: { replaceAll: () => undefined }, routes: new RouteMap(), debounceMs: 20 });
        agents.push(agent);
        await agent.start();
      }),
    );
    const startMs = now() - t0;
    // start() resolves once each informer has listed; its watch follows.
    await until(`${o.agents * 4} watches open`, () => server.openWatches >= o.agents * 4, o.timeoutMs, 10);
    const watchingMs = now() - t0;
    const startRequests = counts(server.requests.slice(r0));
    const watchesOpen = server.openWatches;
    const allSeen: number[] = [];
    const each: number[] = [];
    const bytes0 = server.bytesWritten;
    for (let k = 0; k < o.changes; k++) {
      const gtp = kube(trafficPolicy('shop', 's-0', k % 2 ? 'ActiveActive' : 'FailOver', k % 2 ? undefined : [1]));
      const at = now();
      const w = { rv: '', at, times: [] as number[] };
      waiting = w;
      w.rv = server.put(gtp).metadata.resourceVersion ?? '';
      await until(`policy change ${k} at all ${o.agents} agents`, () => w.times.length >= o.agents, o.timeoutMs, 5);
      allSeen.push(Math.max(...w.times));
      each.push(...w.times);
      await sleep(50);
    }
    const bytesPerChange = (server.bytesWritten - bytes0) / Math.max(1, o.changes);
    // Steady state: nothing changes.
    await sleep(500);
    const s0 = server.requests.length;
    const sb = server.bytesWritten;
    await sleep(o.windowMs);
    const window = server.requests.slice(s0);
    return {
      agents: o.agents,
      startMs,
      watchingMs,
      watchesOpen,
      startRequests,
      connections: server.connectionsAccepted,
      changes: o.changes,
      bytesPerChange,
      allSeen,
      each,
      steady: { windowMs: o.windowMs, requests: counts(window), top: byPattern(window), bytes: server.bytesWritten - sb },
    };
  } finally {
    for (const a of agents) a.destroy();
    for (const s of sources) s.destroy();
    await server.close();
  }
}

/** Waits until `servers` have had no request for `quietMs` (at most `maxMs`); how long that took. */
export async function settle(servers: KubeApiServer[], quietMs: number, maxMs: number): Promise<number> {
  const t0 = now();
  const total = () => servers.reduce((n, s) => n + s.requests.length, 0);
  let last = total();
  let since = now();
  while (now() - since < quietMs && now() - t0 < maxMs) {
    await sleep(50);
    if (total() !== last) {
      last = total();
      since = now();
    }
  }
  return now() - t0;
}

/** Every request of a controlled set so far, counted. */
export const allCounts = (c: { set: ControlledSet; servers: KubeApiServer[] }) => counts([...c.servers, c.set.hubServer].flatMap((s) => s.requests));

/**
 * Requests of a converged controlled set over `windowMs` with nothing changing (watches counted apart), once
 * what convergence left in flight (status writes of the last pass) has settled: no request for 1 s, at most 15 s.
 */
export async function steadyState(
  c: { set: ControlledSet; servers: KubeApiServer[] },
  windowMs: number,
): Promise<{ settleMs: number; requests: RequestCounts; top: [string, number][] }> {
  const all = [...c.servers, c.set.hubServer];
  const settleMs = await settle(all, 1000, 15_000);
  const marks = all.map((s) => s.requests.length);
  await sleep(windowMs);
  const window = all.flatMap((s, i) => s.requests.slice(marks[i]));
  return { settleMs, requests: counts(window), top: byPattern(window) };
}

/**
 * A small controlled set with a short resync, converged: to catch what the controller requests periodically.
 * With cluster identities and members' kubeconfigs in Secrets, as `daemonset/` deploys it (those Secrets used
 * to be read on every resync).
 */
export async function steadyWithResync(o: { exports: number; resyncMs: number; windowMs: number; latencyMs: number }) {
  const c = await convergence({ exports: o.exports, latencyMs: o.latencyMs, timeoutMs: 60_000, resyncMs: o.resyncMs, identities: true, kubeconfigSecrets: true });
  try {
    // Issued in every member first (the steady state then has them to check on every resync).
    await until('identities issued', () => c.servers.every((s) => s.object(Kinds.Secret, 'ecnet-system', 'ecnet-identity') !== undefined), 30_000);
    await sleep(500);
    return { ...(await steadyState(c, o.windowMs)), identities: c.servers.filter((s) => s.object(Kinds.Secret, 'ecnet-system', 'ecnet-identity')).length };
  } finally {
    await c.set.close();
  }
}

export const quiet = () => setLogLevel(process.env.ECNET_LOG_LEVEL ?? 'error');
