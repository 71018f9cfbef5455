import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Cluster } from '../api/flomesh.js';
import { memberConnector } from '../controlplane/connect.js';
import { checkInlineKubeconfig } from './inline-kubeconfig.js';
import type { Source } from './source.js';

const kubeconfig = (user: string, cluster = 'server: https://10.0.0.1:6443\n    certificate-authority-data: AAAA') =>
  `apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    ${cluster}\nusers:\n- name: u\n  user:\n${user}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n`;

describe("a member's kubeconfig: inline credentials only", () => {
  it('accepts a token, client certificate and key, and CA, as data', () => {
    expect(() => checkInlineKubeconfig(kubeconfig('    token: abc'))).not.toThrow();
    expect(() => checkInlineKubeconfig(kubeconfig('    client-certificate-data: AAAA\n    client-key-data: BBBB'))).not.toThrow();
  });

  it('refuses exec and auth-provider plugins and file references, saying which field', () => {
    expect(() => checkInlineKubeconfig(kubeconfig('    exec: {command: touch, args: [/tmp/x], apiVersion: client.authentication.k8s.io/v1}'))).toThrow(/users\[0\]\.user\.exec: an exec credential plugin/);
    expect(() => checkInlineKubeconfig(kubeconfig('    auth-provider: {name: gcp}'))).toThrow(/auth-provider/);
    expect(() => checkInlineKubeconfig(kubeconfig('    tokenFile: /var/run/secrets/token'))).toThrow(/tokenFile/);
    expect(() => checkInlineKubeconfig(kubeconfig('    client-key: /etc/key.pem'))).toThrow(/client-key: a client key file/);
    expect(() => checkInlineKubeconfig(kubeconfig('    token: a', 'server: https://x\n    certificate-authority: /etc/ca.pem'))).toThrow(/clusters\[0\]\.cluster\.certificate-authority/);
  });

  it('nothing hides behind YAML: merge keys, aliases, token-file, proxy-url, unknown fields', () => {
    const merged = `apiVersion: v1\nclusters:\n- name: c\n  cluster: {server: 'https://x'}\nusers:\n- name: u\n  user:\n    <<: {exec: {command: /bin/sh, apiVersion: client.authentication.k8s.io/v1}}\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n`;
    expect(() => checkInlineKubeconfig(merged)).toThrow(/users\[0\]\.user\.exec/);
    const aliased = `plugin: &p {exec: {command: /bin/sh}}\nusers:\n- name: u\n  user: *p\n`;
    expect(() => checkInlineKubeconfig(aliased)).toThrow(/kubeconfig\.plugin|users\[0\]\.user\.exec/);
    expect(() => checkInlineKubeconfig(kubeconfig('    token-file: /var/run/secrets/kubernetes.io/serviceaccount/token'))).toThrow(/token-file: a token file/);
    expect(() => checkInlineKubeconfig(kubeconfig('    token: a', 'server: https://x\n    proxy-url: http://evil'))).toThrow(/proxy-url/);
    expect(() => checkInlineKubeconfig(kubeconfig('    Exec: {command: x}'))).toThrow(/Exec: not an inline credential field/);
  });

  it('a kubeconfig that does not parse is refused without quoting it (a Secret\'s content stays out of status and logs)', () => {
    const secret = 'token: SUPERSECRET-1234\n  : : [unbalanced';
    let message = '';
    try {
      checkInlineKubeconfig(secret);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/not valid YAML \(line \d+, column \d+\)/);
    expect(message).not.toContain('SUPERSECRET');
  });

  it('the controller never runs an exec plugin from a Cluster: connecting is refused before any request', async () => {
    const marker = join(tmpdir(), `ecnet-exec-${process.pid}`);
    rmSync(marker, { force: true });
    const cluster = {
      apiVersion: 'flomesh.io/v1alpha1',
      kind: 'Cluster',
      metadata: { name: 'evil' },
      spec: { gatewayHost: '10.0.2.9', gatewayPort: 80, kubeconfig: kubeconfig(`    exec: {command: touch, args: [${marker}], apiVersion: client.authentication.k8s.io/v1}`) },
    } as unknown as Cluster;
    const connect = memberConnector({ controlPlane: {} as Source, clustersDir: undefined });
    await expect(connect(cluster)).rejects.toMatchObject({ code: 'ECNET_SOURCE_INVALID', message: expect.stringMatching(/exec credential plugin/) });
    expect(existsSync(marker)).toBe(false);
  });
});
