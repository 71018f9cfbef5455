// A member's kubeconfig comes from a Cluster resource or a Secret: anyone who can write those must not run
// code in the controller or make it read its own files. So it is never handed to client-node's loader (which
// honours exec and auth-provider plugins, files and YAML merge keys): it is parsed here, YAML merges and
// aliases resolved, and rebuilt from an allowlist — a token, a client certificate and key, a CA, all as data.
// Any other field is refused by name, and nothing of the text appears in an error (a Secret's content would
// end up in the Cluster's status and the logs). Pure.
import { isRecord } from '../util/objects.js';
import { parse } from 'yaml';
import { SourceError } from './source.js';

const invalid = (message: string) => new SourceError('ECNET_SOURCE_INVALID', `kubeconfig refused: ${message}`);

/** What may appear, per entry kind; everything else is refused. */
const ALLOWED = {
  top: new Set(['apiVersion', 'kind', 'clusters', 'users', 'contexts', 'current-context', 'preferences', 'extensions']),
  cluster: new Set(['server', 'certificate-authority-data', 'insecure-skip-tls-verify', 'tls-server-name', 'extensions']),
  user: new Set(['token', 'client-certificate-data', 'client-key-data', 'username', 'password', 'extensions']),
  context: new Set(['cluster', 'user', 'namespace', 'extensions']),
};

/** Why a refused field is refused, for the ones people will try. */
const WHY: Record<string, string> = {
  exec: 'an exec credential plugin (a command the controller would run)',
  'auth-provider': 'an auth-provider plugin (it may run a command)',
  tokenFile: 'a token file (a path on the controller)',
  'token-file': 'a token file (a path on the controller)',
  'client-certificate': 'a client certificate file (use client-certificate-data)',
  'client-key': 'a client key file (use client-key-data)',
  'certificate-authority': 'a CA file (use certificate-authority-data)',
  'proxy-url': 'a proxy (the controller talks to the API server directly)',
  as: 'impersonation',
};

type Obj = Record<string, unknown>;
const str = (v: unknown, where: string): string | undefined => {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid(`${where} is not a string`);
  return v;
};

function checkFields(o: Obj, allowed: Set<string>, where: string): void {
  for (const field of Object.keys(o)) {
    if (!allowed.has(field)) throw invalid(`${where}.${field}: ${WHY[field] ?? 'not an inline credential field'} is not accepted; give credentials inline`);
  }
}

/** The kubeconfig as client-node's loadFromOptions takes it, built only from allowed fields. */
export interface InlineKubeconfig {
  clusters: { name: string; server: string; caData?: string; skipTLSVerify: boolean; tlsServerName?: string }[];
  users: { name: string; token?: string; certData?: string; keyData?: string; username?: string; password?: string }[];
  contexts: { name: string; cluster: string; user: string; namespace?: string }[];
  currentContext: string;
}

function entries(doc: Obj, list: 'clusters' | 'users' | 'contexts', inner: 'cluster' | 'user' | 'context'): { name: string; body: Obj }[] {
  const v = doc[list];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalid(`${list} is not a list`);
  return v.map((e, i) => {
    if (!isRecord(e)) throw invalid(`${list}[${i}] is not a mapping`);
    checkFields(e, new Set(['name', inner]), `${list}[${i}]`);
    const name = str(e.name, `${list}[${i}].name`);
    if (!name) throw invalid(`${list}[${i}] has no name`);
    const body = e[inner] ?? {};
    if (!isRecord(body)) throw invalid(`${list}[${i}].${inner} is not a mapping`);
    checkFields(body, ALLOWED[inner], `${list}[${i}].${inner}`);
    return { name, body };
  });
}

/** Throws ECNET_SOURCE_INVALID, naming the entry and field, unless the kubeconfig is inline data only. */
export function inlineKubeconfig(text: string): InlineKubeconfig {
  let doc: unknown;
  try {
    // merge: `<<` keys are resolved as YAML 1.1 loaders do, so nothing can hide behind one.
    doc = parse(text, { merge: true, maxAliasCount: 100 });
  } catch (err) {
    // The parser's message quotes the offending line: only its position is passed on.
    const pos = (err as { linePos?: { line: number; col: number }[] }).linePos?.[0];
    throw invalid(`it is not valid YAML${pos ? ` (line ${pos.line}, column ${pos.col})` : ''}`);
  }
  if (!isRecord(doc)) throw invalid('it is not a YAML mapping');
  checkFields(doc, ALLOWED.top, 'kubeconfig');
  const clusters = entries(doc, 'clusters', 'cluster').map(({ name, body: b }, i) => {
    const server = str(b.server, `clusters[${i}].cluster.server`);
    if (!server) throw invalid(`clusters[${i}] has no server`);
    const caData = str(b['certificate-authority-data'], `clusters[${i}].cluster.certificate-authority-data`);
    const tlsServerName = str(b['tls-server-name'], `clusters[${i}].cluster.tls-server-name`);
    return { name, server, skipTLSVerify: b['insecure-skip-tls-verify'] === true, ...(caData ? { caData } : {}), ...(tlsServerName ? { tlsServerName } : {}) };
  });
  const users = entries(doc, 'users', 'user').map(({ name, body: b }, i) => {
    const out: InlineKubeconfig['users'][number] = { name };
    for (const [field, key] of [['token', 'token'], ['client-certificate-data', 'certData'], ['client-key-data', 'keyData'], ['username', 'username'], ['password', 'password']] as const) {
      const v = str(b[field], `users[${i}].user.${field}`);
      if (v !== undefined) out[key] = v;
    }
    return out;
  });
  const contexts = entries(doc, 'contexts', 'context').map(({ name, body: b }, i) => {
    const namespace = str(b.namespace, `contexts[${i}].context.namespace`);
    return { name, cluster: str(b.cluster, `contexts[${i}].context.cluster`) ?? '', user: str(b.user, `contexts[${i}].context.user`) ?? '', ...(namespace ? { namespace } : {}) };
  });
  return { clusters, users, contexts, currentContext: str(doc['current-context'], 'current-context') ?? '' };
}

/** The same check, for callers that only need the verdict. */
export function checkInlineKubeconfig(text: string): void {
  inlineKubeconfig(text);
}
