// `npm run bench:scale`: the figures of issue 18 (scale), against in-memory API servers with a per-request
// latency (test/helpers/kube-api-server.ts), through the real controller, sources and Agents
// (test/bench/scale-harness.ts). Each figure beside its goal and, where there is one, a baseline of the same run:
//  1. convergence: EXPORTS exports in cluster-1 (3 members) written before the controller starts; time until
//     every member holds EXPORTS imports with addresses and EXPORTS Services. Requests, writes, writes that
//     changed nothing, TCP connections. Baseline: a plain keep-alive client doing the same number of writes with
//     the controller's concurrency (32) against a server with the same latency.
//  2. controller memory: heap after GC of the controller in its own process, with N exports minus with 0.
//  3. agent bytes: what one Agent is sent while 10,000 unrelated Services and EndpointSlices are created and
//     their slices changed. Baseline: a watcher of every Service and EndpointSlice.
//  4. AGENTS real Agents (each its own source and token) in this process against one server: watches, start
//     requests, bytes per policy change, time from a GlobalTrafficPolicy write until all have seen it.
//  5. steady state: requests with nothing changing, by method and path (controller with its default resync,
//     then with a 1 s resync; the agents).
// Sizes: EXPORTS, MEMORY (comma list), UNRELATED, AGENTS, WINDOW_MS, LATENCY_MS in the environment.
import { cpus } from 'node:os';
import * as h from './scale-harness.js';

h.quiet();
const env = (k: string, d: number) => Number(process.env[k] ?? d);
const EXPORTS = env('EXPORTS', 1000);
const LATENCY = env('LATENCY_MS', 5);
const UNRELATED = env('UNRELATED', 10_000);
const AGENTS = env('AGENTS', 500);
const WINDOW = env('WINDOW_MS', 20_000);
const MEMORY = (process.env.MEMORY ?? '1000,3000,10000').split(',').map(Number).filter((n) => n > 0);

const rows: [string, string, string, string][] = [];
const row = (what: string, value: string, goal = '', baseline = '') => {
  rows.push([what, value, goal, baseline]);
  console.error(`  … ${what}: ${value}`);
};
const f0 = (n: number) => n.toFixed(0);
const f1 = (n: number) => n.toFixed(1);
const kb = (n: number) => `${f1(n / 1024)} KB`;
const yes = (b: boolean) => (b ? 'met' : 'NOT MET');
const patterns = (top: [string, number][]) => (top.length ? top.map(([p, n]) => `      ${String(n).padStart(6)}  ${p}`).join('\n') : '      (none)');
const notes: string[] = [];

// 1 + 5a.
{
  const c = await h.convergence({ exports: EXPORTS, latencyMs: LATENCY, timeoutMs: 300_000 });
  const base = await h.baselineWrites({ writes: c.requests.writes, concurrency: 32, latencyMs: LATENCY });
  row(`convergence: ${EXPORTS} exports → imports in 3 members`, `${f0(c.ms)} ms`, `< 20000 ms: ${yes(c.ms < 20_000)}`, `${f0(base.ms)} ms for ${c.requests.writes} writes (${f1(c.ms / base.ms)}×)`);
  row('  CPU time of the process (servers + controller, one process)', `${f0(c.cpuMs)} ms`, '', `${f1((100 * c.cpuMs) / c.ms)}% of one core`);
  row('  requests (members + hub)', `${c.requests.total} (${c.requests.reads} reads, ${c.requests.writes} writes, ${c.requests.watches} watches)`, '', `${c.requests.writes} writes`);
  row('  reads per write', f1(c.requests.reads / Math.max(1, c.requests.writes)), '', '0');
  row('  writes that changed nothing / refused', `${c.requests.unchanged} / ${c.requests.refused}`, '0');
  row('  TCP connections accepted', `${c.connections}`, 'kept alive', `${base.connections}`);
  notes.push(`convergence: requests by kind (first ${c.top.length}):\n${patterns(c.top)}`);
  await h.sleep(1000);
  const s = await h.steadyState(c, WINDOW);
  const other = s.requests.total - s.requests.watches;
  row('  settled (no request for 1 s) after convergence', `${f0(s.settleMs)} ms`);
  row('  writes that changed nothing, whole run', `${h.allCounts(c).unchanged}`, '0');
  row(`steady, controller (resync 30 s), ${WINDOW / 1000} s`, `${other} requests, ${s.requests.watches} watch (re)starts`, 'watches only');
  notes.push(`steady state, controller with its default resync (${WINDOW / 1000} s):\n${patterns(s.top)}`);
  await c.set.close();
}
{
  const s = await h.steadyWithResync({ exports: 100, resyncMs: 1000, windowMs: Math.min(WINDOW, 10_000), latencyMs: LATENCY });
  const other = s.requests.total - s.requests.watches;
  row(`steady, controller (resync 1 s, 100 exports), ${Math.min(WINDOW, 10_000) / 1000} s`, `${other} requests, ${s.requests.watches} watch (re)starts`, 'watches only');
  notes.push(`steady state, controller with a 1 s resync, 100 exports:\n${patterns(s.top)}`);
}

