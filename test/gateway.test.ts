// The gateway and the tunnel protocol on loopback, with real servers behind it and real clients in front:
// the proxy's openTunnel, curl -p -x, and raw sockets sending what a confused or hostile peer would.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createHttpServer } from 'node:http';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LocalService, staticCatalog } from '../src/gateway/catalog.js';
import { Gateway } from '../src/gateway/gateway.js';
import { openTunnel } from '../src/tunnel/client.js';

const run = promisify(execFile);
const servers: Server[] = [];

/** A TCP server that greets with its name and echoes, and tells when a half-close reached it. */
async function backend(name: string): Promise<number> {
  const s = createServer({ allowHalfOpen: true }, (c) => {
    c.write(`hello from ${name}\n`);
    c.on('data', (d) => c.write(d));
    c.on('end', () => c.end(`bye from ${name}\n`));
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as { port: number }).port;
}

async function httpBackend(name: string): Promise<number> {
  const s = createHttpServer((req, res) => res.end(`${name} ${req.method} ${req.url}\n`));
  servers.push(s as unknown as Server);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as { port: number }).port;
}

/** An HTTP server that reads the whole body and answers with its length. */
async function httpSink(): Promise<number> {
  const s = createHttpServer((req, res) => {
    let n = 0;
    req.on('data', (d: Buffer) => (n += d.length));
    req.on('end', () => res.end(`got ${n}\n`));
  });
  servers.push(s as unknown as Server);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as { port: number }).port;
}

/** A backend that answers every request with `answer`, as it is (a hostile or broken HTTP server). */
async function rawBackend(answer: string): Promise<number> {
  const s = createServer((c) => {
    c.on('error', () => undefined);
    c.once('data', () => c.end(answer));
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as { port: number }).port;
}

/** Sends raw bytes and collects what comes back until the gateway closes. */
function raw(port: number, bytes: string | Buffer, waitMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    const c = connect(port, '127.0.0.1');
    let out = '';
    const t = setTimeout(() => c.destroy(), waitMs);
    c.on('data', (d) => (out += d.toString()));
    c.on('close', () => {
      clearTimeout(t);
      resolve(out);
    });
    c.on('error', () => undefined);
    c.write(bytes);
  });
}

const readLine = (s: Socket) =>
  new Promise<string>((resolve) => {
    let buf = '';
    const on = (d: Buffer) => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) {
        s.off('data', on);
        resolve(buf.slice(0, i));
      }
    };
    s.on('data', on);
  });

