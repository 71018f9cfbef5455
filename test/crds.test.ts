// The CRDs in daemonset/crds/ are what src/api makes (no drift), and the API server's view of them agrees
// with ecnet's validator: the seed's own manifests (taken from ../shared/seeds as they are) pass both, and
// bad documents fail both. ajv stands in for the API server's OpenAPI v3 validation, independently of our code.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { crdFiles } from '../src/api/crds.js';
import { readManifests } from '../src/api/manifests.js';
import { packageRoot } from '../src/paths.js';

const crdDir = join(packageRoot, 'daemonset', 'crds');
const seedDir = join(packageRoot, '..', 'shared', 'seeds');

const committed = new Map(readdirSync(crdDir).map((f) => [f, readFileSync(join(crdDir, f), 'utf8')]));
const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
const validators = new Map(
  [...committed.values()].map((text) => {
    const crd = parse(text) as { spec: { group: string; names: { kind: string }; versions: { schema: { openAPIV3Schema: object } }[] } };
    return [`${crd.spec.group}/${crd.spec.names.kind}`, ajv.compile(crd.spec.versions[0]!.schema.openAPIV3Schema)] as const;
  }),
);
/** By group and kind: flomesh.io and the MCS API both have a ServiceExport and a ServiceImport. */
const apiServerAccepts = (doc: { kind: string; apiVersion?: string }) => {
  const v = validators.get(`${String(doc.apiVersion ?? '').split('/')[0]}/${doc.kind}`);
  if (!v) throw new Error(`no CRD for ${doc.kind}`);
  return v(doc) ? [] : (v.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
};

/** The YAML of every `<<EOF … EOF` block of the seed walkthrough, its shell variables filled in. */
function seedManifests(): string[] {
  const vars: Record<string, string> = { CLUSTER_NAME: 'cluster-1', HOST_IP: '10.0.2.4', PORT: '80', KUBECONFIG: 'apiVersion: v1' };
  const out: string[] = [];
  for (const file of readdirSync(seedDir)) {
    const text = readFileSync(join(seedDir, file), 'utf8');
    for (const m of text.matchAll(/<<EOF\n([\s\S]*?)\nEOF/g)) out.push(m[1]!.replace(/\$\{(\w+)\}/g, (_, v: string) => vars[v] ?? ''));
  }
  return out;
}

describe('CRDs', () => {
  it('daemonset/crds holds exactly what `ecnet crds` makes from src/api (regenerate with `ecnet crds --dir daemonset/crds`)', () => {
    expect(new Map([...committed].sort())).toEqual(new Map([...crdFiles()].sort()));
  });

  it.skipIf(!existsSync(seedDir))("accepts the seed's manifests unchanged, as ecnet and as the API server would", () => {
    const docs = seedManifests().flatMap(readManifests);
    const ours = docs.filter((d) => ['Cluster', 'ServiceExport', 'GlobalTrafficPolicy'].includes(d.kind));
    // The walkthrough registers a Cluster, exports httpbin and sets an ActiveActive policy.
    expect(ours.map((d) => `${d.kind}/${d.name}`).sort()).toEqual(['Cluster/cluster-1', 'GlobalTrafficPolicy/httpbin', 'ServiceExport/httpbin']);
    for (const d of docs) expect(d.problems, `${d.kind}/${d.name}`).toEqual([]);
    // The walkthrough's kubeconfig block scalar is indented no deeper than its key, so its content
    // lands beside it: the API server would prune that field, and so does ecnet, with a warning.
    expect(docs.flatMap((d) => d.warnings.map((w) => `${d.kind}: ${w.path}`))).toEqual(['Cluster: spec.apiVersion']);
    for (const d of ours) expect(apiServerAccepts(d.resource as { kind: string }), `${d.kind}/${d.name}`).toEqual([]);
  });

  it('refuses bad documents in both, ecnet saying where', () => {
    const bad = `
apiVersion: flomesh.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: a, namespace: b}
spec: {lbType: Random}
---
apiVersion: flomesh.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: a, namespace: b}
spec: {lbType: ActiveActive, targets: [{clusterKey: default/default/default/c1, weight: -5}]}
---
apiVersion: flomesh.io/v1alpha1
kind: Cluster
metadata: {name: c1}
spec: {gatewayPort: 0}
---
apiVersion: flomesh.io/v1alpha1
kind: ServiceExport
metadata: {name: a, namespace: b}
spec: {rules: [{path: /x}]}
---
apiVersion: flomesh.io/v1alpha1
kind: ServiceImport
metadata: {name: a, namespace: b}
spec: {type: ClusterSetIP, ports: [{port: 80, endpoints: [{clusterKey: c1, target: {host: gw, port: 80}}]}]}
`;
    const docs = readManifests(bad);
    expect(docs.map((d) => d.problems.map((p) => p.path))).toEqual([
      ['spec.lbType'],
      ['spec.targets[0].weight'],
      ['spec.gatewayPort'],
      ['spec.rules[0].pathType'],
      ['spec.ports[0].endpoints[0].clusterKey'],
    ]);
    for (const text of bad.split('---')) {
      const doc = parse(text) as { kind: string };
      expect(apiServerAccepts(doc), text).not.toEqual([]);
    }
  });

  it('the MCS API (multicluster.x-k8s.io): an export without spec and a well-formed import pass both; bad imports fail both', () => {
    const good = `
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: httpbin, namespace: httpbin}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {name: httpbin, namespace: httpbin}
spec: {type: ClusterSetIP, ips: [10.96.0.10], ports: [{name: http, protocol: TCP, port: 80}], sessionAffinity: None}
status: {clusters: [{cluster: cluster-1}]}
`;
    const docs = readManifests(good);
    expect(docs.map((d) => d.problems)).toEqual([[], []]);
    expect(docs[1]!.resource).toMatchObject({ spec: { ports: [{ name: 'http', protocol: 'TCP', port: 80 }] } });
    for (const text of good.split('---')) expect(apiServerAccepts(parse(text) as { kind: string }), text).toEqual([]);
    const bad = `
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {name: a, namespace: b}
spec: {type: LoadBalancer, ports: [{port: 80}]}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {name: a, namespace: b}
spec: {type: ClusterSetIP, ips: [10.0.0.1, 10.0.0.2], ports: [{port: 80}]}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {name: a, namespace: b}
spec: {type: ClusterSetIP, ports: [{port: 0}]}
`;
    expect(readManifests(bad).map((d) => d.problems.map((p) => p.path))).toEqual([['spec.type'], ['spec.ips'], ['spec.ports[0].port']]);
    for (const text of bad.split('---')) expect(apiServerAccepts(parse(text) as { kind: string }), text).not.toEqual([]);
    // What no schema says: a port twice.
    const twice = readManifests('apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\nmetadata: {name: a, namespace: b}\nspec: {type: ClusterSetIP, ports: [{name: a, port: 80}, {name: b, port: 80}]}\n');
    expect(twice[0]!.problems.map((p) => p.path)).toEqual(['spec.ports[1]']);
  });

  it('reports YAML syntax errors as problems of their document', () => {
    const docs = readManifests('apiVersion: flomesh.io/v1alpha1\nkind: Cluster\nmetadata: {name: c1\n---\nkind: Namespace\nmetadata: {name: x}\n');
    expect(docs[0]!.problems[0]!.message).toMatch(/^YAML: /);
    expect(docs[1]).toMatchObject({ kind: 'Namespace', problems: [] });
  });
});

describe('ecnet validate / ecnet crds (CLI)', () => {
  const cli = join(packageRoot, 'dist', 'cli', 'main.js');
  beforeAll(() => {
    execFileSync(process.execPath, [join(packageRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(packageRoot, 'tsconfig.json')]);
  });

  it('validate lists every problem with its document and path, and exits 1', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ecnet-validate-'));
    try {
      const file = join(dir, 'gtp.yaml');
      writeFileSync(file, 'apiVersion: flomesh.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: httpbin, namespace: httpbin}\nspec:\n  lbType: ActiveActive\n  targets:\n  - {clusterKey: default/default/default/cluster-1, weight: -1}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: httpbin}\n');
      const r = spawnSync(process.execPath, [cli, 'validate', '-f', file], { encoding: 'utf8' });
      expect(r.status).toBe(1);
      expect(r.stdout).toBe('GlobalTrafficPolicy/httpbin (line 1): spec.targets[0].weight: must be >= 0\nNamespace/httpbin (line 9): valid\n');
      expect(r.stderr).toMatch(/1 document\(s\) invalid \[ECNET_INVALID\]/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('crds prints all four CRDs as one stream for kubectl apply -f -', () => {
    const out = execFileSync(process.execPath, [cli, 'crds'], { encoding: 'utf8' });
    expect(out.match(/^kind: CustomResourceDefinition$/gm)).toHaveLength(4);
    expect(out).toMatch(/shortNames:\n\s+- gtp/);
  });
});
