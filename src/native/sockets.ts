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

/** The kernel socket cookie of a connected net.Socket (the key of ecnet_sock_dst). */
export function cookieOf(socket: net.Socket): bigint {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) throw new Error('socket has no file descriptor');
  return socketCookie(fd);
}
