// What the kubelet does for a pod's Secret volumes, for `ecnet local`: each Secret a workload of daemonset/
// mounts is written as files into a directory of that workload's own (the process plan points the mount path
// there), owned by the pod's fsGroup with the volume's mode, and written again when the Secret changes. A new
// version replaces the old in one rename of a symlink, as the kubelet swaps its ..data link.
import { chmodSync, chownSync, existsSync, mkdirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Secret } from '../api/core.js';
import { readWorkload, type Component } from '../kubelet/workload.js';
import { type Logger, componentLogger } from '../logger.js';
import type { LocalSource } from '../sources/local.js';
import { Kinds } from '../sources/source.js';

/** Where `component`'s volume of Secret `secretName` is projected for `member`. */
export const secretVolumeDir = (stateDir: string, member: string, component: string, secretName: string): string =>
  join(stateDir, 'volumes', member, component, secretName);

interface Mount {
  component: Component;
  secretName: string;
  namespace: string;
  mode: number;
  gid: number;
}

/** The Secret volumes of ecnet's workloads, as daemonset/ declares them. */
export function secretVolumesOf(components: Component[]): Mount[] {
  return components.flatMap((component) => {
    const w = readWorkload(component);
    const gid = w.pod.securityContext?.fsGroup ?? 0;
    return (w.pod.volumes ?? []).flatMap((v) => (v.secret ? [{ component, secretName: v.secret.secretName, namespace: w.namespace, mode: v.secret.defaultMode ?? 0o644, gid }] : []));
  });
}

/** Writes `data` (base64 values) as the files of `dir`, replacing what was there in one rename. */
export function project(dir: string, data: Record<string, string>, mode: number, gid: number): void {
  mkdirSync(dirname(dir), { recursive: true });
  const version = `${dir}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  mkdirSync(version, { mode: 0o750 });
  chownSync(version, 0, gid);
  for (const [k, v] of Object.entries(data)) {
    if (!/^[-._a-zA-Z0-9]+$/.test(k) || k === '.' || k === '..') continue; // a key is a file name, never a path
    const f = join(version, k);
    writeFileSync(f, Buffer.from(v, 'base64'), { mode });
    chownSync(f, 0, gid);
    chmodSync(f, mode);
  }
  const old = existsSync(dir) ? readlinkSync(dir) : undefined;
  const link = `${dir}.tmp`;
  rmSync(link, { force: true });
  symlinkSync(basename(version), link);
  renameSync(link, dir);
  if (old) rmSync(join(dirname(dir), old), { recursive: true, force: true });
}

/** Keeps one member's Secret volumes projected while it runs. */
export class SecretVolumes {
  readonly #log: Logger = componentLogger('local');
  readonly #written = new Map<string, string>();

  constructor(src: LocalSource, readonly stateDir: string, readonly member: string, mounts: Mount[]) {
    const sync = (s: Secret) => {
      for (const m of mounts) {
        if (m.secretName !== s.metadata.name || m.namespace !== s.metadata.namespace) continue;
        const dir = secretVolumeDir(stateDir, member, m.component, m.secretName);
        const content = JSON.stringify(s.data ?? {});
        if (this.#written.get(dir) === content) continue;
        try {
          project(dir, s.data ?? {}, m.mode, m.gid);
          this.#written.set(dir, content);
        } catch (err) {
          this.#log.warn({ err, member, secret: `${m.namespace}/${m.secretName}` }, 'could not project a Secret volume');
        }
      }
    };
    src.informer<Secret & { apiVersion: string }>(Kinds.Secret, { onEvent: (e) => e.type !== 'deleted' && sync(e.object) });
  }
}
