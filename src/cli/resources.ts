// `ecnet apply`, `ecnet get`, `ecnet delete`: resources in a cluster directory (or an API server), the way
// kubectl works on a cluster.
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { stringify } from 'yaml';
import { GROUP, type KindInfo, KINDS } from '../api/flomesh.js';
import { MCS_GROUP, MCS_KINDS, type McsKindInfo } from '../api/mcs.js';
import { readManifests } from '../api/manifests.js';
import { formatProblem } from '../api/schema.js';
import { ConfigError, type SourceFlags, getOutput, sourceConfig } from '../config.js';
import { canonical } from '../controlplane/conditions.js';
import { openSource } from '../sources/open.js';
import { parseLabelSelector } from '../sources/selectors.js';
import { type KindRef, Kinds, type KubeObject, type Source } from '../sources/source.js';
import { table } from './table.js';

const out = (text: string) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);

/** The schema and printer columns of a kind of ecnet's groups (flomesh.io, multicluster.x-k8s.io). */
function infoOf(ref: KindRef): KindInfo | McsKindInfo | undefined {
  if (ref.group === GROUP) return (KINDS as Record<string, KindInfo>)[ref.kind];
  if (ref.group === MCS_GROUP) return (MCS_KINDS as Record<string, McsKindInfo>)[ref.kind];
  return undefined;
}

/**
 * Every name kubectl would take for a kind: kind, singular, plural, short names. `serviceexports` and
 * `serviceimports` are flomesh.io's (as they have always been here); the MCS API's are `svcex`/`svcim` or the
 * names with their group (`serviceexports.multicluster.x-k8s.io`).
 */
const ALIASES = new Map<string, KindRef>();
for (const ref of Object.values(Kinds)) {
  const info = infoOf(ref);
  const names = [ref.kind.toLowerCase(), ref.plural, ...(info ? [info.singular] : [])];
  if (ref.kind === 'Service') names.push('svc');
  if (ref.kind === 'Namespace') names.push('ns');
  if (ref.kind === 'EndpointSlice') names.push('eps');
  if (ref.group !== MCS_GROUP) for (const n of names) if (!ALIASES.has(n)) ALIASES.set(n, ref);
  for (const n of info?.shortNames ?? []) ALIASES.set(n, ref);
  if (ref.group) for (const n of [ref.plural, ref.kind.toLowerCase()]) ALIASES.set(`${n}.${ref.group}`, ref);
}

export function resolveKind(name: string): KindRef {
  const ref = ALIASES.get(name.toLowerCase());
  if (!ref) throw new ConfigError(`unknown resource type ${JSON.stringify(name)}; known: ${[...new Set([...ALIASES.values()].map((k) => k.plural))].join(', ')}`);
  return ref;
}

const refOf = (o: KubeObject): KindRef | undefined =>
  Object.values(Kinds).find((k) => k.kind === o.kind && (k.group ? `${k.group}/${k.version}` : k.version) === o.apiVersion);

const label = (o: KubeObject) => `${o.kind.toLowerCase()}${o.apiVersion.includes('/') ? `.${o.apiVersion.split('/')[0]}` : ''}/${o.metadata.name}`;

interface SourceOptionFlags extends SourceFlags {
  namespace?: string;
}

function withSourceOptions(cmd: Command): Command {
  return cmd
    .option('--cluster <dir>', 'a local cluster directory (or a cluster name under --clusters-dir)')
    .option('--clusters-dir <dir>', 'where local cluster directories are')
    .option('--kubeconfig <file>', 'use a Kubernetes API server instead')
    .option('--context <name>', 'kubeconfig context');
}

async function withSource<T>(flags: SourceFlags, fn: (s: Source) => Promise<T>): Promise<T> {
  const source = await openSource(sourceConfig(flags), { watch: false });
  try {
    return await fn(source);
  } finally {
    await source.close();
  }
}

