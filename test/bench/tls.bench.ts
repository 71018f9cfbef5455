// `npm run bench:tls`: what mutual TLS costs a tunnel, against a plain one and a direct connection measured in
// the same run. A node proxy (its datapath's answer given by a fixed route: no privileges needed) and a gateway
// on loopback, in this process; the load (test/bench/traffic-load.mjs) and the backends in processes of their own.
//   direct:       load → backend
//   plain:        load → proxy → plain TCP tunnel → gateway → backend (the kernel splicer moves the bytes)
//   mTLS sealed:  the same with cluster identities; after the handshake the splicer's thread seals and opens the
//                 records (tunnel/records.ts): the default
//   mTLS streams: the same, the bytes through Node's TLS streams (what a splicer-less proxy does)
// Figures: bulk MB/s (256 MiB, until the backend counted them), 64 B request/response p50/p99, new
// connections/s (8 at a time, 2 s). Interleaved rounds, medians; ratios against plain.
import { type ChildProcess, spawn } from 'node:child_process';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { staticCatalog } from '../../src/gateway/catalog.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { createCa, issue } from '../../src/identity/pki.js';
import { clusterSpiffeId } from '../../src/identity/spiffe.js';
import { packageRoot } from '../../src/paths.js';
import { NodeProxy, type Route } from '../../src/proxy/proxy.js';
import type { TunnelTls } from '../../src/tunnel/protocol.js';

const ROUNDS = 3;
const BULK = Number(process.env.BULK_MIB ?? 256) * 1024 * 1024;
const SET = 'bench';
const key = (n: number) => `default/default/default/cluster-${n}` as const;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const f = (n: number, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

/** A backend process: `sink` counts what arrives and answers the count at the end; `echo` sends it back. */
async function backend(kind: 'sink' | 'echo'): Promise<{ port: number; child: ChildProcess }> {
  const code =
    kind === 'sink'
      ? "const s=require('net').createServer({allowHalfOpen:true},c=>{let n=0;c.on('data',d=>n+=d.length);c.on('end',()=>c.end(String(n)));c.on('error',()=>{})})"
      : "const s=require('net').createServer(c=>{c.setNoDelay(true);c.on('data',d=>c.write(d));c.on('error',()=>{})})";
  const child = spawn(process.execPath, ['-e', `${code};s.listen(0,'127.0.0.1',()=>console.log(s.address().port))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
  return { port, child };
}

function load(args: Record<string, unknown>): Promise<Record<string, number>> {
  const child = spawn(process.execPath, [join(packageRoot, 'test', 'bench', 'traffic-load.mjs'), JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', (code) => (code ? reject(new Error(`load ${JSON.stringify(args)} exited ${code}`)) : resolve(JSON.parse(out.split('\n')[0]!) as Record<string, number>)));
  });
}

async function main(): Promise<void> {
  const sink = await backend('sink');
  const echo = await backend('echo');
  const catalog = staticCatalog(
    [
      ['sink', sink.port],
      ['echo', echo.port],
    ].map(([name, port]) => ({ namespace: 'ns', name: name as string, ports: new Map([[80, [{ ip: '127.0.0.1', port: port as number }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' as const } })),
  );
  const ca = await createCa(SET);
  const id = async (n: number): Promise<TunnelTls> => ({ ...(await issue(ca, clusterSpiffeId(SET, key(n)), 3_600_000)), ca: ca.cert, clusterSet: SET });
  const plainGw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog, kernelSplice: true });
  const mtlsGw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog, kernelSplice: true, tls: await id(1) });
  const client = await id(2);
  const route = (service: string, gw: Gateway): Route => ({ service, namespace: 'ns', port: 80, exporters: [{ clusterKey: key(1), gateway: { host: '127.0.0.1', port: gw.address.port } }], policy: { lbType: 'ActiveActive' }, localEndpoints: [] });
  // One proxy per service and path (its route is fixed: the datapath's answer stands in for a ClusterIP).
  const paths = {
    plain: { sink: await proxyFor(plainGw, 'sink', {}), echo: await proxyFor(plainGw, 'echo', {}) },
    sealed: { sink: await proxyFor(mtlsGw, 'sink', { tls: client }), echo: await proxyFor(mtlsGw, 'echo', { tls: client }) },
    streams: { sink: await proxyFor(mtlsGw, 'sink', { tls: client, streams: true }), echo: await proxyFor(mtlsGw, 'echo', { tls: client, streams: true }) },
  };
  async function proxyFor(gw: Gateway, service: string, o: { tls?: TunnelTls; streams?: boolean }): Promise<NodeProxy> {
    return NodeProxy.start({
      host: '127.0.0.1',
      port: 0,
      localCluster: key(2),
      routes: { lookup: () => route(service, gw) },
      originalDestination: () => ({ ip: '10.96.0.1', port: 80 }),
      kernelSplice: !o.streams,
      ...(o.tls ? { tls: o.tls } : {}),
    });
  }
  const targets: Record<string, { sink: string; echo: string }> = {
    direct: { sink: `127.0.0.1:${sink.port}`, echo: `127.0.0.1:${echo.port}` },
    ...Object.fromEntries(Object.entries(paths).map(([k, p]) => [k, { sink: `127.0.0.1:${p.sink.address.port}`, echo: `127.0.0.1:${p.echo.address.port}` }])),
  };
  const r: Record<string, Record<string, number[]>> = {};
  const add = (path: string, k: string, v: number) => ((r[path] ??= {})[k] ??= []).push(v);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [path, t] of Object.entries(targets)) {
      add(path, 'bulk', (await load({ mode: 'bulk', target: t.sink, bytes: BULK })).mbps!);
      const lat = await load({ mode: 'rr', target: t.echo, count: 2000 });
      add(path, 'p50', lat.p50!);
      add(path, 'p99', lat.p99!);
      const c = await load({ mode: 'cps', target: t.echo, durationMs: 2000, concurrency: 8 });
      if (c.failed) throw new Error(`${c.failed} connections failed (${path})`);
      add(path, 'cps', c.cps!);
    }
  }
  const m = (path: string, k: string) => median(r[path]![k]!);
  const sealedCount = paths.sealed.sink.stats.sealed + paths.sealed.echo.stats.sealed;
  console.log(`tunnel benchmark on loopback (${cpus().length} cores; ${ROUNDS} interleaved rounds, medians; sealed tunnels ${sealedCount}, streams ${paths.streams.sink.stats.proxied + paths.streams.echo.stats.proxied})`);
  console.log('                  bulk MB/s   ×plain   64 B rr p50 µs   p99 µs   conns/s   ×plain');
  for (const path of ['direct', 'plain', 'sealed', 'streams']) {
    const name = { direct: 'direct', plain: 'plain tunnel', sealed: 'mTLS sealed', streams: 'mTLS streams' }[path]!;
    console.log(
      `  ${name.padEnd(14)} ${f(m(path, 'bulk')).padStart(10)} ${f(m(path, 'bulk') / m('plain', 'bulk'), 2).padStart(8)} ${f(m(path, 'p50')).padStart(16)} ${f(m(path, 'p99')).padStart(8)} ${f(m(path, 'cps')).padStart(9)} ${f(m(path, 'cps') / m('plain', 'cps'), 2).padStart(8)}`,
    );
  }
  for (const p of Object.values(paths)) for (const x of Object.values(p)) await x.close(100);
  await plainGw.close(100);
  await mtlsGw.close(100);
  sink.child.kill();
  echo.child.kill();
}

await main();
