// The cluster set's PKI with real TLS handshakes on loopback: a leaf the CA issued is accepted both ways and
// names its cluster; a leaf of another CA, or an expired one, is refused.
import { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { clusterOfSpiffeId, clusterSpiffeId, uriSan } from './spiffe.js';
import { createCa, describe as describeCert, issue, loadCa, needsRenewal, renewalOverdue } from './pki.js';

async function handshake(server: { cert: string; key: string; ca: string }, client: { cert: string; key: string; ca: string }): Promise<{ ok: boolean; serverSaw?: string; clientSaw?: string; error?: string }> {
  let serverSaw: string | undefined;
  const srv = tls.createServer({ cert: server.cert, key: server.key, ca: server.ca, requestCert: true, rejectUnauthorized: true }, (s) => {
    serverSaw = uriSan(s.getPeerCertificate().subjectaltname);
    s.end('ok');
  });
  srv.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    return await new Promise((resolve) => {
      const c = tls.connect({ host: '127.0.0.1', port: (srv.address() as AddressInfo).port, cert: client.cert, key: client.key, ca: client.ca, checkServerIdentity: () => undefined });
      c.on('secureConnect', () => {
        const clientSaw = uriSan(c.getPeerCertificate().subjectaltname);
        c.once('data', () => resolve({ ok: true, serverSaw, clientSaw }));
      });
      c.on('error', (e) => resolve({ ok: false, error: e.message }));
      c.on('close', () => resolve({ ok: false, error: 'closed' }));
    });
  } finally {
    srv.close();
  }
}

describe('cluster set PKI', () => {
  it('issues per-cluster leaves that authenticate both ends of a TLS connection and name their cluster', async () => {
    const ca = await createCa('prod');
    const c1 = await issue(ca, clusterSpiffeId('prod', 'default/default/default/cluster-1'), 3_600_000);
    const c3 = await issue(ca, clusterSpiffeId('prod', 'default/default/default/cluster-3'), 3_600_000);
    const r = await handshake({ ...c3, ca: ca.cert }, { ...c1, ca: ca.cert });
    expect(r).toMatchObject({ ok: true });
    expect(clusterOfSpiffeId('prod', r.serverSaw!)).toBe('default/default/default/cluster-1');
    expect(clusterOfSpiffeId('prod', r.clientSaw!)).toBe('default/default/default/cluster-3');
    expect(describeCert(c1.cert).uri).toBe('spiffe://prod/cluster/default/default/default/cluster-1');
  });

  it('refuses a leaf of another CA, an expired leaf, and a CA whose key is not its own', async () => {
    const ca = await createCa('prod');
    const other = await createCa('prod');
    const good = await issue(ca, clusterSpiffeId('prod', 'default/default/default/cluster-1'), 3_600_000);
    const foreign = await issue(other, clusterSpiffeId('prod', 'default/default/default/cluster-2'), 3_600_000);
    expect((await handshake({ ...good, ca: ca.cert }, { ...foreign, ca: ca.cert })).ok).toBe(false);
    const expired = await issue(ca, clusterSpiffeId('prod', 'default/default/default/cluster-2'), 60_000, Date.now() - 3_600_000);
    expect((await handshake({ ...good, ca: ca.cert }, { ...expired, ca: ca.cert })).ok).toBe(false);
    await expect(loadCa({ cert: ca.cert, key: other.key })).rejects.toMatchObject({ code: 'ECNET_IDENTITY' });
    await expect(loadCa({ cert: good.cert, key: good.key })).rejects.toThrow(/not a CA/);
  });

  it('says when a certificate is due: with less than a third of its life left', async () => {
    const ca = await createCa('prod');
    const now = Date.now();
    const leaf = await issue(ca, clusterSpiffeId('prod', 'default/default/default/cluster-1'), 3 * 3_600_000, now);
    expect(needsRenewal(leaf.cert, now)).toBe(false);
    expect(needsRenewal(leaf.cert, now + 2.1 * 3_600_000)).toBe(true);
    expect(needsRenewal(undefined)).toBe(true);
    expect(needsRenewal('garbage')).toBe(true);
    // Overdue (said in logs and /healthz) only once a quarter is left: not while the renewal is on its way.
    expect(renewalOverdue(leaf.cert, now + 2.1 * 3_600_000)).toBe(false);
    expect(renewalOverdue(leaf.cert, now + 2.3 * 3_600_000)).toBe(true);
  });

  it('SPIFFE IDs name a cluster of this set only, and one URI only', () => {
    expect(clusterOfSpiffeId('prod', 'spiffe://dev/cluster/a/b/c/d')).toBeUndefined();
    expect(clusterOfSpiffeId('prod', 'spiffe://prod/cluster/a/b/c')).toBeUndefined();
    expect(clusterOfSpiffeId('prod', 'spiffe://prod/cluster/a/b/../d')).toBeUndefined();
    expect(uriSan('URI:spiffe://prod/cluster/a/b/c/d, URI:spiffe://prod/cluster/e/f/g/h')).toBeUndefined();
    expect(() => clusterSpiffeId('prod', 'a/b/c' as never)).toThrow(RangeError);
  });
});
