// The seed's cluster set in local mode, driven as a user would: `ecnet apply` into four cluster directories,
// `ecnet controller` as its own process, `ecnet get` to look. httpbin is exported from cluster-1 and cluster-3;
// the ServiceExport also reaches cluster-2, which has no httpbin Service.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Condition, ServiceImport } from '../src/api/flomesh.js';
import { packageRoot } from '../src/paths.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');
const examples = join(packageRoot, 'examples');
const members = ['cluster-1', 'cluster-2', 'cluster-3'];

describe('ecnet controller on the seed layout (local mode)', () => {
  let root = '';
  let controller: ChildProcess | undefined;
  let controllerLog = '';
  const ecnet = (...args: string[]) => {
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ecnet ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
    return r.stdout;
  };
  const getJson = <T>(cluster: string, ...args: string[]) => JSON.parse(ecnet('get', ...args, '--cluster', join(root, cluster), '-o', 'json')) as T;
  const imports = (cluster: string) => getJson<{ items: ServiceImport[] }>(cluster, 'simp', '-n', 'httpbin').items;
  async function until<T>(what: string, fn: () => T | undefined | false, ms = 10_000): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = fn();
      if (v) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; controller said:\n${controllerLog}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'ecnet-seed-'));
    for (const c of ['control-plane', ...members]) mkdirSync(join(root, c));
    ecnet('apply', '--cluster', join(root, 'control-plane'), '-f', join(examples, 'clusters.yaml'));
    for (const c of members) {
      ecnet('apply', '--cluster', join(root, c), '-f', join(examples, 'httpbin-namespace.yaml'));
      // The seed places the Deployment and Service in clusters 1 and 3 only; the export goes to all three.
      if (c !== 'cluster-2') ecnet('apply', '--cluster', join(root, c), '-n', 'httpbin', '-f', join(examples, 'httpbin.yaml'));
      ecnet('apply', '--cluster', join(root, c), '-n', 'httpbin', '-f', join(examples, 'httpbin-export.yaml'));
    }
    controller = spawn(process.execPath, [cli, 'controller', '--clusters-dir', root, '--resync', '2s'], { env: { ...process.env, ECNET_LOG_LEVEL: 'info' } });
    controller.stderr?.on('data', (d: Buffer) => (controllerLog += d.toString()));
  });
  afterAll(() => {
    controller?.kill('SIGKILL');
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('imports httpbin into every member with the gateways of cluster-1 and cluster-3 as endpoints', async () => {
    for (const c of members) {
      const imp = await until(`the import in ${c}`, () => imports(c).find((i) => (i.status?.clusters?.length ?? 0) === 2 && i.spec.ips?.length));
      expect(imp.metadata.labels?.['app.kubernetes.io/managed-by']).toBe('ecnet-controller');
      expect(imp.spec.ports).toEqual([
        {
          protocol: 'TCP',
          port: 8080,
          endpoints: [
            { clusterKey: 'default/default/default/cluster-1', target: { host: '10.0.2.4', ip: '10.0.2.4', port: 80, path: '/httpbin' } },
            { clusterKey: 'default/default/default/cluster-3', target: { host: '10.0.2.6', ip: '10.0.2.6', port: 80, path: '/httpbin' } },
          ],
        },
      ]);
      // The ordinary name resolves everywhere: the user's Service in 1 and 3, a derived one in 2.
      const svc = getJson<{ metadata: { labels?: Record<string, string> }; spec: { clusterIP: string } }>(c, 'svc', 'httpbin', '-n', 'httpbin');
      expect(imp.spec.ips).toEqual([svc.spec.clusterIP]);
      expect(svc.metadata.labels?.['app.kubernetes.io/managed-by']).toBe(c === 'cluster-2' ? 'ecnet-controller' : undefined);
    }
    expect(ecnet('get', 'simp', '-n', 'httpbin', '--cluster', join(root, 'cluster-2')).trim()).toMatch(/^NAME\s+TYPE\s+IP\s+AGE\nhttpbin\s+ClusterSetIP\s+10\.96\.\d+\.\d+\s+\d+s$/);
  });

  it("says why cluster-2's export is not valid, and that the members are managed", async () => {
    const cond = await until('the Valid condition', () =>
      getJson<{ status?: { conditions?: Condition[] } }>('cluster-2', 'sexp', 'httpbin', '-n', 'httpbin').status?.conditions?.find((x) => x.type === 'Valid'),
    );
    expect(cond).toMatchObject({ status: 'False', reason: 'NoService' });
    const ok = getJson<{ status?: { conditions?: Condition[] } }>('cluster-1', 'sexp', 'httpbin', '-n', 'httpbin').status?.conditions ?? [];
    expect(ok.map((x) => [x.type, x.status, x.reason])).toEqual([
      ['Valid', 'True', 'Valid'],
      ['Conflict', 'False', 'NoConflicts'],
    ]);
    const table = await until('Managed=True', () => {
      const t = ecnet('get', 'clusters', '--cluster', join(root, 'control-plane'));
      return t.split('\n').filter((l) => /\sTrue\s/.test(l)).length === 3 && t;
    });
    expect(table).toMatch(/^NAME\s+REGION\s+ZONE\s+GROUP\s+GATEWAY HOST\s+GATEWAY PORT\s+MANAGED/);
    expect(table).toMatch(/cluster-1\s+default\s+default\s+default\s+10\.0\.2\.4\s+80\s+True/);
  });

  it('removes the imports and the derived Service when the exports go, and never touches the users\' Services', async () => {
    for (const c of members) ecnet('delete', 'sexp', 'httpbin', '-n', 'httpbin', '--cluster', join(root, c));
    for (const c of members) await until(`no import in ${c}`, () => imports(c).length === 0);
    await until('the derived Service gone', () => spawnSync(process.execPath, [cli, 'get', 'svc', 'httpbin', '-n', 'httpbin', '--cluster', join(root, 'cluster-2')]).status === 1);
    for (const c of ['cluster-1', 'cluster-3']) expect(getJson<{ spec: { clusterIP: string } }>(c, 'svc', 'httpbin', '-n', 'httpbin').spec.clusterIP).toMatch(/^10\.96\./);
    controller!.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => controller!.once('exit', (c) => r(c)));
    expect(code).toBe(0);
  });
});
