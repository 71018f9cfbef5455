// The hand-over channel between an agent and its successor on one node: a unix stream socket (the addon's
// descriptor passing, native/src/fdpass.cc) carrying JSON messages, each with the descriptors it gives. The one
// owner of the channel's descriptor; received descriptors belong to whoever takes the message.
import { EcnetError } from '../errors.js';
import { type NativeHandover, loadNative } from '../native/addon.js';

export class HandoverError extends EcnetError<'ECNET_HANDOVER'> {
  /** The other agent said `abort`: it keeps (or takes back) everything not committed. */
  readonly aborted: boolean;
  constructor(message: string, options?: { cause?: unknown; aborted?: boolean }) {
    super('ECNET_HANDOVER', message, options);
    this.aborted = options?.aborted ?? false;
  }
}

/** One message: its body and the descriptors that came with it. */
export interface Message<T = Record<string, unknown>> {
  body: T & { type: string };
  fds: number[];
}

// Buffers travel as base64 inside the JSON.
function replacer(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const raw = this[key];
  return Buffer.isBuffer(raw) ? { $b64: raw.toString('base64') } : value;
}
function reviver(_key: string, value: unknown): unknown {
  if (value && typeof value === 'object' && typeof (value as { $b64?: unknown }).$b64 === 'string') return Buffer.from((value as { $b64: string }).$b64, 'base64');
  return value;
}

export class HandoverChannel {
  #fd: number;
  readonly #native: NativeHandover;

  private constructor(fd: number, native: NativeHandover) {
    this.#fd = fd;
    this.#native = native;
  }

  /** Connects to a running agent's hand-over socket; undefined when none answers there. */
  static connect(path: string): HandoverChannel | undefined {
    const native = loadNative().handover;
    let fd: number;
    try {
      fd = native.connect(path);
    } catch (err) {
      const code = (err as { errnoName?: string }).errnoName;
      if (code === 'ENOENT' || code === 'ECONNREFUSED') return undefined;
      throw new HandoverError(`cannot reach the hand-over socket ${path}`, { cause: err });
    }
    const channel = new HandoverChannel(fd, native);
    channel.#requireSameUser('the agent listening there');
    return channel;
  }

  /** Only a process of this one's user (root, for the agent) may give or take a node's connections. */
  #requireSameUser(who: string): void {
    const uid = this.#native.peerUid(this.#fd);
    const mine = process.getuid?.() ?? uid;
    if (uid === mine) return;
    this.close();
    throw new HandoverError(`hand-over refused: ${who} runs as uid ${uid}, not ${mine}`);
  }

  /** @internal a connection accepted by HandoverListener. */
  static adopt(fd: number): HandoverChannel {
    return new HandoverChannel(fd, loadNative().handover);
  }

  /** @internal throws (and closes) unless the peer is a process of this one's user. */
  requireSameUser(): void {
    this.#requireSameUser('the process asking for this node');
  }

  send(body: { type: string } & Record<string, unknown>, fds: number[] = [], timeoutMs = 5_000): void {
    if (this.#fd < 0) throw new HandoverError('the hand-over channel is closed');
    try {
      this.#native.send(this.#fd, Buffer.from(JSON.stringify(body, replacer)), fds, timeoutMs);
    } catch (cause) {
      throw new HandoverError(`hand-over: sending ${body.type} failed`, { cause });
    }
  }

  /**
   * The next message, of one of `types` (else a HandoverError), within `timeoutMs`; its descriptors are the
   * caller's. Waits without blocking the event loop (polling every 10 ms), then reads the message whole.
   */
  async recv<T>(types: string | string[], timeoutMs = 5_000): Promise<Message<T>> {
    const want = Array.isArray(types) ? types : [types];
    const type = want.join(' or ');
    const deadline = Date.now() + timeoutMs;
    while (this.#fd >= 0 && !this.#native.readable(this.#fd, 0)) {
      if (Date.now() >= deadline) throw new HandoverError(`hand-over: no ${type} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
    if (this.#fd < 0) throw new HandoverError('the hand-over channel is closed');
    let m: { bytes: Buffer; fds: number[] } | null;
    try {
      m = this.#native.recv(this.#fd, 5_000);
    } catch (cause) {
      throw new HandoverError(`hand-over: waiting for ${type} failed`, { cause });
    }
    if (!m) throw new HandoverError(`hand-over: the other agent closed the channel before ${type}`);
    let body: T & { type: string };
    try {
      body = JSON.parse(m.bytes.toString(), reviver) as T & { type: string };
    } catch (cause) {
      this.closeFds(m.fds);
      throw new HandoverError(`hand-over: a message that is not JSON (waiting for ${type})`, { cause });
    }
    if (!want.includes(body?.type)) {
      this.closeFds(m.fds);
      const aborted = body?.type === 'abort';
      const why = aborted ? `: ${String((body as { reason?: unknown }).reason)}` : '';
      throw new HandoverError(`hand-over: expected ${type}, got ${String(body?.type)}${why}`, { aborted });
    }
    return { body, fds: m.fds };
  }

  /** A duplicate of `fd`, the caller's to close (with closeFds). */
  dup(fd: number): number {
    return this.#native.dup(fd);
  }

  closeFds(fds: number[]): void {
    for (const fd of fds) this.#native.close(fd);
  }

  close(): void {
    if (this.#fd < 0) return;
    this.#native.close(this.#fd);
    this.#fd = -1;
  }
}

/** The hand-over socket a running agent listens on; polled (a hand-over happens once per process). */
export class HandoverListener {
  #fd: number;
  readonly #native: NativeHandover;
  readonly #timer: NodeJS.Timeout;

  constructor(path: string, onChannel: (c: HandoverChannel) => void, pollMs = 100, onRefused?: (err: HandoverError) => void) {
    this.#native = loadNative().handover;
    try {
      this.#fd = this.#native.listen(path);
    } catch (cause) {
      throw new HandoverError(`cannot listen on the hand-over socket ${path}`, { cause });
    }
    this.#timer = setInterval(() => {
      if (this.#fd < 0) return;
      const fd = this.#native.accept(this.#fd);
      if (fd < 0) return;
      const channel = HandoverChannel.adopt(fd);
      try {
        channel.requireSameUser();
      } catch (err) {
        onRefused?.(err as HandoverError);
        return;
      }
      onChannel(channel);
    }, pollMs);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
    if (this.#fd < 0) return;
    this.#native.close(this.#fd);
    this.#fd = -1;
  }
}
