// An agent hands its node over to its successor (an upgrade: the DaemonSet surges a new pod next to the old
// one) without a failed or a cut connection:
//   successor → hello
//   running   → listeners: the proxy's listening sockets, the admin one and the metrics one (descriptors), and its routes
//   successor   accepts on them at once (connections queue in the same backlog: none is refused) → listening
//   running     stops accepting, waits for connections still being set up, takes every kernel-spliced pair
//               off its splicer (plain and sealed: sockets, pipes with bytes in flight, cipher state) →
//   running   → pairs (batches, with their descriptors)       successor adopts them → adopted (the ids)
//   running   → done; it stops writing the datapath and only drains what could not move (stream pairs).
// Whatever fails before the successor confirmed stays with the running agent (pairs are restored to its
// splicer, listeners kept): a failed hand-over falls back to draining, never to dropping. docs/restarts.md.
import type { Server } from 'node:http';
import type { Route } from '../proxy/proxy.js';
import type { NativeDetachedPair, NativePairState } from '../native/addon.js';
import type { Logger } from '../logger.js';
import { HandoverChannel, HandoverError } from './channel.js';
import { listenOn } from '../tunnel/splice.js';
import { descriptorOf } from '../native/sockets.js';

const VERSION = 1;
/** Descriptors per message (SCM_RIGHTS carries at most 253). */
const FDS_PER_MESSAGE = 240;

/** What the running agent gives. */
export interface Giver {
  proxy: {
    listenerFds(): { fd: number; fd6?: number };
    stopAccepting(): void;
    /** Accepts again on (duplicates of) the listening sockets it gave: a hand-over failed after they moved. */
    resumeAccepting(fds: { fd: number; fd6?: number }): Promise<void>;
    settled(ms: number): Promise<void>;
    tunnels: { detach(): NativeDetachedPair[]; handedOver(ids: number[]): void; restore(ids: number[]): void };
  };
  admin: Server;
  /** The metrics listener (`--metrics`), when there is one. */
  metrics?: Server | undefined;
  routes(): [string, Route][];
  /**
   * What a pair's tag stands for (the metrics' service and cluster): tags are each process's own numbers, so a
   * pair goes over with this name and the successor counts it under its own tag of the same name.
   */
  tagName?(tag: number): string | undefined;
  /** Stops reconciling: the successor writes the datapath from now on. */
  retire(): Promise<void>;
  log: Logger;
}

const fdOf = (s: Server) => descriptorOf(s) ?? -1;
/** Bytes of state per message, besides the descriptors. */
const BYTES_PER_MESSAGE = 8 << 20;
const stateBytes = (p: NativeDetachedPair) => p.dirs.reduce((n, d) => n + d.pending.length + (d.records?.length ?? 0) + (d.plain?.length ?? 0), 0);

/**
 * Serves one successor on `channel`. True when it took over; false when not, and then everything is here again:
 * pairs the successor did not take are back on this splicer, and this agent accepts on its listening sockets
 * again (beside the successor, if it lives).
 */
