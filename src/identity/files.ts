// A cluster identity as the agent and the gateway receive it: a directory holding `tls.crt`, `tls.key` and
// `ca.crt` (a mounted Secret of type kubernetes.io/tls, written by the controller). Read at start, checked
// (the key is the certificate's, the CA signed it, it names a cluster of the set), and read again every
// `pollMs`: a renewed certificate replaces the old one in place (Kubernetes swaps a mounted Secret's files
// atomically, which fs.watch does not report reliably, hence polling).
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClusterKey } from '../api/flomesh.js';
import { type Logger, componentLogger } from '../logger.js';
import { IdentityError, describe, renewalOverdue } from './pki.js';
import { clusterOfSpiffeId } from './spiffe.js';

export const IDENTITY_FILES = { cert: 'tls.crt', key: 'tls.key', ca: 'ca.crt' } as const;

/** The PEM contents and the cluster set: what a tunnel's TLS takes (TunnelTls, src/tunnel/protocol.ts). */
export interface IdentityTls {
  cert: string;
  key: string;
  ca: string;
  clusterSet: string;
}

/** The three files' contents, unchecked. */
function readFiles(dir: string): [cert: string, key: string, ca: string] {
  try {
    return [IDENTITY_FILES.cert, IDENTITY_FILES.key, IDENTITY_FILES.ca].map((f) => readFileSync(join(dir, f), 'utf8')) as [string, string, string];
  } catch (cause) {
    throw new IdentityError(`cannot read the cluster identity in ${dir} (${Object.values(IDENTITY_FILES).join(', ')}): ${(cause as Error).message}`, { cause });
  }
}

/** Reads and checks the three files; the cluster the certificate names. */
export function readIdentity(dir: string, clusterSet: string): { tls: IdentityTls; cluster: ClusterKey; notAfter: Date } {
  return checkIdentity(dir, clusterSet, ...readFiles(dir));
}

function checkIdentity(dir: string, clusterSet: string, cert: string, key: string, ca: string): { tls: IdentityTls; cluster: ClusterKey; notAfter: Date } {
  try {
    const x = new X509Certificate(cert);
    if (!x.checkPrivateKey(createPrivateKey(key))) throw new IdentityError(`${IDENTITY_FILES.key} is not the key of ${IDENTITY_FILES.cert}`);
    if (!x.verify(new X509Certificate(ca).publicKey)) throw new IdentityError(`${IDENTITY_FILES.cert} is not signed by ${IDENTITY_FILES.ca}`);
  } catch (cause) {
    if (cause instanceof IdentityError) throw cause;
    throw new IdentityError(`the cluster identity in ${dir} does not parse: ${(cause as Error).message}`, { cause });
  }
  const d = describe(cert);
  const cluster = clusterOfSpiffeId(clusterSet, d.uri ?? '');
  if (!cluster) throw new IdentityError(`${IDENTITY_FILES.cert} names ${d.uri ?? 'no URI'}, not a cluster of the cluster set ${clusterSet}`);
  return { tls: { cert, key, ca, clusterSet }, cluster, notAfter: d.notAfter };
}

export class IdentityFiles {
  /** Updated in place when the files change: hand this object to the proxy and the gateway. */
  readonly tls: IdentityTls;
  readonly cluster: ClusterKey;
  notAfter: Date;
  readonly #timer: NodeJS.Timeout;
  readonly #log: Logger;
  #overdueSaid = false;

  constructor(
    readonly dir: string,
    readonly clusterSet: string,
    options: { pollMs?: number; onChange?: () => void; logger?: Logger } = {},
  ) {
    this.#log = options.logger ?? componentLogger('identity');
    const first = readIdentity(dir, clusterSet);
    this.tls = first.tls;
    this.cluster = first.cluster;
    this.notAfter = first.notAfter;
    this.#timer = setInterval(() => {
      try {
        this.#overdue();
        // Compared as read; checked (key, signature, name) only when something changed.
        const [cert, key, ca] = readFiles(dir);
        if (cert === this.tls.cert && key === this.tls.key && ca === this.tls.ca) return;
        const next = checkIdentity(dir, clusterSet, cert, key, ca);
        // A renewal is of the same cluster: one naming another is not taken (this node did not move).
        if (next.cluster !== this.cluster) throw new IdentityError(`the renewed certificate names ${next.cluster}, not ${this.cluster}`);
        Object.assign(this.tls, next.tls);
        this.notAfter = next.notAfter;
        this.#overdueSaid = false;
        this.#log.info({ cluster: next.cluster, notAfter: next.notAfter.toISOString() }, 'cluster certificate renewed');
        options.onChange?.();
      } catch (err) {
        // A half-written or bad renewal: the certificate in use stays until a good one comes (or it expires).
        this.#log.warn({ err, notAfter: this.notAfter.toISOString() }, 'cluster identity unreadable; keeping the one in use');
      }
    }, options.pollMs ?? 10_000);
    this.#timer.unref();
  }

  /** Said once per certificate: the controller should have renewed it by now. */
  #overdue(): void {
    if (!renewalOverdue(this.tls.cert) || this.#overdueSaid) return;
    this.#overdueSaid = true;
    this.#log.warn({ cluster: this.cluster, notAfter: this.notAfter.toISOString() }, 'the cluster certificate is overdue for renewal: is the controller running, and can it reach this cluster?');
  }

  close(): void {
    clearInterval(this.#timer);
  }
}
