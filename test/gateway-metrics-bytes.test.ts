// The gateway's byte counts are payload only, however the tunnel's bytes move: as streams the tunnel socket's
// own counts also hold the CONNECT head and the 200 answer, which must not be counted (the kernel splicer
// never sees them). Payload sent with the CONNECT head (read by the HTTP parser) is payload.
import { type Server, connect, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Gateway } from '../src/gateway/gateway.js';
import type { LocalService } from '../src/gateway/catalog.js';
import { GatewayMetrics } from '../src/gateway/metrics.js';
import { componentRegistry } from '../src/metrics/registry.js';
import { parseMetrics, sumOf } from '../src/metrics/parse.js';

describe.each([
  ['streams', false],
  ['the kernel splicer', true],
])('gateway bytes of tunnels moved by %s', (_mode, kernelSplice) => {
  let be: Server;
  let gw: Gateway;
  const registry = componentRegistry('gateway');
  const metrics = new GatewayMetrics({ registry });

  beforeAll(async () => {
    be = createServer((c) => {
      c.on('error', () => undefined);
      c.on('data', (d) => c.write(d));
      c.on('end', () => c.end());
    });
    await new Promise<void>((r) => be.listen(0, '127.0.0.1', r));
    const svc: LocalService = { namespace: 'ns', name: 'echo', ports: new Map([[8080, [{ ip: '127.0.0.1', port: (be.address() as { port: number }).port }]]]), export: { loadBalancer: 'RoundRobinLoadBalancer' } };
    gw = await Gateway.start({ host: '127.0.0.1', port: 0, catalog: { get: (ns, n) => (ns === 'ns' && n === 'echo' ? svc : undefined), all: () => [svc], withIngress: () => [] }, kernelSplice, metrics });
  });
  afterAll(() => {
    gw.destroy();
    be.close();
  });

  /** One tunnel: `early` sent with the CONNECT head, `late` after the 200; resolves with what came back. */
  const tunnel = (early: string, late: string) =>
    new Promise<string>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: gw.address.port });
      let got = '';
      let open = false;
      s.on('connect', () => s.write(`CONNECT echo.ns.svc.clusterset.local:8080 HTTP/1.1\r\nhost: echo.ns.svc.clusterset.local:8080\r\n\r\n${early}`));
      s.on('data', (d) => {
        got += d.toString('latin1');
        if (!open && got.includes('\r\n\r\n')) {
          open = true;
          got = got.slice(got.indexOf('\r\n\r\n') + 4);
          s.write(late);
        }
        if (open && got.length >= early.length + late.length) s.end();
      });
      s.on('error', reject);
      s.on('close', () => resolve(got));
    });

  it('counts the payload both ways, not the CONNECT head nor the 200', async () => {
    expect(await tunnel('', 'x'.repeat(1000))).toBe('x'.repeat(1000));
    expect(await tunnel('early bytes', 'y'.repeat(500))).toBe(`early bytes${'y'.repeat(500)}`);
    const want = 1000 + 'early bytes'.length + 500;
    const deadline = Date.now() + 10_000;
    let f = parseMetrics(await registry.metrics());
    while (sumOf(f, 'ecnet_gateway_tunnels_active') !== 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      f = parseMetrics(await registry.metrics());
    }
    expect(sumOf(f, 'ecnet_gateway_tunnels_opened_total', { namespace: 'ns', service: 'echo' })).toBe(2);
    expect(sumOf(f, 'ecnet_gateway_bytes_total', { namespace: 'ns', service: 'echo', direction: 'sent' })).toBe(want);
    expect(sumOf(f, 'ecnet_gateway_bytes_total', { namespace: 'ns', service: 'echo', direction: 'received' })).toBe(want);
  });
});
