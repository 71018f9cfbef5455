// What the node proxy's and the gateway's native fronts share (native/src/front.h): starting it on the kernel
// splicer's thread, pausing and closing it, and the sockets it hands to JavaScript, each with its slot.
import { Socket, type SocketConstructorOpts } from 'node:net';
import type { NativeEndpointFailure, NativeFrontHanded, NativeFrontOptions } from '../native/addon.js';
import type { KernelSplicer } from '../native/kernel-splice.js';
import { closeFd } from '../native/libc.js';

export abstract class Front {
  protected readonly splicer: KernelSplicer;
  /** Connections handed to JavaScript that reached it (the front counts those it handed). */
  #received = 0;

  /**
   * Starts the front; `report` gets each batch of handed connections (as sockets), successes per report index and
   * (gateway mode) the endpoints that failed to connect.
   */
  protected constructor(
    splicer: KernelSplicer,
    options: NativeFrontOptions,
    report: (handed: { socket: Socket; h: NativeFrontHanded; free: () => void }[], successes: [number, number][], failures: NativeEndpointFailure[]) => void,
  ) {
    this.splicer = splicer;
    splicer.startFront(options, (handed, successes, failures) => {
      this.#received += handed.length;
      const sockets: { socket: Socket; h: NativeFrontHanded; free: () => void }[] = [];
      for (const h of handed) {
        const socket = this.#socketOf(h);
        if (socket) sockets.push({ socket, h, free: () => splicer.frontRelease(h.source) });
      }
      report(sockets, successes, failures ?? []);
    });
  }

  /** Connections accepted and not yet either spliced, dropped or in JavaScript's hands (a hand-over waits for them). */
  get inFlight(): number {
    const s = this.splicer.frontStats();
    return s.setups + (s.handed - this.#received);
  }

  /** Stops accepting (a hand-over gives the listening sockets away), or accepts again. */
  pause(stop: boolean): void {
    this.splicer.frontPause(stop);
  }

  /** Stops accepting for good: the front's listening sockets close (the caller closes its own copies). */
  shut(): void {
    this.splicer.frontPause(true, true);
  }

  /** A handed connection's descriptor as a paused socket (nothing is read before its new owner says so). */
  #socketOf(h: NativeFrontHanded): Socket | undefined {
    try {
      return new Socket({ fd: h.fd, readable: true, writable: true, allowHalfOpen: true, pauseOnCreate: true } as SocketConstructorOpts);
    } catch {
      closeFd(h.fd);
      this.splicer.frontRelease(h.source);
      return undefined;
    }
  }
}
