// The local source on real directories and real fs.watch: what a user edits by hand and what `ecnet apply`
// writes, seen live by informers; server-owned fields kept beside the user's files.
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalSource } from '../src/sources/local.js';
import { Kinds, type KubeObject, type WatchEvent } from '../src/sources/source.js';

const dirs: string[] = [];
const sources: LocalSource[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ecnet-local-'));
  dirs.push(d);
  return d;
}
function open(dir: string, rescanMs = 200): LocalSource {
  const s = new LocalSource({ dir, rescanMs });
  sources.push(s);
  return s;
}
afterEach(() => {
  for (const s of sources.splice(0)) s.destroy();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function until<T>(fn: () => T | undefined | false, ms = 3000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`condition not met in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const seedExport = `apiVersion: flomesh.io/v1alpha1
kind: ServiceExport
metadata:
  name: httpbin
  namespace: httpbin
spec:
  serviceAccountName: "*"
  rules:
    - portNumber: 8080
      path: "/httpbin"
      pathType: Prefix
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: httpbin
spec:
  ports:
    - port: 8080
      targetPort: 8080
      protocol: TCP
  selector:
    app: pipy
`;

describe('local source', () => {
  it('serves hand-written YAML with defaults, a uid, a creation time and a ClusterIP, without touching the file', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'httpbin.yaml'), seedExport);
    const src = open(dir);
    const [exp] = await src.list(Kinds.ServiceExport);
    expect(exp?.metadata).toMatchObject({ name: 'httpbin', namespace: 'httpbin', generation: 1 });
    expect(exp?.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect((exp?.spec as { loadBalancer: string }).loadBalancer).toBe('RoundRobinLoadBalancer');
    const svc = await src.get(Kinds.Service, 'httpbin', 'httpbin');
    expect((svc?.spec as { clusterIP: string }).clusterIP).toMatch(/^10\.96\.\d+\.\d+$/);
    expect(readFileSync(join(dir, 'httpbin.yaml'), 'utf8')).toBe(seedExport);
    // A second reader (another process) sees the same server-owned fields.
    const again = await open(dir).get(Kinds.Service, 'httpbin', 'httpbin');
    expect(again?.metadata.uid).toBe(svc?.metadata.uid);
    expect(again?.spec).toEqual(svc?.spec);
  });

  it('picks up edits, new files and deletions live; a broken edit keeps what was there', async () => {
    const dir = tempDir();
    const src = open(dir);
    const events: WatchEvent[] = [];
    const inf = src.informer(Kinds.ServiceExport, { onEvent: (e) => events.push(e) });
    await inf.synced;
    expect(inf.list()).toEqual([]);
    writeFileSync(join(dir, 'a.yaml'), seedExport);
    await until(() => inf.get('httpbin', 'httpbin'));
    expect(events.map((e) => e.type)).toEqual(['added']);

    writeFileSync(join(dir, 'a.yaml'), seedExport.replace('"*"', 'curl'));
    await until(() => events.length === 2);
    expect(events[1]).toMatchObject({ type: 'updated', object: { spec: { serviceAccountName: 'curl' }, metadata: { generation: 2 } } });

    writeFileSync(join(dir, 'a.yaml'), 'kind: [unclosed');
    const invalid = seedExport.replace('pathType: Prefix', 'pathType: Sometimes');
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'b.yaml'), invalid.replace('name: httpbin\n  namespace: httpbin', 'name: other\n  namespace: httpbin'));
    await new Promise((r) => setTimeout(r, 400));
    expect(inf.list().map((o) => o.metadata.name)).toEqual(['httpbin']);
    expect(events).toHaveLength(2);

    rmSync(join(dir, 'a.yaml'));
    await until(() => events.length === 3);
    expect(events[2]).toMatchObject({ type: 'deleted', object: { metadata: { name: 'httpbin' } } });
  });

  it('a ServiceImport of flomesh.io and one of the MCS API of the same name are two objects, in two files, with two statuses', async () => {
    const dir = tempDir();
    const s = open(dir);
    const meta = { name: 'httpbin', namespace: 'httpbin' };
    await s.apply({ apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceImport', metadata: meta, spec: { type: 'ClusterSetIP', ports: [{ port: 80, protocol: 'TCP', endpoints: [] }], sessionAffinity: 'None' } }, { manager: 'test' });
    await s.apply({ apiVersion: 'multicluster.x-k8s.io/v1alpha1', kind: 'ServiceImport', metadata: meta, spec: { type: 'Headless', ports: [{ port: 81, protocol: 'TCP' }] } }, { manager: 'test' });
    await s.writeStatus(Kinds.ServiceImport, 'httpbin', 'httpbin', { clusters: [{ cluster: 'default/default/default/cluster-1' }] });
    await s.writeStatus(Kinds.McsServiceImport, 'httpbin', 'httpbin', { clusters: [{ cluster: 'cluster-1' }] });
    const f = await s.get<KubeObject & { spec: { type: string } }>(Kinds.ServiceImport, 'httpbin', 'httpbin');
    const m = await s.get<KubeObject & { spec: { type: string } }>(Kinds.McsServiceImport, 'httpbin', 'httpbin');
    expect([f?.spec.type, m?.spec.type]).toEqual(['ClusterSetIP', 'Headless']);
    expect([f?.status, m?.status]).toEqual([{ clusters: [{ cluster: 'default/default/default/cluster-1' }] }, { clusters: [{ cluster: 'cluster-1' }] }]);
    expect(readdirSync(join(dir, 'httpbin')).sort()).toEqual(['serviceimport.httpbin.yaml', 'serviceimport.multicluster.x-k8s.io.httpbin.yaml']);
    // An invalid MCS document is refused, as a flomesh.io one is.
    await expect(s.apply({ apiVersion: 'multicluster.x-k8s.io/v1alpha1', kind: 'ServiceImport', metadata: { name: 'bad', namespace: 'httpbin' }, spec: { type: 'LoadBalancer', ports: [] } }, { manager: 'test' })).rejects.toMatchObject({ code: 'ECNET_SOURCE_INVALID' });
  });

  it('apply creates, updates (keeping the ClusterIP) and delete removes; status is written beside', async () => {
    const dir = tempDir();
    const src = open(dir);
    const svc: KubeObject = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { ports: [{ port: 80 }] } };
    const created = await src.apply(svc, { manager: 'test' });
    const ip = (created.spec as { clusterIP: string }).clusterIP;
    expect(ip).toMatch(/^10\.96\./);
    expect(readdirSync(join(dir, 'shop'))).toEqual(['service.web.yaml']);
    const updated = await src.apply({ ...svc, spec: { ports: [{ port: 81 }] } }, { manager: 'test' });
    expect(updated.spec).toMatchObject({ clusterIP: ip, ports: [{ port: 81 }] });
    expect(updated.metadata.uid).toBe(created.metadata.uid);

    await expect(src.apply({ apiVersion: 'flomesh.io/v1alpha1', kind: 'GlobalTrafficPolicy', metadata: { name: 'x', namespace: 'shop' }, spec: { lbType: 'Nearest' } }, { manager: 'test' })).rejects.toMatchObject({
      code: 'ECNET_SOURCE_INVALID',
      message: expect.stringContaining('spec.lbType'),
    });

    writeFileSync(join(dir, 'exp.yaml'), seedExport);
    const other = open(dir);
    const seen = other.informer(Kinds.ServiceExport);
    await seen.synced;
    await until(() => src.informer(Kinds.ServiceExport).get('httpbin', 'httpbin'));
    await src.writeStatus(Kinds.ServiceExport, 'httpbin', 'httpbin', { conditions: [{ type: 'Valid', status: 'True', reason: 'Valid', message: 'ok', lastTransitionTime: '2026-01-01T00:00:00Z' }] });
    expect(readFileSync(join(dir, 'exp.yaml'), 'utf8')).toBe(seedExport);
    await until(() => (seen.get('httpbin', 'httpbin')?.status as { conditions?: unknown[] } | undefined)?.conditions?.length === 1);

    expect(await src.delete(Kinds.Service, 'web', 'shop')).toBe(true);
    expect(await src.delete(Kinds.Service, 'web', 'shop')).toBe(false);
    expect(existsSync(join(dir, 'shop', 'service.web.yaml'))).toBe(false);
    // Deleting from a multi-document file keeps the other documents.
    expect(await src.delete(Kinds.Service, 'httpbin', 'httpbin')).toBe(true);
    expect(readFileSync(join(dir, 'exp.yaml'), 'utf8')).toContain('kind: ServiceExport');
    expect(await src.get(Kinds.ServiceExport, 'httpbin', 'httpbin')).toBeDefined();
  });

  it('a missing directory is unreachable, not empty, and syncs once it appears', async () => {
    const dir = join(tempDir(), 'later');
    const src = open(dir, 50);
    const inf = src.informer(Kinds.ServiceExport);
    await new Promise((r) => setTimeout(r, 150));
    expect(inf.isSynced).toBe(false);
    expect(inf.healthy).toBe(false);
    expect(inf.lastError).toMatchObject({ code: 'ECNET_SOURCE_UNREACHABLE' });
    mkdirSync(dir);
    writeFileSync(join(dir, 'x.yaml'), seedExport);
    await inf.synced;
    expect(inf.healthy).toBe(true);
    expect(inf.list()).toHaveLength(1);
  });

  it('a file that has never parsed keeps the cluster not ready (nothing is taken for deleted), and says which file', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'good.yaml'), seedExport);
    writeFileSync(join(dir, 'bad.yaml'), 'kind: [oops');
    const src = open(dir, 100);
    const inf = src.informer(Kinds.ServiceExport);
    await new Promise((r) => setTimeout(r, 150));
    expect(inf.isSynced).toBe(false);
    expect(inf.healthy).toBe(false);
    expect(inf.lastError?.message).toMatch(/1 file\(s\) in .* have never parsed, so not all its resources are known: .*bad\.yaml/);
    // One-shot reads still work (as `ecnet get` must).
    expect(await src.list(Kinds.ServiceExport)).toHaveLength(1);
    writeFileSync(join(dir, 'bad.yaml'), '# fixed\n');
    await inf.synced;
    expect(inf.healthy).toBe(true);
  });

  it('an object moved to another file, or a file saved by rename, is never deleted on the way', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'a.yaml'), seedExport);
    const src = open(dir);
    const events: string[] = [];
    const inf = src.informer(Kinds.ServiceExport, { onEvent: (e) => events.push(e.type) });
    await inf.synced;
    const uid = inf.get('httpbin', 'httpbin')!.metadata.uid;
    // Moved: added to b.yaml first, then removed from a.yaml.
    writeFileSync(join(dir, 'b.yaml'), seedExport);
    await new Promise((r) => setTimeout(r, 100));
    writeFileSync(join(dir, 'a.yaml'), '');
    await new Promise((r) => setTimeout(r, 600));
    expect(inf.get('httpbin', 'httpbin')?.metadata.uid).toBe(uid);
    // Saved by an editor that removes the file and writes it again.
    rmSync(join(dir, 'b.yaml'));
    await new Promise((r) => setTimeout(r, 50));
    writeFileSync(join(dir, 'b.yaml'), seedExport);
    await new Promise((r) => setTimeout(r, 600));
    expect(events).not.toContain('deleted');
    expect(inf.get('httpbin', 'httpbin')?.metadata.uid).toBe(uid);
    // Really deleted: gone after the second look, and what the server owned goes with it.
    rmSync(join(dir, 'b.yaml'));
    await until(() => events.includes('deleted'));
    writeFileSync(join(dir, 'c.yaml'), seedExport);
    const again = await until(() => inf.get('httpbin', 'httpbin'));
    expect(again.metadata.uid).not.toBe(uid);
  });

  it('preconditions: create-only and same-uid writes refuse to touch another object', async () => {
    const dir = tempDir();
    const src = open(dir);
    const svc: KubeObject = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { ports: [{ port: 80 }] } };
    const first = await src.apply(svc, { manager: 'test', precondition: { absent: true } });
    await expect(src.apply(svc, { manager: 'test', precondition: { absent: true } })).rejects.toMatchObject({ code: 'ECNET_SOURCE_CONFLICT' });
    await expect(src.apply(svc, { manager: 'test', precondition: { uid: 'someone-else' } })).rejects.toMatchObject({ code: 'ECNET_SOURCE_CONFLICT' });
    await expect(src.delete(Kinds.Service, 'web', 'shop', { uid: 'someone-else' })).rejects.toMatchObject({ code: 'ECNET_SOURCE_CONFLICT' });
    await src.apply(svc, { manager: 'test', precondition: { uid: first.metadata.uid! } });
    expect(await src.delete(Kinds.Service, 'web', 'shop', { uid: first.metadata.uid! })).toBe(true);
  });
});
