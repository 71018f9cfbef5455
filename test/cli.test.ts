// `ecnet bpf …` as a user runs it: the built CLI (dist/), a throwaway cgroup and pin directory, and
// bpftool as the independent witness of what is really in the kernel. Then `ecnet get` and `ecnet apply` of the
// MCS API's kinds against an in-memory API server (no kernel needed).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serviceKeyCodec, serviceValueCodec } from '../src/bpf/codecs.js';
import { packageRoot } from '../src/paths.js';
import { type TestCgroup, bpftoolCgroupPrograms, cleanupAll, makeCgroup, makeNetns, makePinDir, runClient } from './helpers/host.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { type KubeApiServer, startKubeApiServer } from './helpers/kube-api-server.js';
import type { McsServiceExport, McsServiceImport } from '../src/api/mcs.js';
import { Kinds } from '../src/sources/source.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');
// An admin endpoint nothing listens on (port 1): `bpf dump` must work without the agent.
const unreachable = '127.0.0.1:1';

describeKernel('ecnet bpf (CLI)', () => {
  const pins = makePinDir();
  let cg: TestCgroup;
  const ecnet = (...args: string[]) => {
    const r = spawnSync(process.execPath, [cli, 'bpf', '--bpffs', pins.path, '--cgroup', cg.path, ...args], { encoding: 'utf8' });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  beforeAll(() => {
    cg = makeCgroup();
  });
  afterAll(() => {
    cleanupAll(
      () => cg && ecnet('unload'),
      () => cg?.remove(),
      () => pins.remove(),
    );
  });

  it('says clearly that nothing is loaded yet', () => {
    const r = ecnet('status');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no ecnet datapath is loaded at .* \(run `ecnet bpf load --proxy IP:PORT`\) \[ECNET_NOT_LOADED\]/);
  });

  it('load is idempotent and reports what it did', () => {
    const first = ecnet('load', '--proxy', '127.0.0.1:15001', '-o', 'json');
    expect(first.code, first.stderr).toBe(0);
    expect(new Set(JSON.parse(first.stdout).programs.map((p: { action: string }) => p.action))).toEqual(new Set(['attached']));
    const second = ecnet('load', '--proxy', '127.0.0.1:15001');
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/ecnet_connect4\s+cgroup\/connect4\s+unchanged/);
    expect(bpftoolCgroupPrograms(cg.path)).toHaveLength(6);
  });

  it('service add/del program the map; malformed addresses are refused with the reason', () => {
    expect(ecnet('service', 'add', '10.96.0.10:8080/tcp', '--id', '3').stdout).toMatch(/redirecting 10\.96\.0\.10:8080\/tcp/);
    expect(ecnet('service', 'add', '[fd00::10]:80').code).toBe(0);
    const udp = ecnet('service', 'add', '10.96.0.11:53/udp');
    expect(udp.stderr).toMatch(/UDP services are not redirected yet.*\[ECNET_UNSUPPORTED\]/);
    expect(ecnet('service', 'add', '10.96.0.11:53').code).toBe(0);
    for (const [arg, why] of [
      ['10.96.0.10:0', /1\.\.65535/],
      ['10.96.0.10:70000', /1\.\.65535/],
      ['10.96.0:80', /not an IP address/],
      ['10.96.0.10', /expected IP:PORT/],
    ] as const) {
      const r = ecnet('service', 'add', arg);
      expect(r.code, arg).toBe(1);
      expect(r.stderr, arg).toMatch(why);
      expect(r.stderr, arg).toMatch(/\[ECNET_BAD_ADDRESS\]/);
    }
    expect(ecnet('service', 'del', '10.96.0.11:53').code).toBe(0);
    expect(ecnet('service', 'del', '10.96.0.11:53').stderr).toMatch(/is not in ecnet_services.*\[ECNET_NOT_FOUND\]/);
  });

  it('dump agrees with bpftool map dump of the same pinned map', () => {
    const ours = JSON.parse(ecnet('dump', 'ecnet_services', '-o', 'json', '--admin', unreachable).stdout) as { entries: { key: unknown; value: unknown }[] };
    const raw = JSON.parse(
      execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', join(pins.path, 'maps', 'ecnet_services')], { encoding: 'utf8' }),
    ) as { key: string[]; value: string[] }[];
    const bytes = (hex: string[]) => Buffer.from(hex.map((h) => parseInt(h, 16)));
    const theirs = raw.map((e) => ({ key: serviceKeyCodec.decode(bytes(e.key)), value: serviceValueCodec.decode(bytes(e.value)) }));
    const sort = (a: { key: unknown }[]) => [...a].sort((x, y) => JSON.stringify(x.key).localeCompare(JSON.stringify(y.key)));
    expect(sort(ours.entries.map(({ key, value }) => ({ key, value })))).toEqual(sort(theirs));
    expect(ours.entries).toHaveLength(2);
    const r = ecnet('dump', 'ecnet_services', '--admin', unreachable);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ADDRESS\s+PROTO\s+ID\s+SERVICE\s+FLAGS$/m);
    expect(r.stdout).toMatch(/^10\.96\.0\.10:8080\s+tcp\s+3\s+-\s+-$/m);
    expect(r.stdout).toMatch(/^\[fd00::10\]:80\s+tcp\s+0\s+-\s+-$/m);
    // Without the agent the dump still comes, and says why the names are missing.
    expect(r.stderr).toMatch(/service names unavailable \(SERVICE shows -\): cannot reach the agent at 127\.0\.0\.1:1 /);
  });

  it('dump names the service of each entry from the agent\'s /routes (by address, else by id)', async () => {
    // The agent's admin endpoint as `ecnet routes` reads it: ClusterIP:port → service, and the id it programs.
    const reports = [
      { address: '10.96.0.10:8080', namespace: 'shop', service: 'web', port: 8080, id: 12345, policy: '-', targets: [], localEndpoints: [], decision: [], redirected: true },
      { address: '10.96.0.99:80', namespace: 'shop', service: 'by-id', port: 80, id: 0, policy: '-', targets: [], localEndpoints: [], decision: [], redirected: true },
    ];
    const admin = createServer((req, res) => {
      if (req.url === '/routes') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(reports));
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => admin.listen(0, '127.0.0.1', r));
    const at = `127.0.0.1:${(admin.address() as AddressInfo).port}`;
    try {
      // Spawned without blocking this thread: the admin server above answers meanwhile.
      const run = (...args: string[]) =>
        new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
          const c = spawn(process.execPath, [cli, 'bpf', '--bpffs', pins.path, '--cgroup', cg.path, ...args]);
          let stdout = '';
          let stderr = '';
          c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
          c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
          c.on('close', (code) => resolve({ code, stdout, stderr }));
        });
      const t = await run('dump', 'ecnet_services', '--admin', at);
      expect(t.code, t.stderr).toBe(0);
      expect(t.stderr).toBe('');
      expect(t.stdout).toMatch(/^10\.96\.0\.10:8080\s+tcp\s+3\s+shop\/web:8080\s+-$/m);
      // No report has [fd00::10]:80; one has its id (0).
      expect(t.stdout).toMatch(/^\[fd00::10\]:80\s+tcp\s+0\s+shop\/by-id:80\s+-$/m);
      const j = await run('dump', 'ecnet_services', '-o', 'json', '--admin', at);
      const entries = (JSON.parse(j.stdout) as { entries: { key: { ip: string }; service: unknown }[] }).entries;
      expect(Object.fromEntries(entries.map((e) => [e.key.ip, e.service]))).toEqual({ '10.96.0.10': { namespace: 'shop', name: 'web', port: 8080 }, 'fd00::10': { namespace: 'shop', name: 'by-id', port: 80 } });
      // Every map at once: the counters carry no service.
      const all = JSON.parse((await run('dump', '-o', 'json', '--admin', at)).stdout) as { map: string; entries: Record<string, unknown>[] }[];
      expect(all.find((d) => d.map === 'ecnet_stats')!.entries.every((e) => !('service' in e))).toBe(true);
    } finally {
      admin.close();
    }
  });

  it('status shows programs, their cgroup, pins and fill levels', () => {
    const s = JSON.parse(ecnet('status', '-o', 'json').stdout);
    expect(s.settings).toEqual({ proxy: { ip: '127.0.0.1', port: 15001 }, proxyMark: 0x1000 });
    expect(s.programs).toHaveLength(6);
    for (const p of s.programs) expect(p.cgroup).toBe(cg.path);
    expect(s.maps.find((m: { name: string }) => m.name === 'ecnet_services')).toMatchObject({ entries: 2, capacity: 65536, type: 'hash' });
    const table = ecnet('status').stdout;
    expect(table).toMatch(/proxy\s+127\.0\.0\.1:15001\s+skip mark 0x1000/);
    expect(table).toMatch(/^ecnet_services\s+hash\s+2\s+65536\s+0\.0%/m);
  });

  it('listen answers a redirected client with its original destination', async () => {
    // In a netns of the test's own: the listener and the client both inherit it from this thread.
    const ns = makeNetns(['10.96.0.0/16']);
    let listener: ReturnType<typeof spawn> | undefined;
    try {
      ns.enter();
      listener = spawn(process.execPath, [cli, 'bpf', '--bpffs', pins.path, 'listen', '--proxy', '127.0.0.1:15001', '--count', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let printed = '';
      listener.stdout!.on('data', (d: Buffer) => (printed += d.toString()));
      const exited = new Promise((r) => listener!.on('close', r));
      for (let i = 0; i < 50 && !execFileSync('ss', ['-Hltn', 'sport = :15001'], { encoding: 'utf8' }).trim(); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      const [r] = await runClient({ cgroup: cg.path, targets: ['10.96.0.10:8080'] });
      await exited;
      expect(r!.peer).toBe('10.96.0.10:8080');
      expect(r!.reply).toMatch(/^HTTP\/1\.0 200 OK[\s\S]*-> 10\.96\.0\.10:8080\/tcp \(service id 3\): redirected by the datapath$/);
      expect(printed).toMatch(/^127\.0\.0\.1:\d+ -> 10\.96\.0\.10:8080\/tcp \(service id 3\)/);
      expect(listener.exitCode).toBe(0);
    } finally {
      cleanupAll(
        () => listener?.exitCode === null && listener.kill(),
        () => ns.remove(),
      );
    }
  });

  it('refuses a bad flag, an unknown map and a cgroup outside cgroup v2, with a clear message', () => {
    expect(ecnet('dump', 'nope').stderr).toMatch(/unknown map "nope"; maps: ecnet_services/);
    expect(ecnet('status', '-o', 'yaml').stderr).toMatch(/-o must be table or json/);
    const r = spawnSync(process.execPath, [cli, 'bpf', '--bpffs', `${pins.path}-x`, '--cgroup', '/tmp', 'load', '--proxy', '127.0.0.1:1'], { encoding: 'utf8' });
    expect(r.stderr).toMatch(/not in the cgroup v2 hierarchy.*\[ECNET_NO_CGROUP2\]/);
  });

  it('says so when not run as root', () => {
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, cli, 'bpf', '--bpffs', pins.path, 'status'], { encoding: 'utf8' });
    expect(r.stderr).toMatch(/needs root.*\[ECNET_NOT_ROOT\]/);
  });

  it('unload detaches and unpins everything', () => {
    const r = ecnet('unload');
    expect(r.stdout).toMatch(/detached 6 programs, removed 4 map pins/);
    expect(bpftoolCgroupPrograms(cg.path)).toEqual([]);
    expect(existsSync(pins.path)).toBe(false);
    expect(ecnet('unload').stdout).toMatch(/nothing loaded/);
  });

  it('`ecnet uninstall` does the same (the name DESIGN.md uses)', () => {
    expect(ecnet('load', '--proxy', '127.0.0.1:15001').code).toBe(0);
    const r = spawnSync(process.execPath, [cli, 'uninstall', '--bpffs', pins.path], { encoding: 'utf8' });
    expect(r.stdout).toMatch(/detached 6 programs, removed 4 map pins/);
    expect(bpftoolCgroupPrograms(cg.path)).toEqual([]);
  });
});

