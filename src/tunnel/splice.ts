// Bytes both ways between two sockets, as the proxy and the gateway both need: pipe gives backpressure and
// passes a half-close on (both sockets allow half-open); an error or `idleMs` without a byte closes both.
import type { Server, Socket } from 'node:net';

/** Splices `a` and `b`; `onClose` runs once, when both are done. */
export function splice(a: Socket, b: Socket, idleMs: number, onClose: () => void): void {
  let done = false;
  const close = () => {
    if (done) return;
    done = true;
    a.destroy();
    b.destroy();
    onClose();
  };
  for (const s of [a, b]) {
    s.setNoDelay(true);
    s.setTimeout(idleMs, close);
    s.on('error', close);
    s.on('close', close);
  }
  a.pipe(b);
  b.pipe(a);
  a.resume();
}

/** Listens on host:port; resolves once it accepts connections, rejects if it cannot. */
export function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** A TCP connection made by `connect`, or the error that stopped it within `ms`. */
export function connectWithin(connect: () => Socket, ms: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect();
    const timer = setTimeout(() => s.destroy(new Error(`no answer within ${ms} ms`)), ms);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
