import { describe, expect, it } from 'vitest';
import { formatProblem } from './schema.js';
import { validateResource } from './validate.js';

const gtp = (spec: unknown) => ({ apiVersion: 'flomesh.io/v1alpha1', kind: 'GlobalTrafficPolicy', metadata: { name: 'httpbin', namespace: 'httpbin' }, spec });
const problems = (doc: unknown) => {
  const v = validateResource(doc);
  return v.ok ? [] : v.problems.map(formatProblem);
};

describe('flomesh.io validation', () => {
  it('accepts the seed-shaped resources and applies the API defaults', () => {
    const v = validateResource({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: 'cluster-1' }, spec: { gatewayHost: '10.0.2.4' } });
    expect(v.ok && v.resource.spec).toEqual({ region: 'default', zone: 'default', group: 'default', gatewayHost: '10.0.2.4', gatewayPort: 80 });
    const e = validateResource({
      apiVersion: 'flomesh.io/v1alpha1',
      kind: 'ServiceExport',
      metadata: { name: 'httpbin', namespace: 'httpbin' },
      spec: { serviceAccountName: '*', rules: [{ portNumber: 8080, path: '/httpbin', pathType: 'Prefix' }] },
    });
    expect(e.ok && e.resource.spec).toMatchObject({ loadBalancer: 'RoundRobinLoadBalancer' });
    const p = validateResource(gtp({ targets: [{ clusterKey: 'default/default/default/cluster-1' }] }));
    expect(p.ok && p.resource.spec).toEqual({ lbType: 'Locality', targets: [{ clusterKey: 'default/default/default/cluster-1' }] });
  });

  it('lists every problem with its field path', () => {
    expect(
      problems(gtp({ lbType: 'RoundRobin', targets: [{ clusterKey: 'default/default/default/cluster-1', weight: 10 }, { clusterKey: 'cluster-3', weight: -1 }] })),
    ).toEqual([
      'spec.lbType: must be one of "Locality", "ActiveActive", "FailOver", got "RoundRobin"',
      'spec.targets[1].clusterKey: "cluster-3" does not match ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$',
      'spec.targets[1].weight: must be >= 0',
    ]);
    expect(
      problems({
        apiVersion: 'flomesh.io/v1alpha1',
        kind: 'ServiceExport',
        metadata: { name: 'Httpbin' },
        spec: { rules: [{ portNumber: 0, path: 'httpbin' }], targetClusters: ['a/b/c'], sessionSticky: 'yes', colour: 'blue' },
      }),
    ).toEqual([
      'metadata.name: "Httpbin" must be a DNS-1123 subdomain (lower case letters, digits, \'-\')',
      'spec.rules[0].pathType: is required',
      'spec.rules[0].portNumber: must be >= 1',
      'spec.rules[0].path: "httpbin" does not match ^/',
      'spec.targetClusters[0]: "a/b/c" does not match ' + '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/'.repeat(1) + '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$',
      'spec.sessionSticky: must be a boolean, got string',
    ]);
    const v = validateResource(gtp({ lbType: 'FailOver', colour: 'blue' }));
    expect(v.ok).toBe(true);
    expect(v.warnings.map(formatProblem)).toEqual(['warning: spec.colour: unknown field (dropped, as the API server does)']);
    expect(v.ok && v.resource.spec).toEqual({ lbType: 'FailOver' });
    expect(problems({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: 'c1', namespace: 'x' }, spec: { gatewayPort: 70000 } })).toEqual([
      'metadata.namespace: Cluster is cluster-scoped: it has no namespace',
      'spec.gatewayPort: must be <= 65535',
    ]);
  });

  it('checks what a schema cannot: duplicates and combinations', () => {
    expect(problems(gtp({ lbType: 'FailOver', targets: [{ clusterKey: 'a/b/c/d' }, { clusterKey: 'a/b/c/d' }] }))).toEqual([
      'spec.targets[1].clusterKey: cluster a/b/c/d is already at index 0',
    ]);
    expect(problems(gtp({ targets: [{ clusterKey: 'a/b/c/d' }, { clusterKey: 'a/b/c/e' }] }))).toEqual([
      'spec.targets: Locality takes at most one target (the cluster to keep traffic in)',
    ]);
    const imp = (ports: unknown) => ({ apiVersion: 'flomesh.io/v1alpha1', kind: 'ServiceImport', metadata: { name: 'x', namespace: 'y' }, spec: { ports } });
    expect(problems(imp([{ name: 'http', port: 80, endpoints: [] }, { name: 'http', port: 80, endpoints: [] }]))).toEqual([
      'spec.ports[1].name: port name "http" is already at index 0',
      'spec.ports[1]: port 80/TCP is already at index 0',
    ]);
    expect(
      problems({ apiVersion: 'flomesh.io/v1alpha1', kind: 'Cluster', metadata: { name: 'c1' }, spec: { kubeconfig: 'x', kubeconfigSecretRef: { namespace: 'n', name: 's' }, gatewayHost: 'not a host' } }),
    ).toEqual(['spec.kubeconfigSecretRef: set either kubeconfig or kubeconfigSecretRef, not both', 'spec.gatewayHost: "not a host" is neither an IP address nor a DNS name']);
  });

  it('never throws on garbage', () => {
    for (const doc of [null, 42, 'x', [], { kind: 'Cluster' }, { apiVersion: 'flomesh.io/v1alpha1', kind: 'Nope' }, gtp(7), gtp([]), gtp({ targets: 'all' })]) {
      const v = validateResource(doc);
      expect(v.ok).toBe(false);
      expect(v.problems.length).toBeGreaterThan(0);
    }
  });
});
