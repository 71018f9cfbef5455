// Upstream sockets the datapath must not redirect: SO_MARK has to be on the socket before connect(),
// which Node's net.connect() gives no hook for, so the socket is made here and handed to libuv.
import net from 'node:net';
import { AF_INET, AF_INET6, closeFd, setMark, socketCookie, tcpSocket } from './libc.js';

export interface MarkedConnectOptions {
  host: string;
  port: number;
  /** The SO_MARK bits the connect programs skip (config defaults.proxyMark). */
  mark: number;
}

/** Like net.connect({host, port}), on a socket carrying `mark`. The host must be an IP address. */
export function connectMarked(opts: MarkedConnectOptions): net.Socket {
  const family = net.isIPv6(opts.host) ? AF_INET6 : AF_INET;
  const fd = tcpSocket(family);
  let socket: net.Socket;
  try {
    setMark(fd, opts.mark);
    socket = new net.Socket({ fd, readable: true, writable: true });
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  return socket.connect({ host: opts.host, port: opts.port });
}

/**
 * The descriptor under a Node socket or listening server (its libuv handle's; a TLS socket's is its TCP
 * socket's), or undefined when it has none (closed, or not backed by one).
 */
export function descriptorOf(x: net.Socket | net.Server | { _handle?: unknown }): number | undefined {
  const fd = (x as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** The TCP socket under a server-side TLS socket (the one a server's 'connection' gave), or the socket itself. */
export function tcpSocketOf(s: net.Socket): net.Socket {
  return (s as unknown as { _parent?: net.Socket })._parent ?? s;
}

/** The kernel socket cookie of a connected net.Socket (the key of ecnet_sock_dst). */
export function cookieOf(socket: net.Socket): bigint {
  const fd = descriptorOf(socket);
  if (fd === undefined) throw new Error('socket has no file descriptor');
  return socketCookie(fd);
}
