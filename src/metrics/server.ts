// Serving a registry: `GET /metrics` in the Prometheus text format, on a listener of its own (the gateway's and
// the controller's, the agent's beside its loopback admin endpoint) or inside another server's handler.
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { Registry } from 'prom-client';
import { listen, listenOn } from '../tunnel/splice.js';

/**
 * One registry's renders, shared by the requests that wait for them. A render reads everything (the addon's
 * per-tag counters, every series: hundreds of milliseconds with thousands of services) on the event loop the
 * node proxy and the gateway also serve connections on, and /metrics has no authentication (the agent's is on
 * every address of the node): requests arriving together get one render, and the next render waits, after
 * one ends, so that renders take at most `share` of the time (a 5 ms render: 20 ms; a 500 ms one: 2 s) and at
 * least `minIntervalMs` between starts. An answer is never older than its request: it gets the next render to
 * start.
 */
export interface RenderPacing {
  /** The share of time renders may take under a flood of requests (0..1]. */
  share: number;
  minIntervalMs: number;
}

export const DEFAULT_PACING: RenderPacing = { share: 0.2, minIntervalMs: 0 };

class Renderer {
  #running: Promise<string> | undefined;
  #next: Promise<string> | undefined;
  /** When the next render may start. */
  #notBefore = -Infinity;

  constructor(
    private readonly registry: Registry,
    private readonly pacing: RenderPacing,
  ) {}

  render(): Promise<string> {
    if (this.#next) return this.#next;
    const after = this.#running?.then(
      () => undefined,
      () => undefined,
    );
    const next = (async () => {
      await after;
      const wait = this.#notBefore - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      this.#next = undefined;
      const started = performance.now();
      const running = renderInSlices(this.registry);
      this.#running = running;
      const ended = () => {
        if (this.#running === running) this.#running = undefined;
        const took = performance.now() - started;
        const share = Math.min(1, Math.max(0.01, this.pacing.share));
        this.#notBefore = Math.max(started + this.pacing.minIntervalMs, started + took / share);
      };
      running.then(ended, ended);
      return running;
    })();
    this.#next = next;
    return next;
  }
}

/**
 * The registry's text (as registry.metrics() gives it), family by family, yielding to the event loop between
 * families: with thousands of services a render is many short stalls rather than one long one (5,000 services
 * × 3 clusters: about 250 ms in all).
 */
export async function renderInSlices(registry: Registry): Promise<string> {
  const parts: string[] = [];
  for (const metric of registry.getMetricsAsArray()) {
    parts.push(await registry.getSingleMetricAsString((metric as unknown as { name: string }).name));
    await new Promise((r) => setImmediate(r));
  }
  return `${parts.join('\n\n')}\n`;
}

const renderers = new WeakMap<Registry, Renderer>();

/** The registry's text, from a render that starts after this call (shared with calls meanwhile; see Renderer). */
export function renderMetrics(registry: Registry, pacing: RenderPacing = DEFAULT_PACING): Promise<string> {
  let r = renderers.get(registry);
  if (!r) renderers.set(registry, (r = new Renderer(registry, pacing)));
  return r.render();
}

/** Answers `GET /metrics` (true), or leaves the request to the caller (false). */
export function serveMetrics(registry: Registry, req: IncomingMessage, res: ServerResponse): boolean {
  const path = (req.url ?? '').split('?')[0];
  if (path !== '/metrics') return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('GET /metrics\n');
    return true;
  }
  renderMetrics(registry).then(
    (text) => {
      if (!res.destroyed) res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text);
    },
    (err: Error) => {
      if (!res.destroyed) res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`);
    },
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
