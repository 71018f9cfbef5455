// Load generator for the datapath benchmark, run as its own process (inside the cgroup or not):
// keeps `concurrency` connections in flight to `target` for `durationMs`, each one a full
// connect → 1 byte → 1 byte back → close, and prints how many completed.
import net from 'node:net';
import { writeFileSync } from 'node:fs';

const { cgroup, target, durationMs, concurrency } = JSON.parse(process.argv[2]);
if (cgroup) writeFileSync(`${cgroup}/cgroup.procs`, String(process.pid));
const i = target.lastIndexOf(':');
const host = target.slice(0, i);
const port = Number(target.slice(i + 1));

let done = 0;
let failed = 0;
const deadline = Date.now() + durationMs;
function loop() {
  if (Date.now() >= deadline) return Promise.resolve();
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.setNoDelay(true);
    s.on('connect', () => s.write('x'));
    s.once('data', () => {
      done++;
      s.destroy();
    });
    s.on('error', () => failed++);
    s.on('close', resolve);
  }).then(loop);
}
await Promise.all(Array.from({ length: concurrency }, loop));
process.stdout.write(JSON.stringify({ done, failed, seconds: durationMs / 1000 }));
