// When a process `ecnet local` started is up: the supervisor when its log says so, a component when the probes
// its manifest declares answer 200, asked from the node as the kubelet does (HTTPS unverified, as the kubelet).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalError } from './errors.js';
import { pidAlive } from './supervisor.js';

/** The supervisor is ready once it says so in its log. */
export async function waitLog(runDir: string, name: string, pid: number, ready: RegExp): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const file = join(runDir, `${name}.log`);
    const log = existsSync(file) ? readFileSync(file, 'utf8') : '';
    if (ready.test(log)) return;
    if (!pidAlive(pid) || Date.now() > deadline) throw new LocalError(`${name} did not start: ${log.trim().split('\n').slice(-3).join(' | ') || 'no output'}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A component serves once the probes its manifest declares (startup, readiness) answer 200, asked from the node as the kubelet does. */
export async function waitProbes(runDir: string, name: string, pid: number, urls: string[], nodeNs: string, since = 0, answeredBy?: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (const url of urls) {
    for (;;) {
      // With `answeredBy`, the answer must say it comes from that process (its "pid"): a predecessor answers on
      // the same port until the hand-over.
      const r = spawnSync('ip', ['netns', 'exec', nodeNs, 'curl', '-sfk', '-m', '1', url], { encoding: 'utf8' });
      if (r.status === 0 && (answeredBy === undefined || answerPid(r.stdout) === answeredBy)) break;
      if (!pidAlive(pid) || Date.now() > deadline) {
        const file = join(runDir, `${name}.log`);
        const log = existsSync(file) ? readFileSync(file, 'utf8').slice(since) : '';
        throw new LocalError(`${name} did not start (probe ${url} failed): ${log.trim().split('\n').slice(-3).join(' | ') || 'no output'}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function answerPid(body: string): number | undefined {
  try {
    return (JSON.parse(body) as { pid?: number }).pid;
  } catch {
    return undefined;
  }
}
