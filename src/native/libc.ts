// The plain libc calls ecnet makes (mount, setns, socket options, the monotonic clock), through ffi-rs: no C++ wrapper for what is one syscall.
import { DataType, load, open } from 'ffi-rs';
import { BpfError } from './errors.js';

let opened = false;
function libc(): void {
  if (!opened) {
    open({ library: 'libc', path: 'libc.so.6' });
    opened = true;
  }
}

type Param = DataType.I32 | DataType.String | DataType.U8Array | DataType.U64;
function call(funcName: string, paramsType: Param[], paramsValue: unknown[]): number {
  libc();
  const r = load({
    library: 'libc',
    funcName,
    retType: DataType.I32,
    paramsType,
    paramsValue,
    errno: true,
  }) as unknown as { value: number; errnoCode: number };
  if (r.value < 0) throw new BpfError('system call failed', { op: funcName, errno: r.errnoCode });
  return r.value;
}

export const AF_INET = 2;
export const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_MARK = 36;
const SO_COOKIE = 57;
const SO_ERROR = 4;
const SO_LINGER = 13;

/** socket(family, SOCK_STREAM|SOCK_CLOEXEC, 0); the caller owns the fd. */
export function tcpSocket(family: number): number {
  return call('socket', [DataType.I32, DataType.I32, DataType.I32], [family, SOCK_STREAM | SOCK_CLOEXEC, 0]);
}

/** setsockopt(SO_MARK); needs CAP_NET_ADMIN. */
export function setMark(fd: number, mark: number): void {
  const v = Buffer.alloc(4);
  v.writeUInt32LE(mark >>> 0);
  call('setsockopt', [DataType.I32, DataType.I32, DataType.I32, DataType.U8Array, DataType.I32], [fd, SOL_SOCKET, SO_MARK, v, 4]);
}

/** getsockopt(SOL_SOCKET, name) into a buffer of `size` bytes. */
function socketOption(fd: number, name: number, size: number): Buffer {
  const v = Buffer.alloc(size);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(size);
  call('getsockopt', [DataType.I32, DataType.I32, DataType.I32, DataType.U8Array, DataType.U8Array], [fd, SOL_SOCKET, name, v, len]);
  return v;
}

/** getsockopt(SO_COOKIE): the kernel's id of a socket, as the BPF programs see it. */
export function socketCookie(fd: number): bigint {
  return socketOption(fd, SO_COOKIE, 8).readBigUInt64LE(0);
}

/**
 * getsockopt(SO_ERROR): the socket's pending error (an errno, 0 for none), cleared by reading it. libuv reports
 * a reset that arrives after a partial read as a plain end of stream; this tells the two apart.
 */
export function socketError(fd: number): number {
  return socketOption(fd, SO_ERROR, 4).readInt32LE(0);
}

/** setsockopt(SO_LINGER, on, 0 s): closing the socket then sends a reset instead of a FIN. */
export function setLingerZero(fd: number): void {
  const v = Buffer.alloc(8); // struct linger { int l_onoff; int l_linger; }
  v.writeInt32LE(1, 0);
  v.writeInt32LE(0, 4);
  call('setsockopt', [DataType.I32, DataType.I32, DataType.I32, DataType.U8Array, DataType.I32], [fd, SOL_SOCKET, SO_LINGER, v, 8]);
}

/** close(fd) for an fd nothing else owns yet. */
export function closeFd(fd: number): void {
  call('close', [DataType.I32], [fd]);
}

/** setns(fd, CLONE_NEWNET): moves the calling thread into the network namespace behind `fd`. */
export function setNetns(fd: number): void {
  const CLONE_NEWNET = 0x40000000;
  call('setns', [DataType.I32, DataType.I32], [fd, CLONE_NEWNET]);
}

/**
 * clock_gettime(CLOCK_MONOTONIC) in ns, as this process's time namespace shows it. About 10 µs through ffi-rs:
 * not for a hot path (src/bpf/ktime.ts reads it once).
 */
export function clockMonotonicNs(): bigint {
  const CLOCK_MONOTONIC = 1;
  const ts = Buffer.alloc(16); // struct timespec { time_t tv_sec; long tv_nsec; } on 64-bit Linux
  call('clock_gettime', [DataType.I32, DataType.U8Array], [CLOCK_MONOTONIC, ts]);
  return ts.readBigInt64LE(0) * 1_000_000_000n + ts.readBigInt64LE(8);
}

/** mount -t bpf bpf DIR */
export function mountBpffs(dir: string): void {
  call('mount', [DataType.String, DataType.String, DataType.String, DataType.U64, DataType.String], ['bpf', dir, 'bpf', 0, '']);
}
