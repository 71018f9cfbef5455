// The cluster set's certificate authority and the certificates it issues: ECDSA P-256, a CA certificate that
// may sign leaves only, and per member one leaf naming the cluster by its SPIFFE ID (client and server use),
// short-lived and renewed well before expiry by the controller. @peculiar/x509 builds the certificates (Node's
// crypto parses X.509 but cannot make it); keys are WebCrypto keys exported as PKCS#8 PEM for node:tls.
// @peculiar/x509 resolves its parsers through tsyringe, which needs the Reflect metadata API loaded first. Both
// are loaded on first use: only the controller issues, and an agent starting after a crash must not wait for
// them (they were a third of its start-up).
import { X509Certificate as NodeX509, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import type * as X509 from '@peculiar/x509';
import { EcnetError } from '../errors.js';

let x509lib: typeof X509 | undefined;
async function x509Lib(): Promise<typeof X509> {
  if (!x509lib) {
    await import('reflect-metadata');
    const lib = await import('@peculiar/x509');
    lib.cryptoProvider.set(webcrypto as unknown as Crypto);
    x509lib = lib;
  }
  return x509lib;
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export class IdentityError extends EcnetError<'ECNET_IDENTITY'> {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ECNET_IDENTITY', message, options);
  }
}

/** A certificate and its key, PEM. */
export interface KeyPair {
  cert: string;
  key: string;
}

const pem = (label: string, der: ArrayBuffer): string =>
  `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
const serial = () => randomBytes(16).toString('hex').replace(/^[89a-f]/, '1');

async function keys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** A new CA for the cluster set, valid `days`. */
export async function createCa(clusterSet: string, now = Date.now(), days = 3650): Promise<KeyPair> {
  const x509 = await x509Lib();
  const k = await keys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=ecnet ${clusterSet} CA, O=ecnet`,
    notBefore: new Date(now - 5 * 60_000), // clocks of the nodes may be a few minutes behind the controller's
    notAfter: new Date(now + days * 86_400_000),
    signingAlgorithm: ALG,
    keys: k,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(k.publicKey),
    ],
  });
  return { cert: cert.toString('pem'), key: pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', k.privateKey)) };
}

/** Reads a CA given as PEM; refuses one that is not a CA or whose key does not match. */
export async function loadCa(ca: KeyPair): Promise<{ cert: X509.X509Certificate; signingKey: CryptoKey }> {
  const x509 = await x509Lib();
  let cert: X509.X509Certificate;
  let signingKey: CryptoKey;
  try {
    cert = new x509.X509Certificate(ca.cert);
    const der = createPrivateKey(ca.key).export({ format: 'der', type: 'pkcs8' });
    signingKey = await webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  } catch (cause) {
    throw new IdentityError('the CA certificate or key does not parse (an ECDSA P-256 key in PKCS#8 or SEC1 PEM is expected)', { cause });
  }
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) throw new IdentityError('the CA certificate is not a CA (basicConstraints CA:TRUE)');
  if (!new NodeX509(ca.cert).checkPrivateKey(createPrivateKey(ca.key))) throw new IdentityError('the CA key does not belong to the CA certificate');
  return { cert, signingKey };
}

/** A leaf for `spiffeId`, valid from now for `ttlMs`, signed by `ca`; usable as TLS client and server. */
export async function issue(ca: KeyPair, spiffeId: string, ttlMs: number, now = Date.now()): Promise<KeyPair> {
  const x509 = await x509Lib();
  const { cert: caCert, signingKey } = await loadCa(ca);
  const k = await keys();
  const notAfter = Math.min(now + ttlMs, caCert.notAfter.getTime());
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${spiffeId.split('/').pop()}, O=ecnet`,
    issuer: caCert.subject,
    notBefore: new Date(now - 5 * 60_000), // clocks of the nodes may be a few minutes behind the controller's
    notAfter: new Date(notAfter),
    signingAlgorithm: ALG,
    publicKey: k.publicKey,
    signingKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  return { cert: cert.toString('pem'), key: pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', k.privateKey)) };
}

/** What a certificate says of itself: its URI SAN and validity. */
export function describe(certPem: string): { uri: string | undefined; notBefore: Date; notAfter: Date; issuer: string; serial: string } {
  const c = new NodeX509(certPem);
  const uris = (c.subjectAltName ?? '').split(', ').filter((s) => s.startsWith('URI:'));
  return { uri: uris.length === 1 ? uris[0]!.slice(4) : undefined, notBefore: new Date(c.validFrom), notAfter: new Date(c.validTo), issuer: c.issuer, serial: c.serialNumber };
}

/** Whether a certificate should be renewed: less than a third of its lifetime left (or unreadable). */
export function needsRenewal(certPem: string | undefined, now = Date.now()): boolean {
  return lifeLeft(certPem, now) < 1 / 3;
}

/** Whether its renewal is overdue: less than a quarter of its lifetime left (2 h past the renewal of a 24 h one). */
export function renewalOverdue(certPem: string | undefined, now = Date.now()): boolean {
  return lifeLeft(certPem, now) < 1 / 4;
}

/** The fraction of its lifetime a certificate has left (0 when unreadable). */
function lifeLeft(certPem: string | undefined, now: number): number {
  if (!certPem) return 0;
  try {
    const d = describe(certPem);
    return (d.notAfter.getTime() - now) / (d.notAfter.getTime() - d.notBefore.getTime());
  } catch {
    return 0;
  }
}
