// The kept-alive agent of a source (src/sources/kube-api.ts) is made again when the kubeconfig's TLS material
// changes (a client certificate file rotated): requests already in flight on the old one must finish, not be
// cut (an in-flight write failing is a failed pass and a retry of everything).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKubernetesSource } from '../src/sources/kubernetes.js';
import { Kinds, type KubeObject, type Source } from '../src/sources/source.js';
import { type KubeApiServer, startKubeApiServer } from './helpers/kube-api-server.js';

describe('the kept-alive agent and a rotated client certificate', () => {
  let server: KubeApiServer;
  let source: Source;
  let dir: string;
  beforeAll(async () => {
    server = await startKubeApiServer({ latencyMs: 400 });
    server.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } } as KubeObject);
    dir = mkdtempSync(join(tmpdir(), 'ecnet-agent-'));
    writeFileSync(join(dir, 'cert'), 'cert-1');
    writeFileSync(join(dir, 'key'), 'key-1');
    // The same server, with client certificate files (read again per request, as client-node does).
    const kubeconfig = server.kubeconfig.replace(/    token: (.*)/, `    token: $1\n    client-certificate: ${join(dir, 'cert')}\n    client-key: ${join(dir, 'key')}`);
    expect(kubeconfig).toContain('client-certificate');
    source = createKubernetesSource({ kubeconfig });
  });
  afterAll(async () => {
    await source?.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lets a request in flight finish when the certificate changes under it', async () => {
    const first = source.get(Kinds.Namespace, 'shop');
    await new Promise((r) => setTimeout(r, 100));
    writeFileSync(join(dir, 'cert'), 'cert-2');
    writeFileSync(join(dir, 'key'), 'key-2');
    const second = source.get(Kinds.Namespace, 'shop');
    const [a, b] = await Promise.allSettled([first, second]);
    expect(a.status === 'fulfilled' ? a.value?.metadata.name : String(a.reason)).toBe('shop');
    expect(b.status === 'fulfilled' ? b.value?.metadata.name : String(b.reason)).toBe('shop');
  });
});
