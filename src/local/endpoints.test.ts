import { describe, expect, it } from 'vitest';
import type { Service } from '../api/core.js';
import { type LocalPod, desiredSlices } from './endpoints.js';

describe("ecnet local's EndpointSlices", () => {
  const pod: LocalPod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-1', namespace: 'shop', labels: { app: 'web' } }, status: { podIP: '10.1.0.5', phase: 'Running' } };
  const svc = (labels: Record<string, string>): Service => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop', labels }, spec: { selector: { app: 'web' }, ports: [{ port: 80 }] } });

  it("carry the Service's labels but, as Kubernetes' controller, not the reserved ones (a Service cannot pass its slices off as ecnet's)", () => {
    const [slice] = desiredSlices([svc({ 'flomesh.io/service-import': 'web', 'endpointslice.kubernetes.io/managed-by': 'ecnet-controller', 'kubernetes.io/service-name': 'other', 'service.kubernetes.io/headless': '' })], [pod], () => true);
    expect(slice!.metadata.labels).toEqual({ 'flomesh.io/service-import': 'web', 'kubernetes.io/service-name': 'web' });
  });
});
