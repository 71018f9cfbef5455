// Cluster identities on real tunnels over loopback: the gateway opens a tunnel only for a member cluster's
// certificate and only to exports that include that cluster; the proxy's end accepts only the gateway of the
// cluster its route names; probes get HTTPS without a certificate; a renewed certificate is served to new
// connections while open tunnels keep flowing. No privileges.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../src/paths.js';
import { request } from 'node:https';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterKey } from '../src/api/flomesh.js';
import { staticCatalog } from '../src/gateway/catalog.js';
import { Gateway } from '../src/gateway/gateway.js';
import { type KeyPair, createCa, describe as describeCert, issue } from '../src/identity/pki.js';
import { clusterSpiffeId } from '../src/identity/spiffe.js';
import { IdentityFiles } from '../src/identity/files.js';
import { openTunnel } from '../src/tunnel/client.js';
import { checkGateway, checkServices } from '../src/proxy/health-checks.js';
import type { TunnelTls } from '../src/tunnel/protocol.js';
import { clusterKey } from './helpers/objects.js';

const SET = 'test-set';
const HOUR = 3_600_000;

describe('tunnels between cluster identities', () => {
  let ca: KeyPair;
  let gw: Gateway;
  let backend: Server;
  let late: Server;
  const gwTls: TunnelTls = { clusterSet: SET };
  const id = async (n: number, ttl = HOUR, now = Date.now()): Promise<TunnelTls> => ({ ...(await issue(ca, clusterSpiffeId(SET, clusterKey(n)), ttl, now)), ca: ca.cert, clusterSet: SET });
  const open = (tls: TunnelTls | undefined, service: string, cluster: ClusterKey = clusterKey(1), workload?: string) =>
    openTunnel({ gateway: { host: '127.0.0.1', port: gw.address.port }, target: { service, namespace: 'ns', port: 80 }, sourceCluster: 'ignored', timeoutMs: 3000, ...(tls ? { tls } : {}), cluster, ...(workload ? { workload } : {}) });
  /** The status of a plain HTTPS GET to the gateway, without a client certificate (as the kubelet asks). */
  const httpsStatus = (path: string) =>
    new Promise<number>((resolve, reject) => {
      const r = request({ host: '127.0.0.1', port: gw.address.port, path, rejectUnauthorized: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      r.on('error', reject);
      r.end();
    });
  const echo = (s: Socket, text: string) =>
    new Promise<string>((resolve, reject) => {
      let got = '';
      s.on('data', (d) => {
        got += d;
        if (got.includes(text)) resolve(got);
      });
      s.on('error', reject);
      s.write(text);
    });

  beforeAll(async () => {
    ca = await createCa(SET);
    Object.assign(gwTls, await id(1));
    backend = createServer((c) => {
      c.on('error', () => undefined);
      c.on('data', (d) => c.write(d));
    });
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
    const port = (backend.address() as { port: number }).port;
    // Answers only once the client has half-closed: what it got, then its own end.
    late = createServer({ allowHalfOpen: true }, (c) => {
      let got = '';
      c.on('error', () => undefined);
      c.on('data', (d) => (got += d));
      c.on('end', () => setTimeout(() => c.end(`got ${got}`), 20));
    });
    await new Promise<void>((r) => late.listen(0, '127.0.0.1', r));
    const latePort = (late.address() as { port: number }).port;
    const svc = (name: string, targetClusters?: ClusterKey[]) => ({
      namespace: 'ns',
      name,
      ports: new Map([[80, [{ ip: '127.0.0.1', port }]]]),
      export: { loadBalancer: 'RoundRobinLoadBalancer' as const, ...(targetClusters ? { targetClusters } : {}) },
    });
    const lateSvc = { ...svc('late'), ports: new Map([[80, [{ ip: '127.0.0.1', port: latePort }]]]) };
    const ingress = { ...svc('only2web', [clusterKey(2)]), export: { loadBalancer: 'RoundRobinLoadBalancer' as const, targetClusters: [clusterKey(2)], rules: [{ portNumber: 80, path: '/only2', pathType: 'Prefix' as const }] } };
    const saOnly = { ...svc('sa'), export: { loadBalancer: 'RoundRobinLoadBalancer' as const, serviceAccountName: 'web' } };
    const saOther = { ...svc('sa-other'), export: { loadBalancer: 'RoundRobinLoadBalancer' as const, serviceAccountName: 'shop/api' } };
    gw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog: staticCatalog([svc('open'), svc('only2', [clusterKey(2)]), lateSvc, ingress, saOnly, saOther]), tls: gwTls });
  });
  afterAll(async () => {
    await gw?.close(100);
    backend?.close();
    late?.close();
  });

  it('refuses a tunnel without a certificate, with 403', async () => {
    const plainTls: TunnelTls = { ca: ca.cert, clusterSet: SET };
    await expect(open(plainTls, 'open')).rejects.toMatchObject({ code: 'ECNET_TUNNEL_REFUSED', status: 403 });
  });

  it('opens to any member for an export to all, and only to the listed clusters for one with targetClusters', async () => {
    const c2 = await id(2);
    const c3 = await id(3);
    const s = await open(c2, 'only2');
    expect(await echo(s, 'ping')).toBe('ping');
    s.destroy();
    await expect(open(c3, 'only2')).rejects.toMatchObject({ status: 403 });
    expect(gw.stats.refused[403]).toBeGreaterThanOrEqual(2);
    const s3 = await open(c3, 'open');
    expect(await echo(s3, 'pong')).toBe('pong');
    s3.destroy();
  });

  it("an export's serviceAccountName: only that workload of a member gets in (name: in the export's namespace; namespace/name; '*': any)", async () => {
    const c2 = await id(2);
    const s = await open(c2, 'sa', clusterKey(1), 'ns/web');
    expect(await echo(s, 'sa')).toBe('sa');
    s.destroy();
    await expect(open(c2, 'sa', clusterKey(1), 'ns/other')).rejects.toMatchObject({ status: 403 });
    await expect(open(c2, 'sa', clusterKey(1), 'other/web')).rejects.toMatchObject({ status: 403 });
    // No workload (a host-network caller), or one that is not a name: refused too.
    await expect(open(c2, 'sa')).rejects.toMatchObject({ status: 403 });
    await expect(open(c2, 'sa', clusterKey(1), 'ns/web/x')).rejects.toMatchObject({ status: 403 });
    const t = await open(c2, 'sa-other', clusterKey(1), 'shop/api');
    t.destroy();
    // The export without one (or '*'): any workload, and none.
    (await open(c2, 'open')).destroy();
  });

  it('a resumed TLS session (no certificate signed or checked again) is judged as the session began: by its cluster and workload', async () => {
    const c3 = await id(3);
    const first = (await open(c3, 'open')) as TLSSocket;
    expect(await echo(first, 'first')).toBe('first');
    first.destroy();
    const again = (await open(c3, 'open')) as TLSSocket;
    expect(again.isSessionReused()).toBe(true);
    again.destroy();
    // Still cluster-3, still not in only2's targetClusters; still no workload for sa.
    await expect(open(c3, 'only2')).rejects.toMatchObject({ status: 403 });
    await expect(open(c3, 'sa', clusterKey(1), 'ns/other')).rejects.toMatchObject({ status: 403 });
    const resumedForSa = (await open(c3, 'sa', clusterKey(1), 'ns/web')) as TLSSocket;
    expect(resumedForSa.isSessionReused()).toBe(true);
    resumedForSa.destroy();
  });

  it('the calling end refuses a gateway that is not the cluster its route names', async () => {
    await expect(open(await id(2), 'open', clusterKey(3))).rejects.toThrow(/is spiffe:\/\/test-set\/cluster\/default\/default\/default\/cluster-1, not spiffe:\/\/test-set\/cluster\/default\/default\/default\/cluster-3/);
  });

  it('a client that half-closes still gets the whole answer through the TLS tunnel, as over plain TCP', async () => {
    // Client first: it sends and half-closes, then reads the whole answer (a cut answer was the bug).
    const s = await open(await id(2), 'late');
    const answer = new Promise<string>((resolve) => {
      let got = '';
      s.on('data', (d) => (got += d));
      s.on('end', () => resolve(got));
    });
    s.end('one-way');
    expect(await answer).toBe('got one-way');
  });

  it('speaks TLS 1.3 only (no renegotiation: the certificate checked is the one the tunnel is judged by)', async () => {
    const c2 = await id(2);
    const r = await new Promise<string>((resolve) => {
      const s = tlsConnect({ host: '127.0.0.1', port: gw.address.port, cert: c2.cert, key: c2.key, ca: ca.cert, maxVersion: 'TLSv1.2', checkServerIdentity: () => undefined });
      s.on('secureConnect', () => resolve(`connected ${s.getProtocol()}`));
      s.on('error', (e) => resolve(`refused: ${e.message}`));
    });
    expect(r).toMatch(/^refused/);
  });

  it('an export for some clusters only serves no ingress request (ingress callers prove no cluster)', async () => {
    expect(await httpsStatus('/only2/x')).toBe(403);
  });

  it('refuses an expired certificate', async () => {
    await expect(open(await id(2, 60_000, Date.now() - HOUR), 'open')).rejects.toMatchObject({ status: 403 });
  });

  it("a proxy's active checks over mTLS: /healthz, and /healthz/services with only what the calling cluster may reach", async () => {
    const gwAt = { host: '127.0.0.1', port: gw!.address.port };
    const connect = (host: string, port: number) => createConnection({ host, port });
    expect(await checkGateway(gwAt, connect, 2_000, await id(1), clusterKey(1))).toBe(true);
    const one = await checkServices(gwAt, connect, 2_000, await id(1), clusterKey(1));
    // (The gateway is cluster 1's; the caller is whoever its certificate names.)
    const two = await checkServices(gwAt, connect, 2_000, await id(2), clusterKey(1));
    if (one.kind !== 'answer' || two.kind !== 'answer') throw new Error(`no answer: ${one.kind} ${two.kind}`);
    expect(one.answer.services.get('ns/open')?.ready).toBe(true);
    // Exported to cluster 2 only: cluster 1 is not told of it.
    expect(one.answer.services.has('ns/only2')).toBe(false);
    expect(two.answer.services.has('ns/only2')).toBe(true);
    // The gateway it reached must be the cluster the route names.
    expect((await checkServices(gwAt, connect, 2_000, await id(1), clusterKey(3))).kind).toBe('failed');
  });

  it('answers the kubelet\'s probe over HTTPS without a client certificate', async () => {
    expect(await httpsStatus('/healthz')).toBe(200);
  });

  it('serves a renewed certificate to new connections while an open tunnel keeps flowing', async () => {
    const c2 = await id(2);
    const held = await open(c2, 'open');
    expect(await echo(held, 'before')).toBe('before');
    const old = describeCert(gwTls.cert!).serial;
    Object.assign(gwTls, await id(1));
    gw.reloadTls();
    const served = await new Promise<string>((resolve, reject) => {
      const r = request({ host: '127.0.0.1', port: gw.address.port, path: '/healthz', rejectUnauthorized: false, agent: false }, (res) => {
        resolve((res.socket as unknown as { getPeerCertificate(): { serialNumber: string } }).getPeerCertificate().serialNumber);
        res.resume();
      });
      r.on('error', reject);
      r.end();
    });
    expect(served).not.toBe(old);
    expect(served).toBe(describeCert(gwTls.cert!).serial);
    expect(await echo(held, 'after')).toBe('after');
    held.destroy();
    const fresh = await open(c2, 'open');
    expect(await echo(fresh, 'new')).toBe('new');
    fresh.destroy();
  });

  it("renewals under traffic: tunnels opened while the gateway's certificate is replaced three times all succeed", async () => {
    const c2 = await id(2);
    let ok = 0;
    const failures: string[] = [];
    const end = Date.now() + 1500;
    const worker = async () => {
      while (Date.now() < end) {
        try {
          const s = await open(c2, 'open');
          await echo(s, 'x');
          s.destroy();
          ok++;
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    };
    const rotations = (async () => {
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 350));
        Object.assign(gwTls, await id(1));
        gw.reloadTls();
      }
    })();
    await Promise.all([...Array.from({ length: 4 }, worker), rotations]);
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(10);
  });

  it('a renewal naming another cluster is not taken: the identity in use stays', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ecnet-identity-'));
    const write = (t: TunnelTls) => {
      writeFileSync(join(dir, 'tls.crt'), t.cert!);
      writeFileSync(join(dir, 'tls.key'), t.key!);
      writeFileSync(join(dir, 'ca.crt'), ca.cert);
    };
    try {
      write(await id(1));
      const files = new IdentityFiles(dir, SET, { pollMs: 20 });
      const before = files.tls.cert;
      write(await id(3));
      await new Promise((r) => setTimeout(r, 150));
      expect(files.cluster).toBe(clusterKey(1));
      expect(files.tls.cert).toBe(before);
      const renewed = await id(1);
      write(renewed);
      await new Promise((r) => setTimeout(r, 150));
      expect(files.tls.cert).toBe(renewed.cert);
      files.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('`ecnet identity --identity-dir` shows the cluster, its SPIFFE ID and the expiry; a key that is not the certificate\'s is refused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ecnet-identity-'));
    try {
      writeFileSync(join(dir, 'tls.crt'), gwTls.cert!);
      writeFileSync(join(dir, 'tls.key'), gwTls.key!);
      writeFileSync(join(dir, 'ca.crt'), ca.cert);
      const cli = join(packageRoot, 'dist', 'cli', 'main.js');
      const r = spawnSync(process.execPath, [cli, 'identity', '--identity-dir', dir, '--cluster-set', SET], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/cluster\s+default\/default\/default\/cluster-1/);
      expect(r.stdout).toMatch(/SPIFFE ID\s+spiffe:\/\/test-set\/cluster\/default\/default\/default\/cluster-1/);
      expect(r.stdout).toMatch(/h left/);
      writeFileSync(join(dir, 'tls.key'), ca.key);
      const bad = spawnSync(process.execPath, [cli, 'identity', '--identity-dir', dir, '--cluster-set', SET], { encoding: 'utf8' });
      expect(bad.status).toBe(1);
      expect(bad.stderr).toMatch(/tls.key is not the key of tls.crt \[ECNET_IDENTITY\]/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