export async function giveTo(channel: HandoverChannel, g: Giver): Promise<boolean> {
  const started = Date.now();
  let detached: NativeDetachedPair[] = [];
  const given = new Set<number>();
  let kept: { fd: number; fd6?: number; admin: number; metrics?: number } | undefined;
  try {
    const hello = await channel.recv<{ version: number; pid?: number }>('hello');
    if (hello.body.version !== VERSION) throw new HandoverError(`hand-over version ${String(hello.body.version)} is not ${VERSION}`);
    g.log.info({ successor: hello.body.pid }, 'hand-over: a successor asks for this node');
    const l = g.proxy.listenerFds();
    const fds = [l.fd, ...(l.fd6 !== undefined ? [l.fd6] : []), fdOf(g.admin), ...(g.metrics ? [fdOf(g.metrics)] : [])];
    if (fds.some((fd) => fd < 0)) throw new HandoverError('a listening socket has no descriptor');
    channel.send({ type: 'listeners', proxy6: l.fd6 !== undefined, metrics: Boolean(g.metrics), routes: g.routes() }, fds);
    await channel.recv('listening', 10_000);
    // Copies of our own, to accept on again should anything fail from here.
    kept = { fd: channel.dup(l.fd), ...(l.fd6 !== undefined ? { fd6: channel.dup(l.fd6) } : {}), admin: channel.dup(fdOf(g.admin)), ...(g.metrics ? { metrics: channel.dup(fdOf(g.metrics)) } : {}) };
    // The successor accepts now; this agent finishes what it accepted and gives the established pairs.
    g.proxy.stopAccepting();
    g.admin.close();
    g.admin.closeIdleConnections();
    g.metrics?.close();
    g.metrics?.closeIdleConnections();
    const refusedIds = new Set<number>();
    /** Offers `pairs` in batches; what the successor commits to is handed over, the rest restored here. */
    const offer = async (pairs: NativeDetachedPair[]) => {
      for (let i = 0; i < pairs.length; ) {
        const batch: NativeDetachedPair[] = [];
        let n = 0;
        let bytes = 0;
        while (i < pairs.length && (batch.length === 0 || (n + pairs[i]!.fds.length <= FDS_PER_MESSAGE && bytes + stateBytes(pairs[i]!) <= BYTES_PER_MESSAGE))) {
          n += pairs[i]!.fds.length;
          bytes += stateBytes(pairs[i]!);
          batch.push(pairs[i++]!);
        }
        const named = (tag: number | undefined) => (tag !== undefined && tag >= 0 ? g.tagName?.(tag) : undefined);
        channel.send({ type: 'pairs', pairs: batch.map(({ fds, ...state }) => ({ ...state, fdCount: fds.length, tagName: named(state.tag) })) }, batch.flatMap((p) => p.fds), 10_000);
        const ack = await channel.recv<{ ids: number[] }>('adopted', 10_000);
        const ids = ack.body.ids.filter((id) => batch.some((p) => p.id === id));
        // The successor holds them parked; once told, it pumps them, and these copies close.
        channel.send({ type: 'commit', ids });
        g.proxy.tunnels.handedOver(ids);
        for (const id of ids) given.add(id);
        // Pairs the successor could not take stay here.
        const refused = batch.filter((p) => !given.has(p.id)).map((p) => p.id);
        for (const id of refused) refusedIds.add(id);
        if (refused.length) g.proxy.tunnels.restore(refused);
      }
    };
    await g.proxy.settled(6_000);
    detached = g.proxy.tunnels.detach();
    await offer(detached);
    // Connections that were still being set up then (a slow gateway) are offered once more when they are.
    await g.proxy.settled(6_000);
    const late = g.proxy.tunnels.detach();
    const keep = late.filter((p) => refusedIds.has(p.id)).map((p) => p.id);
    if (keep.length) g.proxy.tunnels.restore(keep);
    const fresh = late.filter((p) => !refusedIds.has(p.id));
    detached = [...detached, ...fresh];
    await offer(fresh);
    channel.send({ type: 'done' });
    await g.retire();
    channel.closeFds([kept.fd, ...(kept.fd6 !== undefined ? [kept.fd6] : []), kept.admin, ...(kept.metrics !== undefined ? [kept.metrics] : [])]);
    g.log.info({ pairs: given.size, ms: Date.now() - started }, 'hand-over: done; this agent only drains what could not move');
    return true;
  } catch (err) {
    const back = detached.map((p) => p.id).filter((id) => !given.has(id));
    if (back.length) g.proxy.tunnels.restore(back);
    try {
      // The successor drops what it parked: nobody but this agent pumps those pairs.
      channel.send({ type: 'abort', reason: (err as Error).message });
    } catch {
      // the successor is gone
    }
    if (kept) {
      try {
        await g.proxy.resumeAccepting({ fd: kept.fd, ...(kept.fd6 !== undefined ? { fd6: kept.fd6 } : {}) });
        await listenOn(g.admin as unknown as import('node:net').Server, kept.admin);
        if (g.metrics && kept.metrics !== undefined) await listenOn(g.metrics as unknown as import('node:net').Server, kept.metrics);
      } catch (e) {
        g.log.error({ err: e }, 'hand-over: could not accept again on the listening sockets');
      }
    }
    g.log.warn({ err, restored: back.length, listenersKept: Boolean(kept) }, 'hand-over failed: what was not taken stays here');
    return false;
  } finally {
    channel.close();
  }
}

