// The Kubernetes install in the order README.md and daemonset/README.md give, each step on an API server that
// starts empty and refuses what a real one refuses (strict: no Namespace or no CRD, 404). Each kustomization
// is rendered by `kubectl kustomize` and applied as `kubectl apply -k` would: object by object in rendered
// order, resolved through discovery, created or else updated, an error not stopping the rest.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { crdOf } from '../src/api/crds.js';
import { KINDS } from '../src/api/flomesh.js';
import { packageRoot } from '../src/paths.js';
import { startKubeApiServer, type KubeApiServer } from './helpers/kube-api-server.js';

// Rendered manifests are untyped YAML.
type Json = Record<string, any>;
const dir = join(packageRoot, 'daemonset');
const NS = 'ecnet-system';
const TOKEN = 'install-order';
const crdIds = Object.values(KINDS).map((k) => `CustomResourceDefinition/${k.plural}.flomesh.io`);
const idOf = (d: Json) => `${d.kind}/${d.metadata.name}`;

const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
const haveKubectl = kubectl.status === 0;
if (!haveKubectl) console.warn('install-order.test.ts: kubectl not found, skipping the install-order tests (they render with `kubectl kustomize`)');

function render(path: string): Json[] {
  const r = spawnSync('kubectl', ['kustomize', path], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`kubectl kustomize ${path}: ${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as Json).filter(Boolean);
}

// ---- a minimal `kubectl apply` ----

type Outcome = 'created' | 'configured' | 'unchanged';
interface Applied {
  outcomes: Map<string, Outcome>;
  /** `Kind/name: <code> <message>` of every object the server refused. */
  errors: string[];
}

const isPlain = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
/** The manifest's fields over the live object's, so that server-set fields (a Service's clusterIP) stay, as apply keeps them. */
const overlay = (live: Json, desired: Json): Json =>
  Object.fromEntries([...new Set([...Object.keys(live), ...Object.keys(desired)])].map((k) => {
    const [l, d] = [live[k], desired[k]];
    return [k, d === undefined ? l : isPlain(l) && isPlain(d) ? overlay(l, d) : d];
  }));

async function call(server: KubeApiServer, method: string, path: string, body?: unknown): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as Json };
}

/** One object: its resource from discovery (no CRD, no resource), then GET and POST or PUT. Throws what the server said. */
async function applyOne(server: KubeApiServer, obj: Json): Promise<Outcome> {
  const apiVersion = String(obj.apiVersion);
  const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  const discovery = await call(server, 'GET', base);
  const resource = discovery.status === 200 ? (discovery.json.resources as Json[]).find((r) => r.kind === obj.kind && !String(r.name).includes('/')) : undefined;
  // kubectl's words for the same case.
  if (!resource) throw new Error(`no matches for kind "${obj.kind}" in version "${apiVersion}" (ensure CRDs are installed first)`);
  const collection = resource.namespaced ? `${base}/namespaces/${obj.metadata.namespace ?? 'default'}/${resource.name}` : `${base}/${resource.name}`;
  const item = `${collection}/${encodeURIComponent(obj.metadata.name)}`;
  const live = await call(server, 'GET', item);
  const written =
    live.status === 404
      ? await call(server, 'POST', collection, obj)
      : live.status === 200
        ? await call(server, 'PUT', item, overlay(live.json, obj))
        : live;
  if (written.status >= 300) throw new Error(`${written.status} ${written.json.message}`);
  if (live.status === 404) return 'created';
  return written.json.metadata.resourceVersion === live.json.metadata.resourceVersion ? 'unchanged' : 'configured';
}

async function apply(server: KubeApiServer, objects: Json[]): Promise<Applied> {
  const out: Applied = { outcomes: new Map(), errors: [] };
  for (const o of objects) {
    try {
      out.outcomes.set(idOf(o), await applyOne(server, o));
    } catch (err) {
      out.errors.push(`${idOf(o)}: ${(err as Error).message}`);
    }
  }
  return out;
}

const withOutcome = (a: Applied, outcome: Outcome) => [...a.outcomes].filter(([, o]) => o === outcome).map(([id]) => id).sort();

// ---- what comes after the install, as the READMEs say ----

/** daemonset/README.md step 5 and README.md: a member's kubeconfig Secret and its Cluster, on the hub. */
const registration = (name: string): Json[] => [
  { apiVersion: 'v1', kind: 'Secret', metadata: { name: `${name}-kubeconfig`, namespace: NS }, stringData: { kubeconfig: 'apiVersion: v1' } },
  {
    apiVersion: 'flomesh.io/v1alpha1',
    kind: 'Cluster',
    metadata: { name },
    spec: { gatewayHost: '10.0.2.4', gatewayPort: 80, kubeconfigSecretRef: { namespace: NS, name: `${name}-kubeconfig` } },
  },
];

/** What `ecnet controller --leader-elect` creates on the hub: its Lease, in POD_NAMESPACE. */
const lease: Json = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'ecnet-controller', namespace: NS }, spec: { holderIdentity: 'ecnet-controller-0' } };

describe.skipIf(!haveKubectl)('the install applies on empty clusters, in the README\'s order (skipped without kubectl)', () => {
  let member: Json[];
  let hub: Json[];
  let cleanup: Json[];
  let overlayDir: string;
  const servers: KubeApiServer[] = [];
  const emptyCluster = async () => {
    const s = await startKubeApiServer({ strict: true, token: TOKEN });
    servers.push(s);
    return s;
  };

  beforeAll(() => {
    // The member goes through an overlay, as daemonset/README.md step 2 writes it (kustomize wants its path relative).
    overlayDir = mkdtempSync(join(tmpdir(), 'ecnet-overlay-'));
    writeFileSync(
      join(overlayDir, 'kustomization.yaml'),
      [`resources: [${relative(overlayDir, dir)}]`, 'configMapGenerator:', '  - name: ecnet-cluster', '    behavior: replace', '    literals: [clusterKey=default/default/default/cluster-1]', ''].join('\n'),
    );
    member = render(overlayDir);
    hub = render(join(dir, 'control-plane'));
    cleanup = render(join(dir, 'cleanup'));
    return () => rmSync(overlayDir, { recursive: true, force: true });
  });

  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });

  it('each kustomization applies by itself on a cluster that has nothing yet', async () => {
    for (const [what, objects] of [['daemonset/', render(dir)], ['daemonset/control-plane', hub], ['daemonset/cleanup', cleanup]] as const) {
      const result = await apply(await emptyCluster(), objects);
      expect(result.errors, what).toEqual([]);
      expect(withOutcome(result, 'created'), what).toEqual(objects.map(idOf).sort());
    }
  });

  it('the namespace and CRDs that several kustomizations bring render the same in each, so re-applying them changes nothing', () => {
    const byId = new Map<string, Json>();
    let shared = 0;
    for (const d of [...member, ...hub, ...cleanup]) {
      const seen = byId.get(idOf(d));
      if (seen) {
        shared++;
        expect(d, idOf(d)).toEqual(seen);
      } else byId.set(idOf(d), d);
    }
    // The namespace three times, the CRDs twice.
    expect(shared).toBe(2 + crdIds.length);
  });

  it('a member: daemonset/ through its overlay; what the agent, gateway and README step 5 read is there; again, nothing changes', async () => {
    const server = await emptyCluster();
    const first = await apply(server, member);
    expect(first.errors).toEqual([]);
    expect(withOutcome(first, 'created')).toEqual(member.map(idOf).sort());
    for (const path of ['/apis/flomesh.io/v1alpha1/serviceimports', '/apis/flomesh.io/v1alpha1/serviceexports', '/apis/flomesh.io/v1alpha1/globaltrafficpolicies', '/api/v1/services', '/apis/discovery.k8s.io/v1/endpointslices']) {
      expect((await call(server, 'GET', path)).status, path).toBe(200);
    }
    expect((await call(server, 'GET', `/api/v1/namespaces/${NS}/secrets/ecnet-controller-member-token`)).status).toBe(200);
    const again = await apply(server, member);
    expect(again.errors).toEqual([]);
    expect(withOutcome(again, 'unchanged')).toEqual(member.map(idOf).sort());
  });

  it('a hub that is only a control plane: daemonset/control-plane alone, then members can be registered and the controller can hold its Lease', async () => {
    const server = await emptyCluster();
    const install = await apply(server, hub);
    expect(install.errors).toEqual([]);
    const after = await apply(server, [...registration('cluster-1'), lease]);
    expect(after.errors).toEqual([]);
    expect(withOutcome(after, 'created')).toEqual(['Cluster/cluster-1', 'Lease/ecnet-controller', 'Secret/cluster-1-kubeconfig']);
    // The controller's reads on the hub (src/controlplane/controller.ts): Clusters, then each kubeconfig Secret.
    expect((await call(server, 'GET', '/apis/flomesh.io/v1alpha1/clusters')).json.items).toHaveLength(1);
    expect((await call(server, 'GET', `/api/v1/namespaces/${NS}/secrets/cluster-1-kubeconfig`)).status).toBe(200);
  });

  it('a hub that is also a member: daemonset/ then daemonset/control-plane, whose namespace and CRDs are already there unchanged', async () => {
    const server = await emptyCluster();
    expect((await apply(server, member)).errors).toEqual([]);
    const install = await apply(server, hub);
    expect(install.errors).toEqual([]);
    expect(withOutcome(install, 'unchanged')).toEqual([`Namespace/${NS}`, ...crdIds].sort());
    expect(withOutcome(install, 'created')).toEqual(hub.map(idOf).filter((id) => id !== `Namespace/${NS}` && !id.startsWith('CustomResourceDefinition/')).sort());
    expect((await apply(server, [...registration('cluster-1'), lease])).errors).toEqual([]);
  });

  it('cleanup after the agent DaemonSet is deleted: daemonset/cleanup adds its DaemonSet only', async () => {
    const server = await emptyCluster();
    expect((await apply(server, member)).errors).toEqual([]);
    expect((await call(server, 'DELETE', `/apis/apps/v1/namespaces/${NS}/daemonsets/ecnet-agent`)).status).toBe(200);
    const result = await apply(server, cleanup);
    expect(result.errors).toEqual([]);
    expect(Object.fromEntries(result.outcomes)).toEqual({ [`Namespace/${NS}`]: 'unchanged', 'DaemonSet/ecnet-cleanup': 'created' });
    // daemonset/README.md, Uninstall: removed by name, not with `delete -k` (which would take the namespace).
    expect((await call(server, 'DELETE', `/apis/apps/v1/namespaces/${NS}/daemonsets/ecnet-cleanup`)).status).toBe(200);
    expect((await call(server, 'GET', `/api/v1/namespaces/${NS}`)).status).toBe(200);
  });

  it('the check can fail: control-plane\'s old shape (no namespace, no CRDs) is refused on an empty hub, and so is a Cluster', async () => {
    const server = await emptyCluster();
    const old = hub.filter((d) => d.kind !== 'Namespace' && d.kind !== 'CustomResourceDefinition');
    const result = await apply(server, [...old, ...registration('cluster-1')]);
    const missing = `404 namespaces "${NS}" not found`;
    expect([...result.errors].sort()).toEqual(
      [
        ...[...old, ...registration('cluster-1')].filter((d) => d.metadata.namespace === NS).map((d) => `${idOf(d)}: ${missing}`),
        'Cluster/cluster-1: no matches for kind "Cluster" in version "flomesh.io/v1alpha1" (ensure CRDs are installed first)',
      ].sort(),
    );
    // Only the cluster-scoped RBAC got in, as with kubectl.
    expect(withOutcome(result, 'created')).toEqual(['ClusterRole/ecnet-controller', 'ClusterRoleBinding/ecnet-controller']);
    expect((await call(server, 'POST', '/apis/flomesh.io/v1alpha1/clusters', registration('cluster-1')[1])).status).toBe(404);
  });
});

describe('the strict API server', () => {
  it('serves a custom resource only while its CRD defines it, and refuses a misnamed CRD, as kube-apiserver does', async () => {
    const server = await startKubeApiServer({ strict: true, token: TOKEN });
    try {
      const clusters = '/apis/flomesh.io/v1alpha1/clusters';
      const cluster = registration('cluster-1')[1]!;
      expect((await call(server, 'GET', clusters)).status).toBe(404);
      expect((await call(server, 'GET', '/apis/flomesh.io/v1alpha1')).status).toBe(404);
      const crd = crdOf(KINDS.Cluster) as Json;
      const misnamed = { ...crd, metadata: { ...crd.metadata, name: 'cluster.flomesh.io' } };
      expect((await call(server, 'POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', misnamed)).status).toBe(422);
      expect((await call(server, 'POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd)).status).toBe(201);
      expect((await call(server, 'POST', clusters, cluster)).status).toBe(201);
      // Cluster-scoped, as the CRD says: no namespaced path.
      expect((await call(server, 'GET', `/apis/flomesh.io/v1alpha1/namespaces/${NS}/clusters`)).status).toBe(404);
      expect((await call(server, 'DELETE', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`)).status).toBe(200);
      expect((await call(server, 'GET', clusters)).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});
