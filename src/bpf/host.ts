// What the host must offer before programs can load: root, cgroup v2, bpffs, a recent kernel.
// Each missing piece is a DatapathError with a code and a hint, never a libbpf stack trace.
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import { DatapathError } from './errors.js';
import { mountBpffs } from '../native/libc.js';

/** Oldest kernel with everything the programs use (cgroup bpf_link, sock_release cookies, batch ops). */
export const MIN_KERNEL: readonly [number, number] = [5, 10];

interface Mount {
  point: string;
  fstype: string;
}

function mounts(): Mount[] {
  // mountinfo: "id parent maj:min root point opts ... - fstype source superopts"
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const f = line.split(' ');
      const dash = f.indexOf('-');
      return { point: f[4]!.replace(/\\040/g, ' '), fstype: f[dash + 1] ?? '' };
    });
}

/** The cgroup v2 mount point (e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified), or undefined. */
export function detectCgroup2(): string | undefined {
  const all = mounts().filter((m) => m.fstype === 'cgroup2');
  // The shortest path is the root of the hierarchy when it is mounted more than once.
  return all.map((m) => m.point).sort((a, b) => a.length - b.length)[0];
}

/** Whether `dir` is on a bpf filesystem (mounted there or below one). */
export function onBpffs(dir: string): boolean {
  const bpf = mounts().filter((m) => m.fstype === 'bpf').map((m) => m.point);
  return bpf.some((p) => dir === p || dir.startsWith(p.endsWith('/') ? p : `${p}/`));
}

export function checkRoot(): void {
  if (process.geteuid?.() !== 0) {
    throw new DatapathError('ECNET_NOT_ROOT', 'loading and reading BPF maps needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)');
  }
}

export function checkKernel(version = release()): void {
  const m = /^(\d+)\.(\d+)/.exec(version);
  const [maj, min] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
  if (maj < MIN_KERNEL[0] || (maj === MIN_KERNEL[0] && min < MIN_KERNEL[1])) {
    throw new DatapathError(
      'ECNET_KERNEL_TOO_OLD',
      `kernel ${version} is too old: ecnet needs Linux ${MIN_KERNEL.join('.')} or newer (cgroup bpf_link, sock_release, map batch operations)`,
    );
  }
}

/**
 * Checks that `path` is a directory of a cgroup v2 mount. Any of them: in the agent's container the shortest
 * is the container's own /sys/fs/cgroup (its cgroup namespace's view), and the host's root is mounted at
 * /host/sys/fs/cgroup, which is where the DaemonSet attaches.
 */
export function checkCgroup(path: string, points: string[] = mounts().filter((m) => m.fstype === 'cgroup2').map((m) => m.point)): void {
  if (!points.length) {
    throw new DatapathError('ECNET_NO_CGROUP2', 'no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)');
  }
  if (!points.some((p) => path === p || path.startsWith(p.endsWith('/') ? p : `${p}/`))) {
    throw new DatapathError('ECNET_NO_CGROUP2', `${path} is not in the cgroup v2 hierarchy (mounted at ${points.join(', ')})`);
  }
  if (!existsSync(path) || !statSync(path).isDirectory()) {
    throw new DatapathError('ECNET_NO_CGROUP2', `cgroup ${path} does not exist`);
  }
}

/** Makes sure `dir` is on bpffs: mounts bpffs at /sys/fs/bpf when nothing is mounted there. */
export function ensureBpffs(dir: string, mountPoint = '/sys/fs/bpf'): void {
  if (!onBpffs(dir)) {
    if (!dir.startsWith(`${mountPoint}/`) && dir !== mountPoint) {
      throw new DatapathError('ECNET_NO_BPFFS', `${dir} is not on a bpf filesystem (mount -t bpf bpf ${dirname(dir)})`);
    }
    try {
      mkdirSync(mountPoint, { recursive: true });
      mountBpffs(mountPoint);
    } catch (cause) {
      throw new DatapathError('ECNET_NO_BPFFS', `no bpf filesystem at ${mountPoint} and mounting one failed`, { cause });
    }
  }
}

/** The cgroup's id as bpf_link_info reports it: the inode number of its directory. */
export function cgroupId(path: string): number {
  return Number(statSync(path).ino);
}

/** Finds the cgroup directory with this id under the cgroup v2 mount (breadth-first, bounded), for display. */
export function cgroupPathById(id: number, limit = 20000): string | undefined {
  const root = detectCgroup2();
  if (!root || id === 0) return undefined;
  const queue = [root];
  for (let seen = 0; queue.length && seen < limit; seen++) {
    const dir = queue.shift()!;
    try {
      if (Number(statSync(dir).ino) === id) return dir;
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) queue.push(join(dir, e.name));
    } catch {
      // A cgroup removed while we walk is simply not the one.
    }
  }
  return undefined;
}