describe('ecnet get and apply of MCS API objects (against an in-memory API server)', () => {
  let server: KubeApiServer;
  let dir: string;
  let kubeconfig: string;
  const ns = 'mcs-cli';
  // Spawned without blocking this thread: the API server above answers meanwhile.
  const ecnet = (...args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, [cli, ...args, '--kubeconfig', kubeconfig]);
      let stdout = '';
      let stderr = '';
      c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      c.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  beforeAll(async () => {
    server = await startKubeApiServer();
    dir = mkdtempSync(join(tmpdir(), 'ecnet-cli-mcs-'));
    kubeconfig = file('kubeconfig', server.kubeconfig);
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    server.put({
      apiVersion: 'multicluster.x-k8s.io/v1alpha1',
      kind: 'ServiceExport',
      metadata: { name: 'api', namespace: ns },
      status: {
        conditions: [
          { type: 'Valid', status: 'True', reason: 'Valid', message: '', lastTransitionTime: '2026-01-01T00:00:00Z' },
          { type: 'Conflict', status: 'False', reason: 'NoConflicts', message: '', lastTransitionTime: '2026-01-01T00:00:00Z' },
          { type: 'Ready', status: 'True', reason: 'Ready', message: '', lastTransitionTime: '2026-01-01T00:00:00Z' },
        ],
      },
    } as McsServiceExport);
    server.put({
      apiVersion: 'multicluster.x-k8s.io/v1alpha1',
      kind: 'ServiceImport',
      metadata: { name: 'api', namespace: ns },
      spec: { type: 'ClusterSetIP', ips: ['10.96.7.7'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
      status: { clusters: [{ cluster: 'cluster-1' }] },
    } as McsServiceImport);
  });
  afterAll(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('get svcex prints MCS ServiceExports with their Valid, Conflict and Ready conditions, under every name the CLI takes', async () => {
    for (const name of ['svcex', 'serviceexports.multicluster.x-k8s.io', 'serviceexport.multicluster.x-k8s.io', 'SVCEX']) {
      const r = await ecnet('get', name, '-n', ns);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      expect(r.stdout, name).toMatch(/^NAME\s+VALID\s+CONFLICT\s+READY\s+AGE$/m);
      expect(r.stdout, name).toMatch(/^api\s+True\s+False\s+True\s+\S+$/m);
    }
    // One by name, and as YAML with its group.
    const one = await ecnet('get', 'svcex', 'api', '-n', ns, '-o', 'yaml');
    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).toMatch(/^apiVersion: multicluster\.x-k8s\.io\/v1alpha1$/m);
    expect(one.stdout).toMatch(/^kind: ServiceExport$/m);
    // -A adds the namespace.
    expect((await ecnet('get', 'svcex', '-A')).stdout).toMatch(new RegExp(`^${ns}\\s+api\\s+True`, 'm'));
  });

  it('get svcim prints MCS ServiceImports with their type and address, under every name the CLI takes', async () => {
    for (const name of ['svcim', 'serviceimports.multicluster.x-k8s.io', 'serviceimport.multicluster.x-k8s.io']) {
      const r = await ecnet('get', name, '-n', ns);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      expect(r.stdout, name).toMatch(/^NAME\s+TYPE\s+IP\s+AGE$/m);
      expect(r.stdout, name).toMatch(/^api\s+ClusterSetIP\s+10\.96\.7\.7\s+\S+$/m);
    }
    const j = await ecnet('get', 'svcim', 'api', '-n', ns, '-o', 'json');
    expect(JSON.parse(j.stdout)).toMatchObject({ apiVersion: 'multicluster.x-k8s.io/v1alpha1', spec: { ips: ['10.96.7.7'] }, status: { clusters: [{ cluster: 'cluster-1' }] } });
  });

  it('the bare names serviceexports/serviceimports are flomesh.io\'s, not the MCS API\'s', async () => {
    for (const name of ['serviceexports', 'serviceimports']) {
      const r = await ecnet('get', name, '-n', ns);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout, name).toBe('');
      expect(r.stderr, name).toMatch(/No resources found in mcs-cli namespace/);
    }
    const missing = await ecnet('get', 'svcex', 'nope', '-n', ns);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/serviceexports "nope" not found in namespace mcs-cli \[ECNET_CONFIG\]/);
  });

  it('apply writes an MCS ServiceExport (created, then unchanged)', async () => {
    const f = file('export.yaml', ['apiVersion: multicluster.x-k8s.io/v1alpha1', 'kind: ServiceExport', 'metadata:', '  name: web', ''].join('\n'));
    const first = await ecnet('apply', '-n', ns, '-f', f);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toBe('serviceexport.multicluster.x-k8s.io/web created\n');
    expect(server.object(Kinds.McsServiceExport, ns, 'web')).toBeDefined();
    const again = await ecnet('apply', '-n', ns, '-f', f);
    expect(again.stdout).toBe('serviceexport.multicluster.x-k8s.io/web unchanged\n');
  });

  it('apply of an invalid MCS ServiceExport says what is wrong, where, and writes nothing', async () => {
    const writes = () => server.requests.filter((r) => r.method !== 'GET').length;
    const before = writes();
    // Another version of the API, and a name Kubernetes refuses; a valid document beside them is not applied either.
    const f = file(
      'bad.yaml',
      [
        'apiVersion: multicluster.x-k8s.io/v1beta1',
        'kind: ServiceExport',
        'metadata:',
        '  name: web2',
        '---',
        'apiVersion: multicluster.x-k8s.io/v1alpha1',
        'kind: ServiceExport',
        'metadata:',
        '  name: Not_A_Name',
        '---',
        'apiVersion: multicluster.x-k8s.io/v1alpha1',
        'kind: ServiceExport',
        'metadata:',
        '  name: fine',
        '',
      ].join('\n'),
    );
    const r = await ecnet('apply', '-n', ns, '-f', f);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^ServiceExport\/web2 \(line 1\): apiVersion: must be multicluster\.x-k8s\.io\/v1alpha1, got "multicluster\.x-k8s\.io\/v1beta1"$/m);
    expect(r.stderr).toMatch(/^ServiceExport\/Not_A_Name \(line 6\): metadata\.name: /m);
    expect(r.stderr).toMatch(/^ecnet: 2 document\(s\) invalid; nothing was applied \[ECNET_CONFIG\]$/m);
    expect(writes()).toBe(before);
    expect(server.object(Kinds.McsServiceExport, ns, 'fine')).toBeUndefined();
    // An unknown kind of the group is refused the same way.
    const kind = await ecnet('apply', '-n', ns, '-f', file('kind.yaml', 'apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExports\nmetadata:\n  name: x\n'));
    expect(kind.code).toBe(1);
    expect(kind.stderr).toMatch(/ServiceExports\/x \(line 1\): kind: must be one of ServiceExport, ServiceImport, got "ServiceExports"/);
  });
});
