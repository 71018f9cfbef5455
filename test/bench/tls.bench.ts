// `npm run bench:tls`: what mutual TLS costs a tunnel, against a plain one measured in the same run. A gateway
// on loopback opens tunnels to a local backend for the proxy's tunnel client, plain (the kernel splicer moves the
// bytes) or with cluster identities (mTLS: the bytes go through Node's TLS streams). Interleaved rounds, medians.
//   bulk: 256 MiB through one tunnel, until the backend has counted them (MB/s);
//   tunnels/s: open, one byte each way, close; 8 at a time for 2 s.
// Needs no privileges (the kernel splicer runs in the addon's thread when it is built; else both are streams).
import { type AddressInfo, type Server, type Socket, createServer } from 'node:net';
import { staticCatalog } from '../../src/gateway/catalog.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { createCa, issue } from '../../src/identity/pki.js';
import { clusterSpiffeId } from '../../src/identity/spiffe.js';
import { openTunnel } from '../../src/tunnel/client.js';
import type { TunnelTls } from '../../src/tunnel/protocol.js';

const ROUNDS = 3;
const BULK = Number(process.env.BULK_MIB ?? 256) * 1024 * 1024;
const CPS_MS = 2000;
const SET = 'bench';
const key = (n: number) => `default/default/default/cluster-${n}` as const;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  // Bulk: counts what arrives and answers with the count at the end; cps: one byte back, then close.
  const sink: Server = createServer({ allowHalfOpen: true }, (c) => {
    let n = 0;
    c.on('data', (d: Buffer) => {
      if (n === 0 && d.length === 1 && d[0] === 0x79) return void c.end('y');
      n += d.length;
    });
    c.on('end', () => c.end(String(n)));
    c.on('error', () => undefined);
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
  const port = (sink.address() as AddressInfo).port;
  const catalog = staticCatalog([{ namespace: 'ns', name: 'sink', ports: new Map([[80, [{ ip: '127.0.0.1', port }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } }]);
  const ca = await createCa(SET);
  const id = async (n: number): Promise<TunnelTls> => ({ ...(await issue(ca, clusterSpiffeId(SET, key(n)), 3_600_000)), ca: ca.cert, clusterSet: SET });
  const plain = await Gateway.start({ host: '127.0.0.1', port: 0, catalog, kernelSplice: true });
  const mtls = await Gateway.start({ host: '127.0.0.1', port: 0, catalog, tls: await id(1) });
  const client = await id(2);
  const open = (gw: Gateway, tls?: TunnelTls): Promise<Socket> =>
    openTunnel({ gateway: { host: '127.0.0.1', port: gw.address.port }, target: { service: 'sink', namespace: 'ns', port: 80 }, sourceCluster: key(2), timeoutMs: 5000, ...(tls ? { tls, cluster: key(1) } : {}) });

  const bulk = async (gw: Gateway, tls?: TunnelTls): Promise<number> => {
    const s = await open(gw, tls);
    const chunk = Buffer.alloc(1 << 20, 0x61);
    const t = process.hrtime.bigint();
    const answer = new Promise<string>((resolve, reject) => {
      let got = '';
      s.on('data', (d) => (got += d));
      s.on('end', () => resolve(got));
      s.on('error', reject);
    });
    for (let sent = 0; sent < BULK; sent += chunk.length) if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
    s.end();
    const got = Number(await answer);
    if (got !== BULK) throw new Error(`the backend counted ${got} of ${BULK} bytes`);
    s.destroy();
    return BULK / 1e6 / (Number(process.hrtime.bigint() - t) / 1e9);
  };

  const cps = async (gw: Gateway, tls?: TunnelTls): Promise<number> => {
    let done = 0;
    const end = Date.now() + CPS_MS;
    const worker = async () => {
      while (Date.now() < end) {
        const s = await open(gw, tls);
        await new Promise<void>((resolve, reject) => {
          s.once('data', () => resolve());
          s.on('error', reject);
          s.write('y');
        });
        s.destroy();
        done++;
      }
    };
    const t = Date.now();
    await Promise.all(Array.from({ length: 8 }, worker));
    return done / ((Date.now() - t) / 1000);
  };

  const r = { bulkPlain: [] as number[], bulkTls: [] as number[], cpsPlain: [] as number[], cpsTls: [] as number[] };
  for (let i = 0; i < ROUNDS; i++) {
    r.bulkPlain.push(await bulk(plain));
    r.bulkTls.push(await bulk(mtls, client));
    r.cpsPlain.push(await cps(plain));
    r.cpsTls.push(await cps(mtls, client));
  }
  const f = (n: number) => n.toFixed(0);
  console.log(`tunnel bulk, 256 MiB: plain (kernel splice: ${plain.stats.kernelSpliced > 0 ? 'yes' : 'no'}) ${f(median(r.bulkPlain))} MB/s, mTLS ${f(median(r.bulkTls))} MB/s = ${(median(r.bulkTls) / median(r.bulkPlain)).toFixed(2)}× plain`);
  console.log(`tunnels/s, 8 at a time: plain ${f(median(r.cpsPlain))}, mTLS ${f(median(r.cpsTls))} = ${(median(r.cpsTls) / median(r.cpsPlain)).toFixed(2)}× plain`);
  await plain.close(100);
  await mtls.close(100);
  sink.close();
}

await main();
