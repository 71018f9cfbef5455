// The gateway survives any input: a real `ecnet gateway` process, driven by fast-check with random and malformed
// CONNECT and plain-HTTP requests (request lines, headers, paths into rules with hostile rewrites, raw bytes),
// in front of hostile backends (any status line, bad headers, bodies cut short, resets, silence, garbage).
// After every case the process still runs and answers /healthz; every request got a status line or a reset;
// at the end it holds no more descriptors than when it started. CI runs a bounded count; ECNET_FUZZ_RUNS=N runs
// a long one. Root only (the backends sit on a local, non-loopback address in a namespace of the test's own).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { packageRoot } from '../src/paths.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { type TestNetns, cleanupAll, makeNetns } from './helpers/host.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');
const RUNS = Number(process.env.ECNET_FUZZ_RUNS ?? 150);
const BACKEND_IP = '10.250.0.30';
const GW = { host: '10.250.0.31', port: 18090 };

/** What a backend does with the next connection it gets. */
type Behaviour =
  | { kind: 'answer'; status: string; reason: string; headers: [string, string][]; body: string; cut: boolean }
  | { kind: 'reset' }
  | { kind: 'close' }
  | { kind: 'silent' }
  | { kind: 'garbage'; bytes: Uint8Array };

const token = fc.stringMatching(/^[!-~]{0,20}$/);
const anyText = fc.string({ maxLength: 40, unit: 'binary' });
const behaviour: fc.Arbitrary<Behaviour> = fc.oneof(
  fc.record({
    kind: fc.constant('answer' as const),
    status: fc.oneof(fc.integer({ min: 0, max: 999 }).map((n) => String(n).padStart(3, '0')), fc.constantFrom('200', '204', '301', '500'), token),
    reason: fc.oneof(fc.constant('OK'), anyText),
    headers: fc.array(fc.tuple(fc.oneof(token, anyText), fc.oneof(token, anyText)), { maxLength: 4 }),
    body: anyText,
    cut: fc.boolean(),
  }),
  fc.constant({ kind: 'reset' as const }),
  fc.constant({ kind: 'close' as const }),
  fc.constant({ kind: 'silent' as const }),
  fc.record({ kind: fc.constant('garbage' as const), bytes: fc.uint8Array({ maxLength: 200 }) }),
);

const paths = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^\/web(\/[!-~]{0,20})?$/) },
  fc.constantFrom('/web', '/web/x', '/space/x', '/wide/x', '/dots/../etc', '/api', '/api/%2e%2e/x', '/', '/healthz?x', '//', '/web?a=%ff'),
  fc.tuple(fc.constantFrom('/web/', '/space/', '/api/'), fc.stringMatching(/^[!-~]{0,30}$/)).map(([a, b]) => a + b),
);
// Mostly well-formed heads (so that requests reach the rules and the backend), now and then anything.
const headerName = fc.oneof({ weight: 5, arbitrary: fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/) }, { weight: 1, arbitrary: anyText });
const headerValue = fc.oneof({ weight: 5, arbitrary: fc.stringMatching(/^[ -~]{0,30}$/) }, { weight: 1, arbitrary: anyText });
const headerLines = fc.array(fc.tuple(headerName, headerValue), { maxLength: 5 }).map((hs) => hs.map(([k, v]) => `${k}: ${v}\r\n`).join(''));
/** A request as bytes: CONNECT, plain HTTP, or anything at all. */
const request = fc.oneof(
  fc
    .tuple(
      fc.oneof({ weight: 4, arbitrary: fc.constant('web.shop') }, fc.constantFrom('space.shop', 'nothing.shop', 'web.other', '', 'x')),
      fc.oneof({ weight: 4, arbitrary: fc.constant(80) }, fc.constantFrom(81, 0, 65535), fc.integer({ min: -5, max: 70000 })),
      headerLines,
    )
    .map(([svc, port, hs]) => Buffer.from(`CONNECT ${svc}.svc.clusterset.local:${port} HTTP/1.1\r\nhost: ${svc}:${port}\r\n${hs}\r\n`, 'latin1')),
  fc
    .tuple(fc.oneof({ weight: 6, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'OPTIONS') }, { weight: 1, arbitrary: fc.constantFrom('G\u00e9T', '', 'CONNECT') }), paths, headerLines, anyText)
    .map(([m, p, hs, body]) => Buffer.from(`${m} ${p} HTTP/1.1\r\nhost: gw\r\ncontent-length: ${Buffer.byteLength(body, 'latin1')}\r\n${hs}\r\n${body}`, 'latin1')),
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
);

