// `ecnet top`: the node's services live, from the agent's /metrics (its loopback admin endpoint), or any
// component's /metrics (a gateway's: its tunnels per exported service). Two scrapes an interval apart make one
// frame (src/cli/top-view.ts computes it); --watch goes on until Ctrl-C.
import { Command } from 'commander';
import type { IdentityReport } from '../agent/admin.js';
import { ConfigError, agentDefaults, parseDuration } from '../config.js';
import { parseMetrics } from '../metrics/parse.js';
import { table } from './table.js';
import { type Scrape, type TopView, topView } from './top-view.js';

interface TopFlags {
  admin: string;
  url?: string;
  interval: string;
  watch?: boolean;
  count?: string;
  output: string;
}

/** Connections per second: one decimal below 10, whole above. */
export function formatRate(n: number): string {
  if (n === 0) return '0';
  return n < 10 ? n.toFixed(1) : String(Math.round(n));
}

/** Bytes per second in binary units. */
export function formatBytesPerS(n: number): string {
  const units = ['B/s', 'KiB/s', 'MiB/s', 'GiB/s', 'TiB/s'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(n)} ${units[0]}` : `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

export function formatSeconds(s: number | undefined): string {
  if (s === undefined) return '-';
  if (s < 0.001) return `${Math.round(s * 1e6)}µs`;
  if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)}ms`;
  return `${s.toFixed(2)}s`;
}

const reasons = (byReason: Record<string, number>): string => {
  const list = Object.entries(byReason).sort((a, b) => b[1] - a[1]);
  return list.length ? ` (${list.map(([r, v]) => `${r} ${formatRate(v)}`).join(', ')})` : '';
};

/** One frame as text: a header line of totals, the rows, the setup times. */
export function renderTop(v: TopView, source: string): string {
  const failCell = (perS: number, reason: string | undefined) => (perS > 0 && reason ? `${formatRate(perS)} (${reason})` : formatRate(perS));
  const health = (h: boolean | undefined, yes: string, no: string) => (h === undefined ? '-' : h ? yes : no);
  if (v.kind === 'gateway') {
    const t = v.totals;
    const catalog = t.catalogSynced === undefined ? '' : ` · catalog ${t.catalogSynced ? 'synced' : 'NOT synced'}${t.catalogServices !== undefined ? `, ${t.catalogServices} services` : ''}`;
    const s = v.setup[0];
    const lines = [
      `gateway ${source} · ${v.seconds.toFixed(1)}s · refused ${formatRate(t.rejectedPerS)}/s${reasons(t.rejectedByReason)} · limited ${formatRate(t.limitedPerS ?? 0)}/s${catalog}`,
      `tunnel setup ${formatRate(s?.perS ?? 0)}/s · p50 ${formatSeconds(s?.p50)} · p99 ${formatSeconds(s?.p99)}`,
      '',
    ];
    if (!v.rows.length) return [...lines, 'No exported service has metrics yet.'].join('\n');
    lines.push(
      table(
        ['SERVICE', 'TUNNELS/S', 'REFUSED/S', 'ACTIVE', 'SENT/S', 'RECV/S', 'ENDPOINTS', 'READY'],
        v.rows.map((r) => [
          r.service,
          formatRate(r.connPerS),
          failCell(r.failPerS, r.failReason),
          r.active,
          formatBytesPerS(r.sentBytesPerS),
          formatBytesPerS(r.receivedBytesPerS),
          r.endpoints ? `${r.endpoints.serving} serving${r.endpoints.ejected ? `, ${r.endpoints.ejected} ejected` : ''}` : '-',
          health(r.healthy, 'ready', 'NOT READY'),
        ]),
      ),
    );
    return lines.join('\n');
  }
  const t = v.totals;
  const target = (cluster: string | undefined, local: boolean | undefined) => `${cluster ?? '-'}${local ? ' (local)' : ''}`;
  const lines = [`agent ${source} · ${v.seconds.toFixed(1)}s · accepted ${formatRate(t.acceptedPerS ?? 0)}/s · rejected ${formatRate(t.rejectedPerS)}/s${reasons(t.rejectedByReason)}`, ''];
  if (!v.rows.length) lines.push('No service has metrics yet: no connection to an imported service since the agent started.');
  else {
    lines.push(
      table(
        ['SERVICE', 'TARGET', 'CONN/S', 'FAIL/S', 'ACTIVE', 'SENT/S', 'RECV/S', 'HEALTH'],
        v.rows.map((r) => [
          r.service,
          target(r.target, r.local),
          formatRate(r.connPerS),
          failCell(r.failPerS, r.failReason),
          r.active,
          formatBytesPerS(r.sentBytesPerS),
          formatBytesPerS(r.receivedBytesPerS),
          health(r.healthy, 'healthy', 'UNHEALTHY'),
        ]),
      ),
    );
  }
  if (v.setup.length) {
    lines.push(
      '',
      table(
        ['TARGET', 'SETUP/S', 'SETUP-P50', 'SETUP-P99', 'GATEWAY'],
        v.setup.map((s) => [target(s.cluster, s.local), formatRate(s.perS), formatSeconds(s.p50), formatSeconds(s.p99), s.gatewayUp === undefined ? '-' : s.gatewayUp ? 'up' : 'DOWN']),
      ),
    );
  }
  return lines.join('\n');
}

/** One scrape of `url`, parsed; a ConfigError (with the cause) when it cannot be read. */
async function scrape(url: string, what: string): Promise<Scrape> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  } catch (cause) {
    throw new ConfigError(`cannot reach ${what}`, { cause });
  }
  const text = await res.text().catch((cause: unknown) => {
    throw new ConfigError(`${url}: the answer was cut`, { cause });
  });
  if (res.status !== 200) throw new ConfigError(`${url} answered ${res.status}${res.status === 404 ? ' (an agent older than `ecnet top`?)' : ''}: ${text.trim().slice(0, 200)}`);
  try {
    return parseMetrics(text);
  } catch (cause) {
    throw new ConfigError(`${url} did not answer Prometheus text: ${(cause as Error).message}`, { cause });
  }
}

/** The agent's own cluster, from its /identity (mTLS only); undefined when it does not say. */
async function localClusterOf(admin: string): Promise<string | undefined> {
  try {
    const id = (await (await fetch(`http://${admin}/identity`, { signal: AbortSignal.timeout(2_000) })).json()) as IdentityReport;
    return id.mode === 'mtls' ? id.cluster : undefined;
  } catch {
    return undefined; // only a mark on the rows: the keys are shown anyway
  }
}

