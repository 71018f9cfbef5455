// Active checks of the gateways the routes use: GET /healthz on each, every intervalMs, on a socket the
// datapath does not redirect. Each result goes to the proxy's HealthBook, which also hears of failed
// connections (passive checks); a passing check ends an ejection.
import { request } from 'node:http';
import type { Socket } from 'node:net';
import type { ClusterKey } from '../api/flomesh.js';
import type { HealthBook } from '../policy/health.js';
import type { Gateway } from '../policy/plan.js';
import { gatewayConnection } from '../tunnel/client.js';
import type { TunnelTls } from '../tunnel/protocol.js';

export interface HealthChecksOptions {
  health: HealthBook;
  /** The gateways to check now (read before each round). */
  targets: () => Map<ClusterKey, Gateway>;
  connect: (host: string, port: number) => Socket;
  tls?: TunnelTls;
  intervalMs?: number;
  timeoutMs?: number;
}

export function checkGateway(gw: Gateway, connect: (host: string, port: number) => Socket, timeoutMs: number, tls?: TunnelTls, cluster?: ClusterKey): Promise<boolean> {
  const createConnection = gatewayConnection(gw.host, gw.port, connect, tls, cluster)!;
  return new Promise((resolve) => {
    const req = request({ host: gw.host, port: gw.port, path: '/healthz', timeout: timeoutMs, createConnection }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
    req.end();
  });
}

export class HealthChecks {
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  constructor(private readonly o: HealthChecksOptions) {}

  start(): void {
    const round = async () => {
      const targets = [...this.o.targets()];
      await Promise.all(targets.map(async ([key, gw]) => this.o.health.checked(key, await checkGateway(gw, this.o.connect, this.o.timeoutMs ?? 1000, this.o.tls, key))));
      if (!this.#closed) this.#timer = setTimeout(() => void round(), this.o.intervalMs ?? 2000).unref();
    };
    void round();
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }
}
