// Test-only host fixtures: a privilege gate, throwaway cgroups, network namespaces and pin dirs,
// each removed by its own cleanup, which tests call in afterAll/afterEach so failures clean up too.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { detectCgroup2 } from '../../src/bpf/host.js';
import { setNetns as setns } from '../../src/native/libc.js';
import { packageRoot } from '../../src/paths.js';

export const isRoot = process.geteuid?.() === 0;
const built = existsSync(join(packageRoot, 'build', 'native', 'Release', 'ecnet_native.node'));

/** Why kernel tests cannot run here, or undefined when they can. */
export const kernelSkipReason = !isRoot
  ? 'needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run as root, as CI does'
  : !detectCgroup2()
    ? 'needs a cgroup v2 hierarchy'
    : !built
      ? 'needs the native addon and BPF objects: run npm run build'
      : undefined;

export const suffix = (): string => randomBytes(4).toString('hex');

/** Runs every cleanup, even when one throws; then throws the first error. */
export function cleanupAll(...steps: (() => unknown)[]): void {
  let first: unknown;
  for (const step of steps) {
    try {
      step();
    } catch (err) {
      first ??= err;
    }
  }
  if (first !== undefined) throw first;
}

/** Moves this process into `cgroup` until the returned function moves it back where it was. */
export function joinCgroup(cgroup: string): () => void {
  const line = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))!;
  const original = join(detectCgroup2()!, line.slice(3));
  writeFileSync(join(cgroup, 'cgroup.procs'), String(process.pid));
  return () => writeFileSync(join(original, 'cgroup.procs'), String(process.pid));
}

export interface TestCgroup {
  path: string;
  remove(): void;
}

/** A fresh cgroup under the cgroup v2 root; remove() kills what is left in it and deletes it. */
export function makeCgroup(): TestCgroup {
  const path = join(detectCgroup2()!, `ecnet-test-${suffix()}`);
  mkdirSync(path);
  return {
    path,
    remove() {
      if (!existsSync(path)) return;
      const kill = join(path, 'cgroup.kill');
      if (existsSync(kill)) writeFileSync(kill, '1');
      for (let i = 0; i < 100; i++) {
        try {
          rmdirSync(path);
          return;
        } catch {
          execFileSync('sleep', ['0.05']);
        }
      }
      rmdirSync(path);
    },
  };
}

/** A fresh bpffs pin directory name (not created: the loader creates it). */
export function makePinDir(): { path: string; remove(): void } {
  const path = `/sys/fs/bpf/ecnet-test-${suffix()}`;
  return {
    path,
    remove() {
      if (existsSync(path)) rmSync(path, { recursive: true, force: true });
    },
  };
}

export interface TestNetns {
  name: string;
  /** Moves this thread (and the children it spawns from now on) into the namespace. */
  enter(): void;
  /** Moves this thread back to where it was. */
  leave(): void;
  remove(): void;
}

/**
 * A network namespace with lo up and `localRoutes` routed as local on lo (every address in them is this host's),
 * so that connections which are not redirected still stay on this machine and can be caught by a listener.
 */
export function makeNetns(localRoutes: string[] = []): TestNetns {
  const name = `ecnet-test-${suffix()}`;
  execFileSync('ip', ['netns', 'add', name]);
  const ns = {
    name,
    original: -1,
    enter() {
      if (this.original >= 0) return;
      this.original = openSync('/proc/thread-self/ns/net', 'r');
      const fd = openSync(`/var/run/netns/${name}`, 'r');
      try {
        setns(fd);
      } finally {
        closeSync(fd);
      }
    },
    leave() {
      if (this.original < 0) return;
      setns(this.original);
      closeSync(this.original);
      this.original = -1;
    },
    remove() {
      this.leave();
      try {
        execFileSync('ip', ['netns', 'del', name]);
      } catch {
        // already gone
      }
    },
  };
  try {
    execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    for (const r of localRoutes) execFileSync('ip', ['-n', name, 'route', 'add', 'local', r, 'dev', 'lo']);
  } catch (err) {
    ns.remove();
    throw err;
  }
  return ns;
}

export interface ClientResult {
  target: string;
  /** What getpeername() said once connected. */
  peer?: string;
  reply?: string;
  error?: string;
}

/**
 * Runs test/fixtures/client.mjs as a separate process, inside `cgroup` when given (it moves itself there
 * before its first connect), connecting to every target in parallel. The process inherits this thread's netns.
 */
export function runClient(opts: { cgroup?: string; targets: string[]; mark?: number; timeoutMs?: number }): Promise<ClientResult[]> {
  const fixture = join(packageRoot, 'test', 'fixtures', 'client.mjs');
  const args = [fixture, JSON.stringify({ cgroup: opts.cgroup, targets: opts.targets, mark: opts.mark, timeoutMs: opts.timeoutMs ?? 3000 })];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: packageRoot });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`client exited ${code}: ${err}`));
      else resolve(JSON.parse(out) as ClientResult[]);
    });
  });
}

/** Number of `bpftool cgroup show` lines for a cgroup (one per attached program). */
export function bpftoolCgroupPrograms(cgroup: string): string[] {
  const out = execFileSync('bpftool', ['-j', 'cgroup', 'show', cgroup], { encoding: 'utf8' });
  return (JSON.parse(out.trim() || '[]') as { name: string; attach_type: string }[]).map((p) => `${p.attach_type}:${p.name}`);
}

export function readCgroupProcs(cgroup: string): string {
  return readFileSync(join(cgroup, 'cgroup.procs'), 'utf8');
}
