// How the local source lays a cluster directory out and names what is in it: the store key of an object, where
// the server-owned fields of one are kept, which kinds are cluster-scoped, and the atomic write every file gets.
// Shared by the directory store (reads), its writer and the server-owned fields, so each says it once.
import { randomUUID } from 'node:crypto';
import { mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { rfc3339, type Clock } from '../util/time.js';
import type { KindRef, KubeObject } from './source.js';

export const CLUSTER_SCOPED = new Set(['Namespace', 'Cluster', 'Node', 'PersistentVolume', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'StorageClass', 'ClusterPropagationPolicy', 'PriorityClass']);
export const STATE_DIR = '.ecnet';
/** Where what the "server" owns of each object is kept (see server-fields.ts). */
export const SERVER_FIELDS_DIR = join(STATE_DIR, 'status');

export const groupOf = (apiVersion: string): string => (apiVersion.includes('/') ? apiVersion.split('/')[0]! : '');
const storeKey = (group: string, kind: string, ns: string | undefined, name: string) => `${group}|${kind}|${ns ?? ''}|${name}`;
export const keyOfObject = (o: KubeObject) => storeKey(groupOf(o.apiVersion), o.kind, o.metadata.namespace, o.metadata.name);
export const keyOfRef = (k: KindRef, name: string, ns: string | undefined) => storeKey(k.group, k.kind, k.namespaced ? (ns ?? 'default') : undefined, name);
/**
 * A kind as file names say it: `serviceimport`, or with its group for kinds of other groups than the core one
 * and flomesh.io (the names files have always had), so that `serviceimport.multicluster.x-k8s.io` (the MCS API's
 * kind of the same name) never shares a file with flomesh.io's.
 */
export const kindStem = (group: string, kind: string): string => (group === '' || group === 'flomesh.io' ? kind.toLowerCase() : `${kind.toLowerCase()}.${group}`);
/** The file name, in SERVER_FIELDS_DIR, of what the server owns of one object. */
export const serverFieldsFile = (o: Pick<KubeObject, 'apiVersion' | 'kind' | 'metadata'>): string => `${kindStem(groupOf(o.apiVersion), o.kind)}.${o.metadata.namespace ?? '_'}.${o.metadata.name}.yaml`;
export const isYaml = (f: string) => /\.ya?ml$/.test(f);
export const now = (clock: Clock) => rfc3339(clock.now());
export const clone = <T>(v: T): T => structuredClone(v);

/** Writes a file so that readers see the old or the new content, never a part. */
export function writeAtomic(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${randomUUID()}.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** What tells one version of a file from the next (undefined: there is no file). */
export function stampOf(path: string): string | undefined {
  try {
    const s = statSync(path);
    return `${s.mtimeMs}:${s.size}:${s.ino}`;
  } catch {
    return undefined;
  }
}