function positiveInt(name: string, v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new ConfigError(`${name} must be a whole number of at least 1, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}

export function topCommand(): Command {
  return new Command('top')
    .description("the node's services live, from the agent's metrics: new connections, failures, open connections, bytes and health per service and target cluster (--url: any component's /metrics, e.g. a gateway's)")
    .option('--admin <ip:port>', 'the agent admin endpoint', agentDefaults.admin)
    .option('--url <url>', "a /metrics URL to read instead of the agent's (a gateway's shows its tunnels per exported service)")
    .option('--interval <duration>', 'time between the two scrapes of a frame', '2s')
    .option('-w, --watch', 'refresh until Ctrl-C')
    .option('--count <n>', 'frames to show, then exit (default 1; with --watch: until Ctrl-C)')
    .option('-o, --output <format>', 'table or json (one object per frame; with --watch or --count, one per line)', 'table')
    .action(async (flags: TopFlags) => {
      if (flags.output !== 'table' && flags.output !== 'json') throw new ConfigError(`-o must be table or json, got ${JSON.stringify(flags.output)}`);
      const intervalMs = parseDuration('--interval', flags.interval);
      if (intervalMs < 100) throw new ConfigError(`--interval must be at least 100ms, got ${JSON.stringify(flags.interval)}`);
      const frames = flags.count !== undefined ? positiveInt('--count', flags.count) : flags.watch ? Infinity : 1;
      const url = flags.url ?? `http://${flags.admin}/metrics`;
      const what = flags.url ?? `the agent at ${flags.admin} (is \`ecnet agent\` running?)`;
      const source = flags.url ?? flags.admin;
      const localCluster = flags.url ? undefined : await localClusterOf(flags.admin);
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
      const tty = process.stdout.isTTY && flags.output === 'table';
      const ndjson = frames > 1;
      try {
        let before = await scrape(url, what);
        let at = performance.now();
        for (let shown = 0; shown < frames && !stop.signal.aborted; ) {
          await sleep(intervalMs, stop.signal);
          if (stop.signal.aborted) break;
          let after: Scrape;
          try {
            after = await scrape(url, what);
          } catch (err) {
            // Watching through an agent's restart: said, and tried again at the next interval.
            if (frames === 1) throw err;
            process.stderr.write(`ecnet top: ${(err as Error).message}; trying again\n`);
            continue;
          }
          const now = performance.now();
          const view = topView(before, after, (now - at) / 1000, localCluster !== undefined ? { localCluster } : {});
          [before, at] = [after, now];
          shown++;
          if (flags.output === 'json') process.stdout.write(`${ndjson ? JSON.stringify(view) : JSON.stringify(view, null, 2)}\n`);
          else process.stdout.write(`${tty && frames > 1 ? '\x1b[H\x1b[2J' : shown > 1 ? '\n' : ''}${renderTop(view, source)}\n`);
        }
      } finally {
        process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
      }
    });
}
