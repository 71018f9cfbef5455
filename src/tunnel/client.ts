// The proxy's end: open a tunnel to a service through a cluster's gateway. Resolves with the raw socket once
// the gateway answered 200 (it has reached an endpoint); rejects with TunnelError otherwise, so the caller
// can try the next cluster before the client has seen anything.
import { request } from 'node:http';
import { type Socket, isIP } from 'node:net';
import { type PeerCertificate, type SecureContext, type TLSSocket, connect as tlsConnect, createSecureContext } from 'node:tls';
import type { ClusterKey } from '../api/flomesh.js';
import { clusterSpiffeId, uriSan } from '../identity/spiffe.js';
import { RECORDS_HEADER, RECORDS_VERSION, recordSeal, sealedTunnels } from './records.js';
import { SOURCE_CLUSTER_HEADER, SOURCE_WORKLOAD_HEADER, type ServiceTarget, TunnelError, type TunnelTls, formatAuthority } from './protocol.js';

export interface TunnelOptions {
  gateway: { host: string; port: number };
  target: ServiceTarget;
  /** This cluster's key, for the gateway's logs and authorisation. */
  sourceCluster: string;
  /** From the start of the TCP connect to the gateway's answer. */
  timeoutMs: number;
  /** Makes the TCP connection to the gateway (the proxy passes one that carries the datapath's skip mark). */
  connect?: (host: string, port: number) => Socket;
  /** TLS to the gateway (mTLS with a client certificate). */
  tls?: TunnelTls;
  /** With cluster identities (`tls.clusterSet`): the cluster the gateway must prove it is. */
  cluster?: ClusterKey;
  /** The calling workload (`namespace/serviceaccount`), when the proxy knows it. */
  workload?: string;
  /**
   * Ask the gateway for sealed records (records.ts) once the tunnel is up; only over mutual TLS with cluster
   * identities, and only when the caller's splicer can carry them. A tunnel that got them is in sealedTunnels.
   */
  records?: boolean;
}

/** The connection to a gateway: TCP from `connect` (or a plain one), wrapped in TLS when configured. */
export function gatewayConnection(
  host: string,
  port: number,
  connect: ((h: string, p: number) => Socket) | undefined,
  tls: TunnelTls | undefined,
  cluster?: ClusterKey,
): (() => Socket) | undefined {
  if (!tls) return connect ? () => connect(host, port) : undefined;
  // With cluster identities: whom we reached is the cluster the import names, whatever address it has.
  const expected = tls.clusterSet && cluster ? clusterSpiffeId(tls.clusterSet, cluster) : undefined;
  const identity = tls.clusterSet
    ? {
        checkServerIdentity: (_host: string, cert: PeerCertificate) => {
          const got = uriSan(cert.subjectaltname);
          if (expected !== undefined && got === expected) return undefined;
          return new Error(`the gateway at ${host}:${port} is ${got ?? 'no cluster'}, not ${expected ?? 'a cluster this route names'}`);
        },
      }
    : {};
  return () => {
    const context = secureContextOf(tls);
    // With cluster identities, a session of this gateway resumed: no certificate to sign or check again (the
    // gateway still judges the certificate the session began with, and its validity now).
    const sessionKey = `${host}:${port}|${expected ?? ''}`;
    const resumable = tls.clusterSet ? sessions.get(context)?.get(sessionKey) : undefined;
    const socket = tlsConnect({
      // `host` also with a socket of our own: without it Node checks the certificate against "localhost".
      ...(connect ? { socket: connect(host, port) } : {}),
      host,
      port,
      // SNI for a name; an IP address is checked against the certificate's IP SANs.
      ...(isIP(host) ? {} : { servername: host }),
      secureContext: context,
      ...(resumable ? { session: resumable } : {}),
      // Always verified: the agent's configuration refuses TLS without a CA (see tlsConfig). (TLS 1.3 only with
      // cluster identities: the secure context says so.)
      rejectUnauthorized: true,
      ...identity,
    });
    if (tls.clusterSet) {
      socket.on('session', (session: Buffer) => {
        let byGateway = sessions.get(context);
        if (!byGateway) sessions.set(context, (byGateway = new Map()));
        // Bounded: one session per gateway; a proxy talks to a few dozen at most.
        if (byGateway.size >= 1024 && !byGateway.has(sessionKey)) byGateway.clear();
        byGateway.set(sessionKey, session);
      });
    }
    return socket;
  };
}

