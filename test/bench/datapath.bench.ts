// `npm run bench`: what the datapath costs, as ratios against a baseline measured in the same run.
//  1. connections/s of a client against a local server: direct (client outside the cgroup, no program
//     runs) vs redirected (client in the cgroup, connecting to a ClusterIP that connect4 sends to the same
//     server), interleaved rounds; the server takes the original destination on every accept in both.
//  2. programming the services map: 10,000 services in one replaceAll vs 10,000 single updates, and a 1% diff
//     (against the table's record of the map, and verifying against a dump of it).
// Runs as root, in a network namespace and cgroup of its own, and removes them at the end.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { Datapath } from '../../src/bpf/datapath.js';
import { defaults } from '../../src/config.js';
import { packageRoot } from '../../src/paths.js';
import { cleanupAll, kernelSkipReason, makeCgroup, makeNetns, makePinDir } from '../helpers/host.js';

const ROUNDS = 6;
const ROUND_MS = 1500;
const CONCURRENCY = 8;
const PROXY = { ip: '127.0.0.1', port: 15001 };

function load(target: string, cgroup?: string): Promise<number> {
  const args = [join(packageRoot, 'test', 'bench', 'traffic-load.mjs'), JSON.stringify({ mode: 'cps', cgroup, target, durationMs: ROUND_MS, concurrency: CONCURRENCY })];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`load client exited ${code}`));
      const r = JSON.parse(out) as { cps: number; failed: number };
      if (r.failed) return reject(new Error(`${r.failed} connections to ${target} failed`));
      resolve(r.cps);
    });
  });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

async function main(): Promise<void> {
  if (kernelSkipReason) {
    console.log(`datapath benchmark skipped: ${kernelSkipReason}`);
    return;
  }
  const pins = makePinDir();
  const pins2 = makePinDir();
  let cg: ReturnType<typeof makeCgroup> | undefined;
  let ns: ReturnType<typeof makeNetns> | undefined;
  let dp: Datapath | undefined;
  let server: net.Server | undefined;
  try {
    cg = makeCgroup();
    ns = makeNetns(['10.96.0.0/16']);
    ns.enter();
    const cgroup = cg.path;
    dp = Datapath.open({ bpffs: pins.path, cgroup, objectDir: defaults.objectDir, settings: { proxy: PROXY, proxyMark: defaults.proxyMark } });
    dp.services.set({ ip: '10.96.0.1', port: 80, protocol: 'tcp' }, { id: 1, disabled: false });
    const d = dp;
    server = net.createServer((s) => {
      d.takeOriginalDestination(s);
      s.setNoDelay(true);
      s.on('data', () => s.end('y'));
      s.on('error', () => {});
    });
    server.listen(PROXY.port, PROXY.ip);
    await new Promise((r) => server!.once('listening', r));

    console.log(`ecnet datapath benchmark — kernel ${release()}, ${cpus().length} CPUs, Node ${process.version}`);
    console.log(`\nconnections/s to a local server, ${ROUNDS} interleaved rounds of ${ROUND_MS / 1000}s each, ${CONCURRENCY} in flight`);
    await load(`${PROXY.ip}:${PROXY.port}`); // warm-up
    const direct: number[] = [];
    const redirected: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      direct.push(await load(`${PROXY.ip}:${PROXY.port}`));
      redirected.push(await load('10.96.0.1:80', cgroup));
    }
    const ratio = median(redirected) / median(direct);
    console.log(`  direct (no program attached)   median ${fmt(median(direct))}/s   rounds ${direct.map(fmt).join(' ')}`);
    console.log(`  through connect4 redirect      median ${fmt(median(redirected))}/s   rounds ${redirected.map(fmt).join(' ')}`);
    console.log(`  ratio redirect/direct          ${ratio.toFixed(3)}   (target ≥ 0.90: ${ratio >= 0.9 ? 'met' : 'NOT MET'})`);
    if (ratio < 0.9) process.exitCode = 1;
    console.log(`  redirected by the kernel: ${fmt(dp.stats().redirected)} connections, ${fmt(dp.stats().conn_recorded)} recorded for the proxy`);

    // The services map, in a datapath of its own so the capacity is the default.
    const dp2 = Datapath.open({ bpffs: pins2.path, cgroup, objectDir: defaults.objectDir, settings: { proxy: PROXY, proxyMark: defaults.proxyMark } });
    try {
      const entries = (n: number, offset = 0) =>
        Array.from({ length: n }, (_, i) => {
          const k = i + offset;
          return { ip: `10.${100 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`, port: 80, protocol: 'tcp' as const, id: k, disabled: false };
        });
      const all = entries(10_000);
      const singles: number[] = [];
      const batches: number[] = [];
      const diffs: number[] = [];
      const verified: number[] = [];
      for (let round = 0; round < 5; round++) {
        dp2.services.replaceAll([]);
        let t0 = process.hrtime.bigint();
        for (const e of all) dp2.services.set(e, e);
        singles.push(ms(t0));
        dp2.services.replaceAll([]);
        t0 = process.hrtime.bigint();
        dp2.services.replaceAll(all);
        batches.push(ms(t0));
        const next = all.slice(50).concat(entries(50, 20_000 + round * 50));
        t0 = process.hrtime.bigint();
        dp2.services.replaceAll(next);
        diffs.push(ms(t0));
        // The same size of change back, diffed against a dump of the map (what the agent's resync asks for).
        t0 = process.hrtime.bigint();
        dp2.services.replaceAll(all, { verify: true });
        verified.push(ms(t0));
      }
      const b = median(batches);
      console.log(`\nservices map, 10,000 services, median of 5`);
      console.log(`  10,000 single updates (baseline)      ${median(singles).toFixed(1)} ms`);
      console.log(`  replaceAll of 10,000 into an empty map ${b.toFixed(1)} ms   ratio ${(b / median(singles)).toFixed(2)} of baseline   (target < 200 ms: ${b < 200 ? 'met' : 'NOT MET'})`);
      if (b >= 200) process.exitCode = 1;
      const d = median(diffs);
      const rounds = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(' ');
      console.log(`  replaceAll with a 1% diff (100 writes) ${d.toFixed(1)} ms   ratio ${(d / b).toFixed(2)} of a full load   rounds ${rounds(diffs)}`);
      console.log(`    (target < 5 ms: ${d < 5 ? 'met' : 'NOT MET'})`);
      if (d >= 5) process.exitCode = 1;
      console.log(`  the same, verifying (dumps the map)    ${median(verified).toFixed(1)} ms   rounds ${rounds(verified)}`);
    } finally {
      dp2.close();
    }
  } finally {
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    cleanupAll(
      () => dp?.close(),
      () => Datapath.isLoaded(pins.path) && Datapath.uninstall(pins.path),
      () => Datapath.isLoaded(pins2.path) && Datapath.uninstall(pins2.path),
      () => ns?.remove(),
      () => cg?.remove(),
      () => pins.remove(),
      () => pins2.remove(),
    );
  }
}

await main();