function age(created: string | undefined, now = Date.now()): string {
  if (!created) return '<unknown>';
  const s = Math.max(0, Math.floor((now - Date.parse(created)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** The JSONPath forms printer columns use: `.a.b`, and `.a[?(@.k=='v')].b`. */
export function jsonPath(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const m of path.matchAll(/\.([A-Za-z0-9_]+)|\[\?\(@\.([A-Za-z0-9_]+)=='([^']*)'\)\]/g)) {
    if (cur === undefined || cur === null) return undefined;
    if (m[1] !== undefined) cur = (cur as Record<string, unknown>)[m[1]];
    else cur = Array.isArray(cur) ? cur.find((e: Record<string, unknown>) => e[m[2]!] === m[3]) : undefined;
  }
  return cur;
}

function render(ref: KindRef, items: KubeObject[], allNamespaces: boolean): string {
  const info = infoOf(ref);
  const ns = allNamespaces && ref.namespaced ? ['NAMESPACE'] : [];
  const nsCell = (o: KubeObject) => (allNamespaces && ref.namespaced ? [o.metadata.namespace ?? ''] : []);
  if (info) {
    const cols = info.columns;
    const cell = (o: KubeObject, c: (typeof cols)[number]) => {
      const v = jsonPath(o, c.jsonPath);
      if (c.type === 'date') return age(v as string | undefined);
      return v === undefined ? '' : Array.isArray(v) ? v.join(',') : String(v);
    };
    return table([...ns, 'NAME', ...cols.map((c) => c.name.toUpperCase())], items.map((o) => [...nsCell(o), o.metadata.name, ...cols.map((c) => cell(o, c))]));
  }
  if (ref.kind === 'Service') {
    const ports = (o: KubeObject) =>
      ((o.spec as { ports?: { port: number; protocol?: string }[] }).ports ?? []).map((p) => `${p.port}/${p.protocol ?? 'TCP'}`).join(',') || '<none>';
    return table(
      [...ns, 'NAME', 'TYPE', 'CLUSTER-IP', 'PORT(S)', 'AGE'],
      items.map((o) => {
        const s = o.spec as { type?: string; clusterIP?: string };
        return [...nsCell(o), o.metadata.name, s.type ?? 'ClusterIP', s.clusterIP ?? '<none>', ports(o), age(o.metadata.creationTimestamp)];
      }),
    );
  }
  return table([...ns, 'NAME', 'AGE'], items.map((o) => [...nsCell(o), o.metadata.name, age(o.metadata.creationTimestamp)]));
}

/** `clustersDir`: where `--cluster NAME` is looked for when --clusters-dir is not given (`ecnet local …`). */
export function applyCommand(clustersDir?: string): Command {
  return withSourceOptions(new Command('apply'))
    .description('create or update the resources of a YAML file (all documents are checked before any is written)')
    .requiredOption('-f, --filename <file>', 'YAML file, - for standard input')
    .option('-n, --namespace <ns>', 'namespace for documents that name none')
    .action(async (flags: SourceOptionFlags & { filename: string }) => {
      const docs = readManifests(readFileSync(flags.filename === '-' ? 0 : flags.filename, 'utf8'));
      const bad = docs.filter((d) => d.problems.length);
      if (bad.length) {
        for (const d of bad) for (const p of d.problems) process.stderr.write(`${d.kind}/${d.name} (line ${d.line}): ${formatProblem(p)}\n`);
        throw new ConfigError(`${bad.length} document(s) invalid; nothing was applied`);
      }
      await withSource({ ...flags, ...(flags.clustersDir || !clustersDir ? {} : { clustersDir }) }, async (source) => {
        for (const d of docs) {
          const obj = structuredClone(d.resource) as unknown as KubeObject;
          if (flags.namespace && !obj.metadata.namespace && !(refOf(obj) && !refOf(obj)!.namespaced)) obj.metadata.namespace = flags.namespace;
          const ref = refOf(obj);
          const before = ref ? await source.get(ref, obj.metadata.name, obj.metadata.namespace) : undefined;
          const after = await source.apply(obj, { manager: 'ecnet-cli' });
          const verb = !before ? 'created' : before.metadata.resourceVersion === after.metadata.resourceVersion || canonical(before.spec) === canonical(after.spec) ? 'unchanged' : 'configured';
          out(`${label(after)} ${verb}`);
        }
      });
    });
}

export function getCommand(clustersDir?: string): Command {
  return withSourceOptions(new Command('get'))
    .description('list resources (clusters, serviceexports/sexp, serviceimports/simp, globaltrafficpolicies/gtp, the MCS API\'s svcex/svcim, services/svc …)')
    .argument('<kind>', 'resource type')
    .argument('[name]', 'one object')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('-A, --all-namespaces', 'every namespace')
    .option('-l, --selector <labels>', 'label selector (a=b,c!=d)')
    .option('-o, --output <format>', 'table, yaml or json', 'table')
    .action(async (kind: string, name: string | undefined, flags: SourceOptionFlags & { allNamespaces?: boolean; selector?: string; output?: string }) => {
      const ref = resolveKind(kind);
      const output = getOutput(flags.output);
      const match = parseLabelSelector(flags.selector);
      const ns = ref.namespaced && !flags.allNamespaces ? flags.namespace : undefined;
      await withSource({ ...flags, ...(flags.clustersDir || !clustersDir ? {} : { clustersDir }) }, async (source) => {
        let items: KubeObject[];
        if (name) {
          const one = await source.get(ref, name, ns);
          if (!one) throw new ConfigError(`${ref.plural} ${JSON.stringify(name)} not found${ns ? ` in namespace ${ns}` : ''}`);
          items = [one];
        } else {
          items = (await source.list(ref, ns)).filter((o) => match(o.metadata.labels));
          items.sort((a, b) => ((a.metadata.namespace ?? '') + a.metadata.name < (b.metadata.namespace ?? '') + b.metadata.name ? -1 : 1));
        }
        const value = name ? items[0] : { apiVersion: 'v1', kind: 'List', items };
        if (output === 'json') return out(JSON.stringify(value, null, 2));
        if (output === 'yaml') return out(stringify(value));
        if (!items.length) return void process.stderr.write(`No resources found${ns ? ` in ${ns} namespace` : ''}.\n`);
        out(render(ref, items, Boolean(flags.allNamespaces)));
      });
    });
}

export function deleteCommand(clustersDir?: string): Command {
  return withSourceOptions(new Command('delete'))
    .description('delete resources by type and name, or those of a YAML file')
    .argument('[kind]', 'resource type')
    .argument('[names...]', 'names')
    .option('-f, --filename <file>', 'YAML file, - for standard input')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .action(async (kind: string | undefined, names: string[], flags: SourceOptionFlags & { filename?: string }) => {
      const targets: { ref: KindRef; name: string; namespace: string | undefined }[] = [];
      if (flags.filename) {
        for (const d of readManifests(readFileSync(flags.filename === '-' ? 0 : flags.filename, 'utf8'))) {
          const o = d.resource as KubeObject | undefined;
          const ref = o && refOf(o);
          if (!o || !ref) continue;
          targets.push({ ref, name: o.metadata.name, namespace: ref.namespaced ? (o.metadata.namespace ?? flags.namespace) : undefined });
        }
      } else {
        if (!kind || !names.length) throw new ConfigError('say what to delete: KIND NAME… or -f FILE');
        const ref = resolveKind(kind);
        for (const name of names) targets.push({ ref, name, namespace: ref.namespaced ? flags.namespace : undefined });
      }
      await withSource({ ...flags, ...(flags.clustersDir || !clustersDir ? {} : { clustersDir }) }, async (source) => {
        for (const t of targets) {
          const gone = await source.delete(t.ref, t.name, t.namespace);
          out(`${t.ref.kind.toLowerCase()}${t.ref.group ? `.${t.ref.group}` : ''}/${t.name} ${gone ? 'deleted' : 'not found'}`);
        }
      });
    });
}
