// daemonset/coredns's rewrite, as test code applies it to names: the Corefile's two rules (the question's name
// and the answer's), their RE2 regular expressions read as JavaScript ones (these are valid in both).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { packageRoot } from '../../src/paths.js';

export type CoreDnsConfigMap = { kind: string; metadata: { name: string; namespace: string }; data: Record<string, string> };
export const readCoreDns = (f: string) => parse(readFileSync(join(packageRoot, 'daemonset', 'coredns', f), 'utf8')) as CoreDnsConfigMap;

/** The rewrite block's two rules: [regex, replacement] for the question and for the answer. */
export function rewriteRules(text: string): { name: [RegExp, string]; answer: [RegExp, string] } {
  const name = /^\s*name regex (\S+) (\S+)\s*$/m.exec(text);
  const answer = /^\s*answer name (\S+) (\S+)\s*$/m.exec(text);
  if (!name || !answer) throw new Error('no rewrite rules');
  // RE2's ${1} and {1} (CoreDNS's replacement syntax) as JavaScript's $1.
  return { name: [new RegExp(name[1]!), name[2]!.replace(/\{(\d)\}/g, '$$$1')], answer: [new RegExp(answer[1]!), answer[2]!.replace(/\{(\d)\}/g, '$$$1')] };
}
export const applyRule = ([re, to]: [RegExp, string], qname: string) => (re.test(qname) ? qname.replace(re, to) : qname);
