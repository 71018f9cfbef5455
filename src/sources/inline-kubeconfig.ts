// A member's kubeconfig comes from a Cluster resource or a Secret: anyone who can write those must not run
// code in the controller or make it read its own files. Only inline credentials are accepted — a token, a
// client certificate and key, a CA, all as data — and nothing of the text appears in an error (a Secret's
// content would end up in the Cluster's status and the logs). Pure.
import { parse } from 'yaml';
import { SourceError } from './source.js';

/** Fields that run a command or name a file, refused wherever they appear (user or cluster entries). */
const REFUSED: Record<string, string> = {
  exec: 'an exec credential plugin (a command the controller would run)',
  'auth-provider': 'an auth-provider plugin (it may run a command)',
  tokenFile: 'a token file (a path on the controller)',
  'client-certificate': 'a client certificate file (use client-certificate-data)',
  'client-key': 'a client key file (use client-key-data)',
  'certificate-authority': 'a CA file (use certificate-authority-data)',
};

const invalid = (message: string) => new SourceError('ECNET_SOURCE_INVALID', `kubeconfig refused: ${message}`);

/** Throws ECNET_SOURCE_INVALID, saying which entry and field, when the kubeconfig is more than inline data. */
export function checkInlineKubeconfig(text: string): void {
  let doc: unknown;
  try {
    doc = parse(text, { maxAliasCount: 10 });
  } catch (err) {
    // The parser's message quotes the offending line: only its position is passed on.
    const pos = (err as { linePos?: { line: number; col: number }[] }).linePos?.[0];
    throw invalid(`it is not valid YAML${pos ? ` (line ${pos.line}, column ${pos.col})` : ''}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw invalid('it is not a YAML mapping');
  for (const [list, inner] of [
    ['users', 'user'],
    ['clusters', 'cluster'],
  ] as const) {
    const entries = (doc as Record<string, unknown>)[list];
    if (entries === undefined) continue;
    if (!Array.isArray(entries)) throw invalid(`${list} is not a list`);
    for (const [i, e] of entries.entries()) {
      const body = (e as Record<string, unknown> | null)?.[inner];
      if (body === undefined || body === null) continue;
      if (typeof body !== 'object') throw invalid(`${list}[${i}].${inner} is not a mapping`);
      for (const field of Object.keys(body)) {
        if (REFUSED[field]) throw invalid(`${list}[${i}].${inner}.${field}: ${REFUSED[field]} is not accepted; give credentials inline`);
      }
    }
  }
}
