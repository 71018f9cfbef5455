// When the local source looks at its cluster directory again: fs.watch on each directory (a burst of events
// for one path coalesced into one look) and the periodic full rescan that catches what fs.watch misses, backing
// off while the directory is unreadable. Separate from the store, which decides what a look at a path means.
import { type FSWatcher, watch } from 'node:fs';
import { join } from 'node:path';
import { Backoff } from '../util/backoff.js';
import type { Clock } from '../util/time.js';
import { SERVER_FIELDS_DIR, STATE_DIR } from './local-layout.js';

export interface DirectoryWatchOptions {
  clock: Clock;
  /** false: no fs.watch and no periodic rescan (one-shot commands); rescan() still scans once. */
  watching: boolean;
  rescanMs: number;
  /** Reads the whole directory; false when it could not be read (the next rescan backs off). */
  scan(): boolean;
  /** Something changed at `path` (a file or a directory). */
  changed(path: string): void;
}

export class DirectoryWatch {
  readonly #o: DirectoryWatchOptions;
  readonly #watchers = new Map<string, FSWatcher>();
  readonly #pending = new Map<string, unknown>();
  readonly #backoff = new Backoff({ initialMs: 100, maxMs: 5000, jitter: 0.2 });
  #timer: unknown;
  #closed = false;

  constructor(options: DirectoryWatchOptions) {
    this.#o = options;
  }

  get watching(): boolean {
    return this.#o.watching;
  }

  /** Scans now and, when watching, again after the rescan period (or the backoff's delay after a failure). */
  rescan(): void {
    if (this.#closed) return;
    let delay = this.#o.rescanMs;
    if (this.#o.scan()) this.#backoff.reset();
    else delay = this.#backoff.next();
    if (this.#o.watching) {
      this.#timer = this.#o.clock.setTimeout(() => this.rescan(), delay);
      (this.#timer as { unref?: () => void }).unref?.();
    }
  }

  /** Watches one directory (once); dot-files in it are ignored except the state directory and server fields. */
  watchDir(dir: string): void {
    if (!this.#o.watching || this.#watchers.has(dir) || this.#closed) return;
    try {
      const w = watch(dir, { persistent: false }, (_type, name) => {
        if (name === null) return void this.#schedule(dir);
        const path = join(dir, name.toString());
        if (name.toString().startsWith('.') && !dir.endsWith(SERVER_FIELDS_DIR) && name.toString() !== STATE_DIR) return;
        this.#schedule(path);
      });
      w.on('error', () => {
        w.close();
        this.#watchers.delete(dir);
      });
      this.#watchers.set(dir, w);
    } catch {
      // A directory that vanished between readdir and watch: the next scan sees it gone.
    }
  }

  /** Coalesces the burst of events one write produces (create, write, rename) into one read. */
  #schedule(path: string): void {
    if (this.#pending.has(path) || this.#closed) return;
    this.#pending.set(
      path,
      this.#o.clock.setTimeout(() => {
        this.#pending.delete(path);
        this.#o.changed(path);
      }, 2),
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#o.clock.clearTimeout(this.#timer);
    for (const t of this.#pending.values()) this.#o.clock.clearTimeout(t);
    this.#pending.clear();
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
  }
}