describe.each([
  ['streams', false],
  ['the kernel', true],
])('gateway and tunnel (loopback), tunnel bytes moved by %s', (_mode, kernelSplice) => {
  let gw: Gateway;
  let gwPort = 0;
  const tunnel = (service: string, namespace: string, port: number) =>
    openTunnel({ gateway: { host: '127.0.0.1', port: gwPort }, target: { service, namespace, port }, sourceCluster: 'default/default/default/cluster-2', timeoutMs: 3000 });

  beforeAll(async () => {
    const a = await backend('a');
    const b = await backend('b');
    const web = await httpBackend('web');
    const badStatus = await rawBackend('HTTP/1.1 050 Weird\r\ncontent-length: 0\r\n\r\n');
    const silentServer = createServer((c) => {
      // accepts, then says nothing (and lets go after a while, so that the suite can close it)
      c.on('error', () => undefined);
      c.setTimeout(5_000, () => c.destroy());
    });
    servers.push(silentServer);
    await new Promise<void>((r) => silentServer.listen(0, '127.0.0.1', r));
    const silent = (silentServer.address() as { port: number }).port;
    const sink = await httpSink();
    const refused = await backend('gone');
    await new Promise<void>((r) => servers.pop()!.close(() => r())); // its port now refuses
    const services: LocalService[] = [
      {
        namespace: 'httpbin',
        name: 'httpbin',
        ports: new Map([[8080, [{ ip: '127.0.0.1', port: refused }, { ip: '127.0.0.1', port: a }, { ip: '127.0.0.1', port: b }]], [9090, [{ ip: '127.0.0.1', port: a }]]]),
        export: { loadBalancer: 'RoundRobinLoadBalancer', rules: [{ portNumber: 8080, path: '/httpbin', pathType: 'Prefix' }] },
      },
      { namespace: 'httpbin', name: 'private', ports: new Map([[8080, [{ ip: '127.0.0.1', port: a }]]]), export: undefined },
      { namespace: 'httpbin', name: 'empty', ports: new Map([[8080, []]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } },
      { namespace: 'shop', name: 'down', ports: new Map([[80, [{ ip: '127.0.0.1', port: refused }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } },
      {
        namespace: 'shop',
        name: 'web',
        ports: new Map([[80, [{ ip: '127.0.0.1', port: web }]]]),
        export: { loadBalancer: 'RoundRobinLoadBalancer', rules: [{ portNumber: 80, path: '/shop', pathType: 'Prefix' }], pathRewrite: { from: '/shop', to: '/api' } },
      },
      // What a tenant may write: rewrites to paths no request can carry, and a backend with a status of 050.
      ...[
        ['space', '/a b'],
        ['wide', '/\u0100'],
      ].map(([name, to]) => ({
        namespace: 'hostile',
        name: name!,
        ports: new Map([[80, [{ ip: '127.0.0.1', port: web }]]]),
        export: { loadBalancer: 'RoundRobinLoadBalancer' as const, rules: [{ portNumber: 80, path: `/${name}`, pathType: 'Prefix' as const }], pathRewrite: { from: `/${name}`, to: to! } },
      })),
      {
        namespace: 'slow',
        name: 'silent',
        ports: new Map([[80, [{ ip: '127.0.0.1', port: silent }]]]),
        export: { loadBalancer: 'RoundRobinLoadBalancer', rules: [{ portNumber: 80, path: '/silent', pathType: 'Prefix' }] },
      },
      {
        namespace: 'slow',
        name: 'upload',
        ports: new Map([[80, [{ ip: '127.0.0.1', port: sink }]]]),
        export: { loadBalancer: 'RoundRobinLoadBalancer', rules: [{ portNumber: 80, path: '/upload', pathType: 'Prefix' }] },
      },
      {
        namespace: 'hostile',
        name: 'status',
        ports: new Map([[80, [{ ip: '127.0.0.1', port: badStatus }]]]),
        export: { loadBalancer: 'RoundRobinLoadBalancer', rules: [{ portNumber: 80, path: '/status', pathType: 'Prefix' }] },
      },
    ];
    gw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog: staticCatalog(services), connectTimeoutMs: 500, headerTimeoutMs: 1000, ingressIdleMs: 1000, kernelSplice });
    gwPort = gw.address.port;
  });
  afterAll(async () => {
    await gw?.close(100);
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  it('tunnels to an exported service, skipping an endpoint that refuses, round robin over the rest; half-close passes through', async () => {
    const names: string[] = [];
    for (let i = 0; i < 4; i++) {
      const s = await tunnel('httpbin', 'httpbin', 8080);
      names.push(await readLine(s));
      s.write('ping\n');
      expect(await readLine(s)).toBe('ping');
      // Half-close: the client is done sending, the server still answers.
      const rest = new Promise<string>((r) => {
        let out = '';
        s.on('data', (d) => (out += d.toString()));
        s.on('end', () => r(out));
      });
      s.end();
      expect(await rest).toMatch(/^bye from [ab]\n$/);
    }
    expect(new Set(names)).toEqual(new Set(['hello from a', 'hello from b']));
    // The banner each backend sends first sat in Node's buffer at the hand-over, and still came first.
    expect(gw.stats.kernelSpliced).toBe(kernelSplice ? 4 : 0);
  });

  it('refuses with the reason: 403 not exported (service or port), 404 unknown, 503 no endpoint, 400 not a service', async () => {
    const status = (svc: string, ns: string, port: number) => tunnel(svc, ns, port).then(() => 200, (e: { status?: number; code: string }) => e.status ?? e.code);
    expect(await status('private', 'httpbin', 8080)).toBe(403);
    expect(await status('httpbin', 'httpbin', 9090)).toBe(403);
    expect(await status('nothing', 'httpbin', 8080)).toBe(404);
    expect(await status('empty', 'httpbin', 8080)).toBe(503);
    expect(await status('down', 'shop', 80)).toBe(503);
    expect(await raw(gwPort, 'CONNECT example.org:443 HTTP/1.1\r\nhost: example.org:443\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*is not <service>\.<namespace>\.svc\.clusterset\.local/);
  });

  it('curl speaks it (curl -p -x), and the ingress rules serve plain HTTP with the path rewritten; /healthz', async () => {
    const viaTunnel = await run('curl', ['-s', '-p', '-x', `http://127.0.0.1:${gwPort}`, 'http://web.shop.svc.clusterset.local:80/x']);
    expect(viaTunnel.stdout).toBe('web GET /x\n');
    const ingress = await run('curl', ['-s', `http://127.0.0.1:${gwPort}/shop/items?x=1`]);
    expect(ingress.stdout).toBe('web GET /api/items?x=1\n');
    const notRule = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${gwPort}/shopping`]);
    expect(notRule.stdout).toBe('404');
    expect((await run('curl', ['-s', `http://127.0.0.1:${gwPort}/healthz`])).stdout).toBe('ok\n');
  });

  it('an ingress rule rewriting to an impossible path, or a backend status of 050, gets a 502 and the gateway lives on', async () => {
    const code = async (path: string) => (await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${gwPort}${path}`])).stdout;
    expect(await code('/space/x')).toBe('502');
    expect(await code('/wide/x')).toBe('502');
    expect(await code('/status')).toBe('502');
    expect((await run('curl', ['-s', `http://127.0.0.1:${gwPort}/shop/items`])).stdout).toBe('web GET /api/items\n');
    expect((await run('curl', ['-s', `http://127.0.0.1:${gwPort}/healthz`])).stdout).toBe('ok\n');
  });

  it('ingress: many requests on one keep-alive connection add no listener each (no leak per request)', async () => {
    const { Agent: HttpAgent, get } = await import('node:http');
    const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      for (let i = 0; i < 30; i++) {
        const body = await new Promise<string>((resolve, reject) =>
          get({ host: '127.0.0.1', port: gwPort, path: '/shop/items', agent }, (res) => {
            let b = '';
            res.on('data', (d) => (b += d));
            res.on('end', () => resolve(b));
          }).on('error', reject),
        );
        expect(body).toBe('web GET /api/items\n');
      }
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => w === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      agent.destroy();
    }
  });

  it('ingress: a slow upload that keeps moving gets through; an upstream that says nothing gets a 504', async () => {
    // 12 chunks 250 ms apart: 3 s in all, three times the idle limit, never idle that long.
    const upload = await new Promise<string>((resolve, reject) => {
      const c = connect(gwPort, '127.0.0.1');
      let out = '';
      c.on('data', (d) => (out += d.toString()));
      c.on('close', () => resolve(out));
      c.on('error', reject);
      c.write('POST /upload HTTP/1.1\r\nhost: gw\r\ncontent-length: 12000\r\nconnection: close\r\n\r\n');
      let i = 0;
      const t = setInterval(() => {
        c.write(Buffer.alloc(1000, 97));
        if (++i === 12) clearInterval(t);
      }, 250);
    });
    expect(upload).toMatch(/^HTTP\/1\.1 200[\s\S]*got 12000/);
    const started = Date.now();
    const silent = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${gwPort}/silent`]);
    expect(silent.stdout).toBe('504');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('garbage, oversized heads and slow clients are answered or closed, and never stop other tunnels', async () => {
    const busy = await tunnel('httpbin', 'httpbin', 8080);
    await readLine(busy);
    expect(await raw(gwPort, Buffer.from([0, 1, 2, 3, 255, 254, 13, 10, 13, 10]))).toMatch(/^HTTP\/1\.1 400/);
    expect(await raw(gwPort, `CONNECT httpbin.httpbin.svc.clusterset.local:8080 HTTP/1.1\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431/);
    const started = Date.now();
    const slow = await raw(gwPort, 'CONNECT httpbin.httpbin.svc.clusterset.local:8080 HTTP/1.1\r\nx-slow: 1\r\n', 15_000);
    expect(slow).toMatch(/^HTTP\/1\.1 408/);
    expect(Date.now() - started).toBeLessThan(4_000);
    // Meanwhile the first tunnel still works.
    busy.write('still here\n');
    expect(await readLine(busy)).toBe('still here');
    busy.destroy();
    expect(gw.stats.refused[431]).toBeGreaterThanOrEqual(1);
  });
});

/** A throwaway CA, a gateway certificate for 127.0.0.1 and a client certificate, made with openssl. */
function makeCerts(dir: string): Record<'ca' | 'gwCert' | 'gwKey' | 'clientCert' | 'clientKey', string> {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl('req', '-x509', ...key, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=ecnet-test-ca');
  for (const [name, ext] of [
    ['gw', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth'],
    ['client', 'extendedKeyUsage=clientAuth'],
  ] as const) {
    writeFileSync(join(dir, `${name}.ext`), `${ext}\n`);
    ssl('req', ...key, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', `${name}.ext`);
  }
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return { ca: read('ca.pem'), gwCert: read('gw.pem'), gwKey: read('gw.key'), clientCert: read('client.pem'), clientKey: read('client.key') };
}

describe('gateway with mTLS', () => {
  let gw: Gateway | undefined;
  let dir = '';
  let certs: ReturnType<typeof makeCerts>;
  let web: number;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ecnet-tls-'));
    certs = makeCerts(dir);
    web = await httpBackend('web-tls');
    const rude = createServer((c) => {
      c.on('error', () => undefined);
      c.once('data', () => c.resetAndDestroy());
    });
    servers.push(rude);
    await new Promise<void>((r) => rude.listen(0, '127.0.0.1', r));
    gw = await Gateway.start({
      host: '127.0.0.1',
      port: 0,
      idleTimeoutMs: 1_000,
      catalog: staticCatalog([
        { namespace: 'shop', name: 'web', ports: new Map([[80, [{ ip: '127.0.0.1', port: web }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } },
        { namespace: 'shop', name: 'rude', ports: new Map([[80, [{ ip: '127.0.0.1', port: (rude.address() as { port: number }).port }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } },
      ]),
      tls: { cert: certs.gwCert, key: certs.gwKey, ca: certs.ca },
    });
  });
  afterAll(async () => {
    await gw?.close(100);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const open = (tls: Parameters<typeof openTunnel>[0]['tls']) =>
    openTunnel({ gateway: { host: '127.0.0.1', port: gw!.address.port }, target: { service: 'web', namespace: 'shop', port: 80 }, sourceCluster: 'default/default/default/cluster-2', timeoutMs: 3000, ...(tls ? { tls } : {}) });

  it('a proxy with a client certificate gets its tunnel; one without, or without TLS, does not', async () => {
    const s = await open({ ca: certs.ca, cert: certs.clientCert, key: certs.clientKey });
    s.write('GET /t HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n');
    const reply = await new Promise<string>((r) => {
      let out = '';
      s.on('data', (d) => (out += d.toString()));
      s.on('end', () => r(out));
    });
    expect(reply).toMatch(/web-tls GET \/t/);
    await expect(open({ ca: certs.ca })).rejects.toMatchObject({ code: 'ECNET_TUNNEL_UNREACHABLE' });
    await expect(open(undefined)).rejects.toBeDefined();
  });

  it('a TLS tunnel cut by its backend, or idle past the limit, is reset and the gateway lives on', async () => {
    const tls = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey };
    const ended = (s: Socket) => new Promise<void>((r) => (s.on('error', () => r()), s.on('close', () => r())));
    const rude = await openTunnel({ gateway: { host: '127.0.0.1', port: gw!.address.port }, target: { service: 'rude', namespace: 'shop', port: 80 }, sourceCluster: 'default/default/default/cluster-2', timeoutMs: 3000, tls });
    rude.write('x');
    await ended(rude);
    const idle = await open(tls);
    await ended(idle); // the idle limit (1 s)
    const s = await open(tls);
    s.write('GET /after HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n');
    expect(await new Promise<string>((r) => {
      let out = '';
      s.on('data', (d) => (out += d.toString()));
      s.on('end', () => r(out));
    })).toMatch(/web-tls GET \/after/);
  });

  it("the gateway's certificate is checked against the address dialled, also through the proxy's own (marked) socket", async () => {
    const tls = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey };
    const via = (host: string) =>
      openTunnel({
        gateway: { host, port: gw!.address.port },
        target: { service: 'web', namespace: 'shop', port: 80 },
        sourceCluster: 'default/default/default/cluster-2',
        timeoutMs: 3000,
        tls,
        // As the proxy does: its own socket (it carries the datapath's skip mark there).
        connect: (h, p) => connect({ host: h, port: p }),
      });
    const ok = await via('127.0.0.1'); // the certificate names IP 127.0.0.1
    ok.destroy();
    // Same gateway reached as 127.0.0.2 (also loopback): the certificate does not name it.
    const gw2 = await Gateway.start({ host: '127.0.0.2', port: gw!.address.port, catalog: staticCatalog([]), tls: { cert: certs.gwCert, key: certs.gwKey, ca: certs.ca } });
    try {
      await expect(via('127.0.0.2')).rejects.toMatchObject({ message: expect.stringMatching(/IP: 127\.0\.0\.2 is not in the cert's list/) });
    } finally {
      await gw2.close(0);
    }
  });

  it('curl speaks it too (an HTTPS proxy with client certificates)', async () => {
    const r = await run('curl', [
      '-s',
      '-p',
      '-x',
      `https://127.0.0.1:${gw!.address.port}`,
      '--proxy-cacert',
      join(dir, 'ca.pem'),
      '--proxy-cert',
      join(dir, 'client.pem'),
      '--proxy-key',
      join(dir, 'client.key'),
      'http://web.shop.svc.clusterset.local:80/x',
    ]);
    expect(r.stdout).toBe('web-tls GET /x\n');
  });
});

describe('gateway under a flood from one source', () => {
  let gw: Gateway | undefined;
  const held: Socket[] = [];
  let echoPort = 0;
  beforeAll(async () => {
    echoPort = await backend('echo');
    gw = await Gateway.start({
      host: '127.0.0.1',
      port: 0,
      catalog: staticCatalog([{ namespace: 'ns', name: 'echo', ports: new Map([[80, [{ ip: '127.0.0.1', port: echoPort }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } }]),
      limits: { total: 1_000, perSource: 300 },
    });
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    await gw?.close(100);
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  });

  it('holds the per-source limit through 2,000 tunnels from one address, resets the rest at once, and still serves another source', async () => {
    const heapBefore = process.memoryUsage().heapUsed;
    const open = (localAddress: string) =>
      new Promise<'tunnel' | 'reset'>((resolve) => {
        const c = connect({ port: gw!.address.port, host: '127.0.0.1', localAddress });
        held.push(c);
        c.on('error', () => resolve('reset'));
        c.on('close', () => resolve('reset'));
        c.on('data', (d) => {
          if (d.toString().startsWith('HTTP/1.1 200')) resolve('tunnel');
        });
        c.write('CONNECT echo.ns.svc.clusterset.local:80 HTTP/1.1\r\nhost: echo.ns.svc.clusterset.local:80\r\n\r\n');
      });
    const results: string[] = [];
    for (let i = 0; i < 2_000; i += 100) results.push(...(await Promise.all(Array.from({ length: 100 }, () => open('127.0.0.1')))));
    const tunnels = results.filter((r) => r === 'tunnel').length;
    expect(tunnels).toBe(300);
    expect(gw!.stats.limited).toBe(1_700);
    // Another source (another node's proxy) is still served while the first holds its 300.
    expect(await open('127.0.0.9')).toBe('tunnel');
    // 301 held tunnels and 1,700 refusals cost the gateway little memory (a bound, not a measurement).
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 << 20);
  }, 60_000);

  it('a tunnel moved into the kernel splicer frees its slot when it ends: 150 one after the other under a limit of 20', async () => {
    const spliced = await Gateway.start({
      host: '127.0.0.1',
      port: 0,
      kernelSplice: true,
      catalog: staticCatalog([{ namespace: 'ns', name: 'echo', ports: new Map([[80, [{ ip: '127.0.0.1', port: echoPort }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } }]),
      limits: { perSource: 20 },
    });
    try {
      for (let i = 0; i < 150; i++) {
        const s = await openTunnel({ gateway: { host: '127.0.0.1', port: spliced.address.port }, target: { service: 'echo', namespace: 'ns', port: 80 }, sourceCluster: 'c', timeoutMs: 3000 });
        await new Promise<void>((r) => {
          s.once('data', () => s.end());
          s.on('close', () => r());
          s.on('error', () => r());
        });
      }
      expect(spliced.stats.kernelSpliced).toBe(150);
      expect(spliced.stats.limited).toBe(0);
    } finally {
      await spliced.close(100);
    }
  }, 60_000);
});
