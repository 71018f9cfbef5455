// Serving a registry: `GET /metrics` in the Prometheus text format, on a listener of its own (the gateway's and
// the controller's, the agent's beside its loopback admin endpoint) or inside another server's handler.
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { Registry } from 'prom-client';
import { listen, listenOn } from '../tunnel/splice.js';

/** Answers `GET /metrics` (true), or leaves the request to the caller (false). */
export function serveMetrics(registry: Registry, req: IncomingMessage, res: ServerResponse): boolean {
  const path = (req.url ?? '').split('?')[0];
  if (path !== '/metrics') return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('GET /metrics\n');
    return true;
  }
  registry.metrics().then(
    (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
    (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`),
  );
  return true;
}

export interface MetricsServerOptions {
  host: string;
  port: number;
  /** A listening socket handed over by a predecessor, used instead of binding host:port. */
  listenFd?: number;
  /** Other paths (the gateway's and the controller's /healthz, /readyz); undefined: 404. */
  extra?: (req: IncomingMessage, res: ServerResponse) => boolean;
}

/** A listener for /metrics (and `extra`); resolves once it accepts connections. */
export async function startMetricsServer(registry: Registry, o: MetricsServerOptions): Promise<Server> {
  const server = createServer((req, res) => {
    try {
      if (serveMetrics(registry, req, res) || o.extra?.(req, res)) return;
      res.writeHead(404, { 'content-type': 'text/plain' }).end('no such path; try /metrics\n');
    } catch (err) {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`);
      else res.destroy();
    }
  });
  // Scrapers keep their connection; a slow one does not hold a request head open for long.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  if (o.listenFd !== undefined) await listenOn(server as unknown as import('node:net').Server, o.listenFd);
  else await listen(server as unknown as import('node:net').Server, o.host, o.port);
  return server;
}