// 2.
{
  const zero = await h.controllerMemory({ exports: 0, timeoutMs: 60_000 });
  row('controller heap after GC, 0 exports', `${f1(zero.heapUsed / 1048576)} MB (rss ${f1(zero.rss / 1048576)} MB)`);
  for (const n of MEMORY) {
    try {
      const m = await h.controllerMemory({ exports: n, timeoutMs: 900_000 });
      const per = (m.heapUsed - zero.heapUsed) / n;
      row(`controller heap per export, ${n} exports`, kb(per), `< 100 KB: ${yes(per < 102_400)}`, `converged in ${f0(m.convergeMs)} ms (latency 0)`);
    } catch (err) {
      row(`controller heap per export, ${n} exports`, `not measured: ${(err as Error).message}`);
    }
  }
}

// 3.
{
  const b = await h.agentBytes({ unrelated: UNRELATED, timeoutMs: 300_000 });
  row(`agent bytes, ${UNRELATED} unrelated Services + slices (${b.changes} changes)`, kb(b.agentBytes), '≈ 0', `${kb(b.baselineBytes)} (${f1(b.agentBytes / Math.max(1, b.baselineBytes))}×)`);
}

// 4 + 5b.
{
  const a = await h.manyAgents({ agents: AGENTS, services: 20, changes: 20, latencyMs: LATENCY, windowMs: WINDOW, bookmarkIntervalMs: 60_000, timeoutMs: 120_000 });
  row(`${AGENTS} agents (real Agents, one process): start`, `${f0(a.startMs)} ms listed, ${f0(a.watchingMs)} ms watching`);
  row('  watches open', `${a.watchesOpen}`, '', `${AGENTS} × 4 informers`);
  row('  requests during start', `${a.startRequests.total} (${a.startRequests.reads} lists/reads, ${a.startRequests.watches} watches, ${a.startRequests.writes} writes)`);
  row('  TCP connections accepted (start + changes)', `${a.connections}`);
  row('  bytes pushed per policy change', kb(a.bytesPerChange), '', `${f0(a.bytesPerChange / AGENTS)} B per agent`);
  row(`  policy change → all ${AGENTS} agents (${a.changes} changes)`, `p50 ${f1(h.pct(a.allSeen, 50))} ms, p99 ${f1(h.pct(a.allSeen, 99))} ms`, `p99 < 2000 ms: ${yes(h.pct(a.allSeen, 99) < 2000)}`, `each agent: p50 ${f1(h.pct(a.each, 50))} ms`);
  const other = a.steady.requests.total - a.steady.requests.watches;
  row(`steady, ${AGENTS} agents, ${WINDOW / 1000} s`, `${other} requests, ${a.steady.requests.watches} watch (re)starts, ${kb(a.steady.bytes)} sent`, 'watches only');
  notes.push(`steady state, ${AGENTS} agents:\n${patterns(a.steady.top)}`);
}

const head: [string, string, string, string] = ['figure', 'measured', 'goal', 'baseline (same run)'];
const widths = head.map((_, i) => Math.max(...[head, ...rows].map((r) => r[i]!.length)));
const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
console.log(`scale benchmark (issue 18): ${cpus().length} cores, in-memory API servers with ${LATENCY} ms per request`);
console.log(line(head));
console.log(line(widths.map((w) => '-'.repeat(w))));
for (const r of rows) console.log(line(r));
for (const n of notes) console.log(`\n  ${n}`);
process.exit(0);
