// The controller's part in cluster identities: the cluster set's CA lives in the control-plane cluster (the
// Secret ecnet-ca, kubernetes.io/tls: made at first start, or supplied by the user, e.g. from cert-manager), and
// each member holds its own short-lived certificate in the Secret ecnet-identity of ecnet's namespace, which its
// agents and gateways mount. A member's certificate is issued again when it is missing, not from this CA, names
// another cluster, or has less than a third of its life left: well before expiry, so a renewal never drops a
// tunnel (the old certificate stays valid while the new one reaches every node).
import type { ClusterKey } from '../api/flomesh.js';
import type { Secret } from '../api/core.js';
import { type KeyPair, createCa, describe, issue, loadCa, needsRenewal } from '../identity/pki.js';
import { clusterSpiffeId } from '../identity/spiffe.js';
import { IDENTITY_FILES } from '../identity/files.js';
import type { Logger } from '../logger.js';
import { Kinds, MANAGED_BY, MANAGED_BY_LABEL, type KubeObject, type Source, SourceError } from '../sources/source.js';

export const CA_SECRET = 'ecnet-ca';
export const IDENTITY_SECRET = 'ecnet-identity';

/** The member's identity Secret as a watch holds it: null, none; undefined, not known (read it). */
/** At most this long after issuing, a watch that has not shown the write yet is passed over for a GET. */
const RECENT_ISSUE_MS = 60_000;

export type HeldIdentity = (name: string, namespace: string) => Secret | null | undefined;

export interface IdentityIssuerOptions {
  controlPlane: Source;
  /** ecnet's namespace, in the control-plane cluster (the CA) and in every member (its identity). */
  namespace: string;
  clusterSet: string;
  /** Lifetime of a member's certificate (default 24 h). */
  ttlMs?: number;
  manager: string;
  log: Logger;
  now: () => number;
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined) => (s === undefined ? undefined : Buffer.from(s, 'base64').toString('utf8'));

function tlsSecret(name: string, namespace: string, files: Record<string, string>): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace, labels: { [MANAGED_BY_LABEL]: MANAGED_BY } },
    type: 'kubernetes.io/tls',
    data: Object.fromEntries(Object.entries(files).map(([k, v]) => [k, b64(v)])),
  } as unknown as KubeObject;
}

export class IdentityIssuer {
  readonly #o: IdentityIssuerOptions;
  #ca: Promise<KeyPair> | undefined;
  /** When each member's certificate was last issued (clock ms). */
  /** The Secret each member was last issued, until a watch shows it: its resourceVersion and when. */
  readonly #issued = new Map<ClusterKey, { rv: string | undefined; at: number }>();
  #caAt = 0;

  constructor(options: IdentityIssuerOptions) {
    this.#o = options;
  }

  /**
   * The cluster set's CA: read from the control-plane cluster, made there when absent. Read again after a
   * minute, so a CA the user replaces is taken (and every member issued again from it) without a restart.
   */
  ca(): Promise<KeyPair> {
    if (this.#ca && this.#o.now() - this.#caAt > 60_000) this.#ca = undefined;
    this.#caAt = this.#ca ? this.#caAt : this.#o.now();
    this.#ca ??= this.#loadOrCreateCa().catch((err: unknown) => {
      this.#ca = undefined; // tried again at the next pass
      throw err;
    });
    return this.#ca;
  }

  async #loadOrCreateCa(): Promise<KeyPair> {
    const { controlPlane, namespace, clusterSet, manager } = this.#o;
    const found = await controlPlane.get<Secret>(Kinds.Secret, CA_SECRET, namespace);
    if (found) {
      const ca = { cert: unb64(found.data?.['tls.crt']) ?? '', key: unb64(found.data?.['tls.key']) ?? '' };
      await loadCa(ca); // refuses what is not a usable CA, with the reason
      return ca;
    }
    const ca = await createCa(clusterSet, this.#o.now());
    try {
      await controlPlane.apply(tlsSecret(CA_SECRET, namespace, { 'tls.crt': ca.cert, 'tls.key': ca.key }), { manager, precondition: { absent: true } });
    } catch (err) {
      // Another controller made one first: that one is the CA.
      if (err instanceof SourceError && err.code === 'ECNET_SOURCE_CONFLICT') return this.#loadOrCreateCa();
      throw err;
    }
    this.#o.log.info({ secret: `${namespace}/${CA_SECRET}`, notAfter: describe(ca.cert).notAfter.toISOString() }, 'made the cluster set CA');
    return ca;
  }

  /** One check (and issue, when due) per readable member, as writes of a controller pass. */
  checks(members: { source: Source | undefined; cluster: ClusterKey; held?: HeldIdentity }[]): (() => Promise<void>)[] {
    return members.flatMap(({ source, cluster, held }) => (source ? [async () => void (await this.ensure(source, cluster, held))] : []));
  }

  /**
   * Gives `member` a current identity if it has none; resolves with what was done. `watch` reads the member's
   * Secret from a watch (no request while the identity is current); without it, or while it does not know, the
   * Secret is read with a GET.
   */
  async ensure(member: Source, cluster: ClusterKey, watch?: HeldIdentity): Promise<'current' | 'issued'> {
    const { namespace, clusterSet, manager } = this.#o;
    const ca = await this.ca();
    const id = clusterSpiffeId(clusterSet, cluster);
    // Just issued: the watch may not show that write yet, and would have it issued twice. Read it instead.
    let watched = watch?.(IDENTITY_SECRET, namespace);
    const issued = this.#issued.get(cluster);
    if (issued && watched !== undefined) {
      // Trusted again once it shows that write (its resourceVersion), or a minute after it; until then, read.
      if ((watched !== null && issued.rv !== undefined && watched.metadata.resourceVersion === issued.rv) || this.#o.now() - issued.at >= RECENT_ISSUE_MS) this.#issued.delete(cluster);
      else watched = undefined;
    }
    const held = watched === undefined ? await member.get<Secret>(Kinds.Secret, IDENTITY_SECRET, namespace) : (watched ?? undefined);
    const cert = unb64(held?.data?.[IDENTITY_FILES.cert]);
    const current = held !== undefined && cert !== undefined && unb64(held.data?.[IDENTITY_FILES.ca]) === ca.cert && !needsRenewal(cert, this.#o.now()) && describe(cert).uri === id;
    if (current) return 'current';
    if (held && held.metadata.labels?.[MANAGED_BY_LABEL] !== MANAGED_BY) {
      throw new SourceError('ECNET_SOURCE_CONFLICT', `${namespace}/${IDENTITY_SECRET} in ${cluster} was not made by ecnet: not replaced`);
    }
    const leaf = await issue(ca, id, this.#o.ttlMs ?? 24 * 3_600_000, this.#o.now());
    const written = await member.apply(tlsSecret(IDENTITY_SECRET, namespace, { [IDENTITY_FILES.cert]: leaf.cert, [IDENTITY_FILES.key]: leaf.key, [IDENTITY_FILES.ca]: ca.cert }), {
      manager,
      precondition: held?.metadata.uid ? { uid: held.metadata.uid } : { absent: true },
    });
    if (watch) this.#issued.set(cluster, { rv: written.metadata?.resourceVersion, at: this.#o.now() });
    this.#o.log.info({ cluster, secret: `${namespace}/${IDENTITY_SECRET}`, notAfter: describe(leaf.cert).notAfter.toISOString() }, 'issued the cluster certificate');
    return 'issued';
  }
}