describeKernel('gateway fuzzing (a real process; fast-check)', () => {
  let ns: TestNetns | undefined;
  let dir = '';
  let gw: ChildProcess | undefined;
  let backendServer: Server | undefined;
  let next: Behaviour = { kind: 'close' };
  const backendSockets = new Set<Socket>();
  let log = '';
  let reachedBackend = 0;

  beforeAll(async () => {
    ns = makeNetns(['10.250.0.0/24']);
    ns.enter();
    dir = mkdtempSync(join(tmpdir(), 'ecnet-fuzz-'));
    // One backend behind every service: it does what the current case says.
    backendServer = createServer((c) => {
      reachedBackend++;
      backendSockets.add(c);
      c.on('close', () => backendSockets.delete(c));
      c.on('error', () => undefined);
      const b = next;
      c.once('data', () => {
        if (b.kind === 'reset') c.resetAndDestroy();
        else if (b.kind === 'close') c.end();
        else if (b.kind === 'garbage') c.end(Buffer.from(b.bytes));
        else if (b.kind === 'answer') {
          const head = `HTTP/1.1 ${b.status} ${b.reason}\r\n${b.headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}content-length: ${b.body.length + (b.cut ? 10 : 0)}\r\n\r\n`;
          c.write(Buffer.from(head + b.body, 'latin1'), () => (b.cut ? c.resetAndDestroy() : c.end()));
        }
        // silent: says nothing; the gateway's limits end it
      });
    });
    await new Promise<void>((r) => backendServer!.listen(8080, BACKEND_IP, r));
    const svc = (name: string, rewrite?: string) => `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: shop}
spec: {clusterIP: 10.96.7.${name.length}, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}-1, namespace: shop, labels: {kubernetes.io/service-name: ${name}}}
addressType: IPv4
endpoints: [{addresses: [${BACKEND_IP}], conditions: {ready: true}}]
ports: [{name: http, port: 8080, protocol: TCP}]
---
apiVersion: flomesh.io/v1alpha1
kind: ServiceExport
metadata: {name: ${name}, namespace: shop}
spec:
  rules: [{portNumber: 80, path: /${name}, pathType: Prefix}]
${rewrite !== undefined ? `  pathRewrite: {from: /${name}, to: ${JSON.stringify(rewrite)}}\n` : ''}`;
    writeFileSync(join(dir, 'shop.yaml'), [svc('web'), svc('space', '/a b'), svc('wide', '/\u0100'), svc('dots', '/../..'), svc('api', '')].join('---\n'));
    gw = spawn(process.execPath, [cli, 'gateway', '--cluster', dir, '--listen', `${GW.host}:${GW.port}`, '--plain-tunnels'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ECNET_LOG_LEVEL: 'error' } });
    gw.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
    const end = Date.now() + 15_000;
    while (!(await healthy())) {
      if (Date.now() > end || gw.exitCode !== null) throw new Error(`the gateway did not start: ${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  afterAll(() => {
    gw?.kill('SIGKILL');
    for (const s of backendSockets) s.destroy();
    backendServer?.close();
    cleanupAll(
      () => ns?.remove(),
      () => dir && rmSync(dir, { recursive: true, force: true }),
    );
  });

  const healthy = () =>
    new Promise<boolean>((resolve) => {
      const c = connect(GW.port, GW.host, () => c.write('GET /healthz HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n'));
      let out = '';
      c.on('data', (d) => (out += d.toString()));
      c.on('close', () => resolve(/^HTTP\/1\.1 200/.test(out)));
      c.on('error', () => resolve(false));
      c.setTimeout(3000, () => c.destroy());
    });

  /** Sends one request; what came back first (a status line), or that the gateway reset or closed without one. */
  const send = (bytes: Buffer) =>
    new Promise<{ answer: string; reset: boolean }>((resolve) => {
      const c = connect(GW.port, GW.host, () => c.end(bytes));
      let out = Buffer.alloc(0);
      let reset = false;
      c.on('data', (d: Buffer) => (out = Buffer.concat([out, d]).subarray(0, 64)));
      c.on('error', () => (reset = true));
      c.on('close', () => resolve({ answer: out.toString('latin1'), reset }));
      // The gateway's own limits (connect 2 s, ingress idle 60 s) would hold a silent case longer than a test may.
      c.setTimeout(2500, () => c.destroy());
    });

  const fds = () => readdirSync(`/proc/${gw!.pid}/fd`).length;

  it('never exits, answers every request with a status line or a reset, and leaks no descriptors', async () => {
    const startFds = fds();
    // closed: the gateway closed without a word: the client half-closed (every case does, after its request), and
    // Node's HTTP server does not answer a half-closed client whose request is unfinished or still upstream.
    const counts = { cases: 0, status: 0, reset: 0, closed: 0 };
    let longestMs = 0;
    await fc.assert(
      fc.asyncProperty(request, behaviour, async (req, b) => {
        next = b;
        const t0 = Date.now();
        const r = await send(req);
        longestMs = Math.max(longestMs, Date.now() - t0);
        counts.cases++;
        if (/^HTTP\/1\.1 \d{3} /.test(r.answer)) counts.status++;
        else if (r.reset) counts.reset++;
        else if (r.answer === '') counts.closed++;
        else throw new Error(`answered neither a status line nor a reset: ${JSON.stringify(r.answer)}`);
        if (gw!.exitCode !== null) throw new Error(`the gateway exited (${gw!.exitCode}): ${log}`);
      }),
      { numRuns: RUNS, endOnFailure: true },
    );
    expect(await healthy()).toBe(true);
    for (const s of backendSockets) s.destroy();
    // Every connection of the cases is over: the process holds what it held at the start, but for the kernel
    // splicer's pool of idle pipes (up to 4, two descriptors each).
    const slack = 8;
    const end = Date.now() + 10_000;
    while (fds() > startFds + slack && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
    console.log(`gateway fuzz: ${JSON.stringify(counts)}, ${reachedBackend} reached the backend, longest case ${longestMs} ms, descriptors ${startFds} → ${fds()}`);
    expect(fds()).toBeLessThanOrEqual(startFds + slack);
    expect(gw!.exitCode).toBeNull();
  }, Math.max(120_000, RUNS * 3_000));
});
