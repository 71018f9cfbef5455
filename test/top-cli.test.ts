// `ecnet top` as a user runs it (the built CLI, dist/), against a stand-in for the agent's admin endpoint whose
// counters advance at each scrape; and against nothing, which must say so.
import { spawn } from 'node:child_process';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../src/paths.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');
const LOCAL = 'default/default/default/cluster-2';
const REMOTE = 'default/default/default/cluster-1';

function run(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [cli, 'top', ...args], { env: { ...process.env, ECNET_LOG_LEVEL: 'warn' } });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('ecnet top (CLI)', () => {
  let server: Server;
  let admin = '';
  let scrapes = 0;

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/identity') {
        return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ mode: 'mtls', cluster: LOCAL, spiffeId: 'x', clusterSet: 'ecnet', notBefore: '', notAfter: '', issuer: '', serial: '' }));
      }
      if (req.url !== '/metrics') return void res.writeHead(404).end();
      const n = scrapes++;
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(`# TYPE ecnet_build_info gauge
ecnet_build_info{version="0.1.0",component="agent"} 1
# TYPE ecnet_proxy_connections_accepted_total counter
ecnet_proxy_connections_accepted_total ${100 * n}
# TYPE ecnet_proxy_connections_opened_total counter
ecnet_proxy_connections_opened_total{namespace="shop",service="web",cluster="${REMOTE}"} ${80 * n}
ecnet_proxy_connections_opened_total{namespace="shop",service="web",cluster="${LOCAL}"} ${20 * n}
# TYPE ecnet_proxy_connections_active gauge
ecnet_proxy_connections_active{namespace="shop",service="web",cluster="${REMOTE}"} 5
# TYPE ecnet_proxy_target_healthy gauge
ecnet_proxy_target_healthy{namespace="shop",service="web",cluster="${REMOTE}"} 1
`);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    admin = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server?.close();
  });

  it('shows one frame of rows from two scrapes, the local cluster marked (from the agent\'s identity)', async () => {
    const r = await run('--admin', admin, '--interval', '200ms');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^agent ${admin.replace(/\./g, '\\.')} · 0\\.\\ds · accepted \\d+/s · rejected 0/s$`, 'm'));
    const lines = r.stdout.split('\n');
    const header = lines.findIndex((l) => /^SERVICE\s+TARGET\s+CONN\/S/.test(l));
    // Sorted by new connections: the remote target first.
    expect(lines[header + 1]).toMatch(new RegExp(`^shop/web\\s+${REMOTE}\\s+\\d+\\s+0\\s+5\\s+0 B/s\\s+0 B/s\\s+healthy$`));
    expect(lines[header + 2]).toMatch(new RegExp(`^shop/web\\s+${LOCAL} \\(local\\)\\s+\\d+`));
  });

  it('-o json with --count prints one object per frame, per line', async () => {
    const r = await run('--admin', admin, '--interval', '150ms', '--count', '2', '-o', 'json');
    expect(r.code, r.stderr).toBe(0);
    const frames = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; localCluster: string; rows: { service: string; target: string; local: boolean; connPerS: number; active: number }[] });
    expect(frames).toHaveLength(2);
    for (const f of frames) {
      expect(f).toMatchObject({ kind: 'agent', localCluster: LOCAL });
      expect(f.rows.map((x) => [x.service, x.target, x.local, x.active])).toEqual([
        ['shop/web', REMOTE, false, 5],
        ['shop/web', LOCAL, true, 0],
      ]);
      expect(f.rows[0]!.connPerS).toBeGreaterThan(f.rows[1]!.connPerS);
    }
  });

  it('reads any /metrics with --url', async () => {
    const r = await run('--url', `http://${admin}/metrics`, '--interval', '100ms', '-o', 'json');
    expect(r.code, r.stderr).toBe(0);
    const v = JSON.parse(r.stdout) as { rows: { local?: boolean }[]; localCluster?: string };
    // Not the agent's admin endpoint: its identity is not asked, nothing is marked local.
    expect(v.localCluster).toBeUndefined();
    expect(v.rows.every((x) => x.local === undefined)).toBe(true);
  });

  it('says clearly when the agent cannot be reached, and refuses bad flags', async () => {
    const r = await run('--admin', '127.0.0.1:1', '--interval', '100ms');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ecnet: cannot reach the agent at 127\.0\.0\.1:1 \(is `ecnet agent` running\?\) \[ECNET_CONFIG\]$/m);
    expect((await run('--url', 'http://127.0.0.1:1/metrics')).stderr).toMatch(/^ecnet: cannot reach http:\/\/127\.0\.0\.1:1\/metrics \[ECNET_CONFIG\]$/m);
    expect((await run('--url', `http://${admin}/nope`, '--interval', '100ms')).stderr).toMatch(/answered 404.*\[ECNET_CONFIG\]/);
    expect((await run('--admin', admin, '--interval', 'soon')).stderr).toMatch(/--interval must be a duration/);
    expect((await run('--admin', admin, '--count', '0')).stderr).toMatch(/--count must be a whole number of at least 1/);
    expect((await run('--admin', admin, '-o', 'yaml')).stderr).toMatch(/-o must be table or json/);
  });
});
