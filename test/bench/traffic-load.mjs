// Load generator for the traffic benchmark, run as its own process (in the client cgroup, or not for the
// direct baseline). Modes:
//   bulk: one connection sends `bytes` as fast as it can, half-closes, waits for the server's count → MB/s
//   rr:   one connection, `count` sequential 64-byte request/responses → latency percentiles (µs)
//   cps:  `concurrency` loops of connect → 1 byte → 1 byte back → close for `durationMs` → connections/s
//   hold: opens `count` connections, each sends 1 byte and waits for 1 back, then holds them until stdin closes
import net from 'node:net';
import { writeFileSync } from 'node:fs';

const o = JSON.parse(process.argv[2]);
if (o.cgroup) writeFileSync(`${o.cgroup}/cgroup.procs`, String(process.pid));
const i = o.target.lastIndexOf(':');
const host = o.target.slice(0, i);
const port = Number(o.target.slice(i + 1));
const out = (v) => process.stdout.write(`${JSON.stringify(v)}\n`);
const now = () => Number(process.hrtime.bigint()) / 1e3;

async function bulk() {
  const chunk = Buffer.alloc(256 * 1024, 7);
  const s = net.connect({ host, port });
  await new Promise((r) => s.once('connect', r));
  const t0 = now();
  let sent = 0;
  let reply = '';
  s.on('data', (d) => (reply += d));
  const done = new Promise((r) => s.on('end', r));
  while (sent < o.bytes) {
    sent += chunk.length;
    if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await done;
  const seconds = (now() - t0) / 1e6;
  if (Number(reply) !== sent) throw new Error(`server counted ${reply}, sent ${sent}`);
  out({ mbps: sent / 1e6 / seconds });
}

async function rr() {
  const s = net.connect({ host, port });
  s.setNoDelay(true);
  await new Promise((r) => s.once('connect', r));
  const msg = Buffer.alloc(64, 1);
  const lat = [];
  let pending;
  let got = 0;
  s.on('data', (d) => {
    got += d.length;
    if (got >= 64) {
      got -= 64;
      pending();
    }
  });
  for (let k = 0; k < o.count; k++) {
    const t = now();
    await new Promise((r) => {
      pending = r;
      s.write(msg);
    });
    lat.push(now() - t);
  }
  s.destroy();
  lat.sort((a, b) => a - b);
  const p = (q) => lat[Math.min(lat.length - 1, Math.ceil(q * lat.length) - 1)];
  out({ p50: p(0.5), p99: p(0.99) });
}

async function cps() {
  let done = 0;
  let failed = 0;
  const deadline = Date.now() + o.durationMs;
  const loop = () => {
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
  };
  await Promise.all(Array.from({ length: o.concurrency }, loop));
  out({ cps: done / (o.durationMs / 1000), failed });
}

async function hold() {
  const socks = [];
  let failed = 0;
  for (let k = 0; k < o.count; k += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, o.count - k) }, () =>
        new Promise((resolve) => {
          const s = net.connect({ host, port });
          s.on('connect', () => s.write('x'));
          s.once('data', () => resolve());
          s.on('error', () => {
            failed++;
            resolve();
          });
          socks.push(s);
        }),
      ),
    );
  }
  out({ open: socks.length - failed, failed });
  process.stdin.resume();
  await new Promise((r) => process.stdin.on('end', r));
  for (const s of socks) s.destroy();
}

await { bulk, rr, cps, hold }[o.mode]();
