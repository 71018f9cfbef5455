// The controller's identities against sources held in memory: the CA made once (or the user's taken), each
// member's certificate issued, left alone while current, issued again when due or from another CA; a Secret
// of the same name that ecnet did not make is never replaced; a broken user CA is refused with the reason.
import { describe, expect, it } from 'vitest';
import type { Secret } from '../api/core.js';
import { createCa, describe as describeCert } from '../identity/pki.js';
import { componentLogger } from '../logger.js';
import { Kinds, type KubeObject } from '../sources/source.js';
import { MemorySource } from '../../test/helpers/memory-source.js';
import { CA_SECRET, IDENTITY_SECRET, IdentityIssuer } from './identities.js';

const NS = 'ecnet-system';
const KEY = 'default/default/default/cluster-1' as const;
const HOUR = 3_600_000;
const b64 = (s: string) => Buffer.from(s).toString('base64');
const file = (s: Secret | undefined, k: string) => Buffer.from(s?.data?.[k] ?? '', 'base64').toString('utf8');

function issuer(controlPlane: MemorySource, now: () => number = Date.now) {
  return new IdentityIssuer({ controlPlane, namespace: NS, clusterSet: 'prod', ttlMs: 24 * HOUR, manager: 'test', log: componentLogger('test'), now });
}

describe('the controller issues cluster identities', () => {
  it('makes the CA once, issues a member its certificate, and leaves a current one alone', async () => {
    const cp = new MemorySource();
    const member = new MemorySource();
    const i = issuer(cp);
    expect(await i.ensure(member, KEY)).toBe('issued');
    const ca = await cp.get<Secret>(Kinds.Secret, CA_SECRET, NS);
    const id = await member.get<Secret>(Kinds.Secret, IDENTITY_SECRET, NS);
    expect(file(id, 'ca.crt')).toBe(file(ca, 'tls.crt'));
    expect(describeCert(file(id, 'tls.crt')).uri).toBe('spiffe://prod/cluster/default/default/default/cluster-1');
    expect(id?.metadata.labels?.['app.kubernetes.io/managed-by']).toBe('ecnet-controller');
    expect(await i.ensure(member, KEY)).toBe('current');
    // Another controller (a restart) takes the same CA.
    expect(await issuer(cp).ensure(member, KEY)).toBe('current');
  });

  it('issues again when a third of the lifetime is left, and when the CA changed', async () => {
    const cp = new MemorySource();
    const member = new MemorySource();
    let now = Date.now();
    const i = issuer(cp, () => now);
    await i.ensure(member, KEY);
    const first = file(await member.get<Secret>(Kinds.Secret, IDENTITY_SECRET, NS), 'tls.crt');
    now += 15 * HOUR;
    expect(await i.ensure(member, KEY)).toBe('current');
    now += 2 * HOUR; // 17 h of 24: less than a third left
    expect(await i.ensure(member, KEY)).toBe('issued');
    expect(file(await member.get<Secret>(Kinds.Secret, IDENTITY_SECRET, NS), 'tls.crt')).not.toBe(first);
    // The user replaces the CA: every member is issued again from the new one.
    const mine = await createCa('prod');
    cp.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: CA_SECRET, namespace: NS }, data: { 'tls.crt': b64(mine.cert), 'tls.key': b64(mine.key) } } as unknown as KubeObject);
    expect(await issuer(cp, () => now).ensure(member, KEY)).toBe('issued');
    expect(file(await member.get<Secret>(Kinds.Secret, IDENTITY_SECRET, NS), 'ca.crt')).toBe(mine.cert);
  });

  it('just after issuing, reads the Secret rather than trusting a watch that has not shown the write yet', async () => {
    const cp = new MemorySource();
    const member = new MemorySource();
    let now = Date.now();
    const i = issuer(cp, () => now);
    // The watch still holds nothing (its event of the write has not come): no second certificate.
    const lagging = () => null;
    expect(await i.ensure(member, KEY, lagging)).toBe('issued');
    expect(await i.ensure(member, KEY, lagging)).toBe('current');
    // Later, the watch is trusted again: no request while it holds a current one.
    now += 2 * 60_000;
    const held = await member.get<Secret>(Kinds.Secret, IDENTITY_SECRET, NS);
    const reads = member.get.bind(member);
    let gets = 0;
    member.get = (async (...a: Parameters<MemorySource['get']>) => (gets++, reads(...a))) as MemorySource['get'];
    expect(await i.ensure(member, KEY, () => held ?? null)).toBe('current');
    expect(gets).toBe(0);
  });

  it('never replaces a Secret it did not make, and refuses a CA that is not one', async () => {
    const cp = new MemorySource();
    const member = new MemorySource();
    member.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: IDENTITY_SECRET, namespace: NS }, data: { 'tls.crt': b64('someone else') } } as unknown as KubeObject);
    await expect(issuer(cp).ensure(member, KEY)).rejects.toMatchObject({ code: 'ECNET_SOURCE_CONFLICT' });
    expect(file(await member.get<Secret>(Kinds.Secret, IDENTITY_SECRET, NS), 'tls.crt')).toBe('someone else');
    const broken = new MemorySource();
    broken.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: CA_SECRET, namespace: NS }, data: { 'tls.crt': b64('not a certificate'), 'tls.key': b64('nor a key') } } as unknown as KubeObject);
    await expect(issuer(broken).ensure(new MemorySource(), KEY)).rejects.toMatchObject({ code: 'ECNET_IDENTITY', message: expect.stringMatching(/does not parse/) });
  });
});