/** What a successor takes: the listening sockets (descriptors it now owns) and the routes of its predecessor. */
export interface Taken {
  /** `metrics`: the predecessor's metrics listener, when it had one. */
  listeners: { fd: number; fd6?: number; admin: number; metrics?: number };
  routes: [string, Route][];
  /**
   * Confirms the listeners are in use and takes the pairs: each is adopted parked (`adopt` throws to refuse
   * one), then pumped once the predecessor has let go of it (`start`), or let go (`drop`) when the predecessor
   * keeps it. Never throws: what went wrong is in `error`.
   */
  finish(pairs: { adopt: (state: NativePairState & { tagName?: string }, fds: number[]) => number; start: (ids: number[]) => void; drop: (ids: number[]) => void }): Promise<{ pairs: number; refused: number; error?: Error }>;
  /** Gives up before finish (the listeners' descriptors are closed; the running agent keeps everything). */
  abort(reason: string): void;
  /** Closes a listener's descriptor this agent has no use for (an IPv6 one, without IPv6 here). */
  discard(fd: number): void;
}
/** Asks the agent running at `path` for the node; undefined when none answers there. */
export async function takeOver(path: string, log: Logger): Promise<Taken | undefined> {
  const channel = HandoverChannel.connect(path);
  if (!channel) return undefined;
  let m;
  try {
    channel.send({ type: 'hello', version: VERSION, pid: process.pid });
    m = await channel.recv<{ proxy6: boolean; metrics?: boolean; routes: [string, Route][] }>('listeners', 10_000);
  } catch (err) {
    channel.close();
    throw err;
  }
  const [fd, ...rest] = m.fds;
  const fd6 = m.body.proxy6 ? rest.shift() : undefined;
  const admin = rest.shift();
  const metrics = m.body.metrics ? rest.shift() : undefined;
  if (fd === undefined || admin === undefined || (m.body.metrics && metrics === undefined)) {
    channel.closeFds(m.fds);
    channel.close();
    throw new HandoverError('hand-over: the listeners came without their descriptors');
  }
  log.info({ routes: m.body.routes.length }, 'hand-over: took the listening sockets and the routes');
  return {
    listeners: { fd, ...(fd6 !== undefined ? { fd6 } : {}), admin, ...(metrics !== undefined ? { metrics } : {}) },
    routes: m.body.routes,
    discard: (fd) => channel.closeFds([fd]),
    abort: (reason) => {
      try {
        channel.send({ type: 'abort', reason });
      } catch {
        // gone
      }
      channel.closeFds(m.fds);
      channel.close();
    },
    finish: async (t) => {
      let pairs = 0;
      let refused = 0;
      // Adopted, not yet pumped: the predecessor's id of each pair → its id here.
      const parked = new Map<number, number>();
      try {
        channel.send({ type: 'listening' });
        for (;;) {
          const msg = await channel.recv<{ pairs?: (NativePairState & { id: number; fdCount: number })[]; ids?: number[] }>(['pairs', 'commit', 'done'], 20_000);
          if (msg.body.type === 'done') break;
          if (msg.body.type === 'commit') {
            // The predecessor has let go of these: ours to pump. Any other parked one it keeps.
            const ids = new Set(msg.body.ids ?? []);
            const go = [...parked].filter(([theirs]) => ids.has(theirs)).map(([, ours]) => ours);
            t.start(go);
            t.drop([...parked].filter(([theirs]) => !ids.has(theirs)).map(([, ours]) => ours));
            pairs += go.length;
            parked.clear();
            continue;
          }
          const ids: number[] = [];
          let at = 0;
          for (const p of msg.body.pairs ?? []) {
            const fds = msg.fds.slice(at, at + p.fdCount);
            at += p.fdCount;
            try {
              parked.set(p.id, t.adopt(p, fds));
              ids.push(p.id);
            } catch (err) {
              refused++;
              log.warn({ err }, 'hand-over: a pair could not be adopted; the predecessor keeps it');
            }
          }
          // Ours are dups now (or stay the predecessor's): these copies close.
          channel.closeFds(msg.fds);
          channel.send({ type: 'adopted', ids });
        }
        return { pairs, refused };
      } catch (err) {
        // An abort: the predecessor keeps what is parked here. The channel's end without one: the predecessor
        // is gone, and nobody but this agent can carry them on.
        const aborted = err instanceof HandoverError && err.aborted;
        const ours = [...parked.values()];
        if (aborted) t.drop(ours);
        else t.start(ours);
        if (!aborted) pairs += ours.length;
        log.warn({ err, parked: ours.length, kept: !aborted }, 'hand-over interrupted');
        return { pairs, refused, error: err as Error };
      } finally {
        channel.close();
      }
    },
  };
}