/** The latest TLS session of each gateway, per secure context (a renewed certificate starts afresh). */
const sessions = new WeakMap<SecureContext, Map<string, Buffer>>();

/**
 * One secure context per certificate, key and CA, made again when they change (a renewal updates `tls` in
 * place): parsing the PEM and the CA store for every tunnel cost most of a new tunnel's time.
 */
const contexts = new WeakMap<TunnelTls, { cert?: string; key?: string; ca?: string; context: SecureContext }>();
function secureContextOf(tls: TunnelTls): SecureContext {
  const cached = contexts.get(tls);
  if (cached && cached.cert === tls.cert && cached.key === tls.key && cached.ca === tls.ca) return cached.context;
  const context = createSecureContext({
    ...(tls.ca ? { ca: tls.ca } : {}),
    ...(tls.cert ? { cert: tls.cert } : {}),
    ...(tls.key ? { key: tls.key } : {}),
    ...(tls.clusterSet ? { minVersion: 'TLSv1.3' as const } : {}),
  });
  contexts.set(tls, { ...(tls.cert ? { cert: tls.cert } : {}), ...(tls.key ? { key: tls.key } : {}), ...(tls.ca ? { ca: tls.ca } : {}), context });
  return context;
}

export function openTunnel(o: TunnelOptions): Promise<Socket> {
  const authority = formatAuthority(o.target);
  const where = `${o.gateway.host}:${o.gateway.port}`;
  const createConnection = gatewayConnection(o.gateway.host, o.gateway.port, o.connect, o.tls, o.cluster);
  const askRecords = Boolean(o.records && o.tls?.clusterSet);
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err: TunnelError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      reject(err);
    };
    const req = request({
      host: o.gateway.host,
      port: o.gateway.port,
      method: 'CONNECT',
      path: authority,
      headers: {
        host: authority,
        [SOURCE_CLUSTER_HEADER]: o.sourceCluster,
        ...(o.workload ? { [SOURCE_WORKLOAD_HEADER]: o.workload } : {}),
        ...(askRecords ? { [RECORDS_HEADER]: RECORDS_VERSION } : {}),
      },
      // No agent: Node uses createConnection only then (with `agent: false` it makes a plain socket itself).
      ...(createConnection ? { createConnection } : { agent: false }),
    });
    const timer = setTimeout(() => fail(new TunnelError('ECNET_TUNNEL_TIMEOUT', `gateway ${where} did not answer CONNECT ${authority} within ${o.timeoutMs} ms`)), o.timeoutMs);
    req.on('connect', (res, socket, head) => {
      if (settled) return void socket.destroy();
      settled = true;
      clearTimeout(timer);
      if (res.statusCode !== 200) {
        socket.destroy();
        return reject(
          new TunnelError('ECNET_TUNNEL_REFUSED', `gateway ${where} answered ${res.statusCode} ${res.statusMessage ?? ''} to CONNECT ${authority}`.trim(), {
            status: res.statusCode ?? 0,
          }),
        );
      }
      if (askRecords && res.headers[RECORDS_HEADER] === RECORDS_VERSION) {
        // The gateway sends its first record only after ours, so nothing may follow its 200 here.
        if (head.length) {
          socket.destroy();
          return reject(new TunnelError('ECNET_TUNNEL_PROTOCOL', `gateway ${where} sent bytes after agreeing to sealed records`));
        }
        sealedTunnels.set(socket, recordSeal(socket as TLSSocket, false));
      }
      // Bytes the endpoint sent before the stream was handed over belong to the application.
      if (head.length) socket.unshift(head);
      socket.setNoDelay(true);
      resolve(socket);
    });
    req.on('response', (res) => {
      res.resume();
      fail(new TunnelError('ECNET_TUNNEL_PROTOCOL', `gateway ${where} answered CONNECT with a plain HTTP response ${res.statusCode}`, { status: res.statusCode ?? 0 }));
    });
    req.on('error', (cause) => fail(new TunnelError('ECNET_TUNNEL_UNREACHABLE', `gateway ${where}: ${cause.message}`, { cause })));
    req.end();
  });
}
