// The agent's admin endpoint (loopback by default): /healthz for the DaemonSet's probes, /routes for
// `ecnet routes` — every redirected service, its targets with their health and identity, and what the policy
// decides now; /identity for `ecnet identity` — the certificate the node's tunnels present, and its expiry;
// /metrics for `ecnet top` and Prometheus (which scrapes the --metrics listener: this one is loopback).
import { type Server, createServer } from 'node:http';
import type { IdentityFiles } from '../identity/files.js';
import { describe, renewalOverdue } from '../identity/pki.js';
import { clusterSpiffeId } from '../identity/spiffe.js';
import type { NodeProxy } from '../proxy/proxy.js';
import type { Registry } from '../metrics/registry.js';
import { serveMetrics } from '../metrics/server.js';
import { listen, listenOn } from '../tunnel/splice.js';
import type { Agent, RouteMap } from './agent.js';
import { redirectId } from './desired.js';

export interface RouteReport {
  address: string;
  service: string;
  namespace: string;
  port: number;
  /** The id the datapath's records carry for this address (redirected ones only). */
  id?: number;
  policy: string;
  /**
   * `healthy`/`health`: of this service at that cluster (its gateway reachable, the service ready there, not
   * ejected); `reachable`: whether the cluster's gateway answered its last active check (any service).
   * `identity`: the SPIFFE ID the target's gateway must present (mTLS with cluster identities).
   */
  targets: { clusterKey: string; gateway: string; weight: number | undefined; healthy: boolean; health: string; reachable: boolean; identity?: string }[];
  localEndpoints: string[];
  /** The candidates in the order a connection would try them now (a fresh draw for ActiveActive). */
  decision: string[];
  /** Whether the datapath sends this address to the node proxy; when not, kube-proxy serves it (decision `kube-proxy`). */
  redirected: boolean;
}

/** What the agent's tunnels run on: mTLS with this cluster's identity, TLS with PEM files, or plain TCP. */
export type IdentityReport =
  | { mode: 'mtls'; cluster: string; spiffeId: string; clusterSet: string; notBefore: string; notAfter: string; issuer: string; serial: string }
  | { mode: 'tls-files' | 'plain' };

export function identityReport(identity: IdentityFiles | undefined, tlsFiles: boolean): IdentityReport {
  if (!identity) return { mode: tlsFiles ? 'tls-files' : 'plain' };
  const d = describe(identity.tls.cert);
  return { mode: 'mtls', cluster: identity.cluster, spiffeId: d.uri ?? '', clusterSet: identity.clusterSet, notBefore: d.notBefore.toISOString(), notAfter: d.notAfter.toISOString(), issuer: d.issuer, serial: d.serial };
}

export function routeReports(routes: RouteMap, proxy: NodeProxy, now: number, clusterSet?: string): RouteReport[] {
  const kept = new Set(routes.keptEntries().map(([a]) => a));
  return [...routes.entries(), ...routes.keptEntries()].map(([address, r]) => {
    const sep = address.lastIndexOf(':');
    const redirected = !kept.has(address);
    const { candidates } = redirected ? proxy.decide(address.slice(0, sep), Number(address.slice(sep + 1))) : { candidates: [] };
    return {
      address,
      service: r.service,
      namespace: r.namespace,
      port: r.port,
      ...(redirected ? { id: redirectId(`${r.namespace}/${r.service}`, r.port) } : {}),
      policy: r.policy?.lbType ?? 'Locality (no policy)',
      targets: r.exporters.map((e) => {
        const h = proxy.health.view(e.clusterKey, `${r.namespace}/${r.service}`, now);
        return {
          clusterKey: e.clusterKey,
          gateway: `${e.gateway.host}:${e.gateway.port}`,
          weight: r.policy?.targets?.find((t) => t.clusterKey === e.clusterKey)?.weight,
          healthy: h.healthy,
          health: h.reason,
          reachable: proxy.health.isReachable(e.clusterKey),
          ...(clusterSet ? { identity: clusterSpiffeId(clusterSet, e.clusterKey) } : {}),
        };
      }),
      localEndpoints: r.localEndpoints.map((e) => `${e.ip}:${e.port}`),
      decision: redirected ? candidates.map((c) => (c.kind === 'local' ? 'local' : c.clusterKey)) : ['kube-proxy'],
      redirected,
    };
  });
}

export async function startAdmin(host: string, port: number, agent: Agent, routes: RouteMap, proxy: NodeProxy, identity?: IdentityFiles, tlsFiles = false, listenFd?: number, registry?: Registry): Promise<Server> {
  const server = createServer((req, res) => {
    if (registry && serveMetrics(registry, req, res)) return;
    const json = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(`${JSON.stringify(body, null, 2)}\n`);
    if (req.url === '/healthz') {
      const ok = agent.status.synced && agent.status.lastError === undefined;
      // A certificate past its renewal time means the controller has not renewed it: said, not failed (a
      // restart would not help, and the tunnels still work until it expires).
      const cert = identity ? { notAfter: identity.notAfter.toISOString(), renewalOverdue: renewalOverdue(identity.tls.cert) } : undefined;
      // pid: which agent answers (after a hand-over, the successor answers on the same port).
      return json(ok ? 200 : 503, { ok, pid: process.pid, ...agent.status, proxy: proxy.stats, ...(cert ? { identity: cert } : {}) });
    }
    if (req.url === '/routes') return json(200, routeReports(routes, proxy, Date.now(), identity?.clusterSet));
    if (req.url === '/identity') return json(200, identityReport(identity, tlsFiles));
    json(404, { error: `no ${req.url}; try /healthz, /routes, /identity or /metrics` });
  });
  // A predecessor's listening socket when one was handed over (the probes never see the port closed).
  if (listenFd !== undefined) await listenOn(server as unknown as import('node:net').Server, listenFd);
  else await listen(server as unknown as import('node:net').Server, host, port);
  return server;
}
