// Tags: the metrics' numbers for what the addon counts on its own thread (native/src/tags.h). A tag stands for a
// (service, target cluster) at the proxy and a service at the gateway; JavaScript gives it to each pair and
// front choice, the addon adds to its counters as bytes move and pairs open, and each scrape reads them and
// adds what grew. Tags of services that went away are freed and reused, so tenants' churn of names costs
// nothing that lasts: a service gone (no route or export names it, no connection of it open) is retired at one
// scrape, its series removed; a scrape later its tags are freed, their counters zeroed in the addon.

/** What the addon counts per tag (KernelSplicer.tagStats()), cumulative; `active` is a gauge. */
export interface TagCounts {
  up: number[];
  down: number[];
  opened: number[];
  active?: number[];
  setupSumUs: number[];
  setupBuckets: number[][];
}

/** A splicer's counters: read at each scrape, reset when a freed tag is reused. */
export interface NativeTags {
  read(): TagCounts | undefined;
  reset(tags: number[]): void;
}

/** What grew for one tag since the last scrape. */
export interface TagDelta {
  up: number;
  down: number;
  opened: number;
  setupBuckets: number[];
  setupSumUs: number;
}

interface Entry<K> {
  key: K;
  /** Open pairs JavaScript set up (the addon counts its own). */
  active: number;
  /** The scrape at which its service went (undefined: live). */
  retiredAt: number | undefined;
  seen: { up: number; down: number; opened: number; setupSumUs: number; buckets: number[] };
}

const fresh = () => ({ up: 0, down: 0, opened: 0, setupSumUs: 0, buckets: [] as number[] });

export class TagBook<K extends { namespace: string; service: string }> {
  readonly #entries: (Entry<K> | undefined)[] = [];
  readonly #index = new Map<string, number>();
  readonly #free: number[] = [];
  readonly #native: NativeTags[] = [];
  readonly #onFree: ((tag: number) => void)[] = [];
  #scrapes = 0;

  constructor(private readonly keyOf: (k: K) => string) {}

  /** The tag of `key`: its own, or a new one (a freed one first); a retired service's is live again. */
  tag(key: K): number {
    const k = this.keyOf(key);
    let i = this.#index.get(k);
    if (i === undefined) {
      i = this.#free.pop() ?? this.#entries.length;
      this.#entries[i] = { key, active: 0, retiredAt: undefined, seen: fresh() };
      this.#index.set(k, i);
    }
    this.#entries[i]!.retiredAt = undefined;
    return i;
  }

  info(tag: number): K | undefined {
    return this.#entries[tag]?.key;
  }

  /** Tags in use (live or retired, not freed). */
  get size(): number {
    return this.#index.size;
  }

  addNative(source: NativeTags): void {
    this.#native.push(source);
  }

  /** Called with each tag freed (a front forgets its report index). */
  onFree(fn: (tag: number) => void): void {
    this.#onFree.push(fn);
  }

  /** A pair JavaScript set up under `tag` opened; the returned function says it ended (once). */
  opened(tag: number): () => void {
    const e = this.#entries[tag];
    if (!e) return () => undefined;
    e.active++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      e.active--;
    };
  }

  /**
   * One scrape: `emit` gets what grew for each live tag; services not in `live` with nothing open are retired
   * (returned in `gone`: their series are the caller's to remove) and freed at a later scrape. Returns each live
   * tag with its open pairs (JavaScript's and the addon's).
   */
  collect(emit: (key: K, d: TagDelta) => void, live: Set<string> | undefined): { active: [K, number][]; gone: Set<string> } {
    this.#scrapes++;
    const nativeActive = new Map<number, number>();
    for (const source of this.#native) {
      let counts: TagCounts | undefined;
      try {
        counts = source.read();
      } catch {
        counts = undefined; // a closed splicer: its last counts were read before
      }
      if (!counts) continue;
      const n = Math.min(this.#entries.length, counts.up.length);
      for (let i = 0; i < n; i++) {
        const e = this.#entries[i];
        if (!e) continue;
        const d = (now: number | undefined, was: number) => Math.max(0, (now ?? 0) - was);
        const buckets = counts.setupBuckets[i] ?? [];
        const delta: TagDelta = {
          up: d(counts.up[i], e.seen.up),
          down: d(counts.down[i], e.seen.down),
          opened: d(counts.opened[i], e.seen.opened),
          setupBuckets: buckets.map((b, j) => Math.max(0, b - (e.seen.buckets[j] ?? 0))),
          setupSumUs: d(counts.setupSumUs[i], e.seen.setupSumUs),
        };
        if (e.retiredAt === undefined && (delta.up || delta.down || delta.opened)) emit(e.key, delta);
        e.seen = { up: counts.up[i] ?? 0, down: counts.down[i] ?? 0, opened: counts.opened[i] ?? 0, setupSumUs: counts.setupSumUs[i] ?? 0, buckets: [...buckets] };
        if (counts.active?.[i]) nativeActive.set(i, (nativeActive.get(i) ?? 0) + counts.active[i]!);
      }
    }
    const activeOf = (i: number) => this.#entries[i]!.active + (nativeActive.get(i) ?? 0);
    const gone = live ? this.#retire(live, activeOf) : new Set<string>();
    const active: [K, number][] = [];
    this.#entries.forEach((e, i) => {
      if (e && e.retiredAt === undefined) active.push([e.key, activeOf(i)]);
    });
    return { active, gone };
  }

  #retire(live: Set<string>, activeOf: (tag: number) => number): Set<string> {
    const service = (e: Entry<K>) => `${e.key.namespace}/${e.key.service}`;
    const busy = new Set<string>();
    this.#entries.forEach((e, i) => {
      if (e && activeOf(i) > 0) busy.add(service(e));
    });
    const gone = new Set<string>();
    const freed: number[] = [];
    this.#entries.forEach((e, i) => {
      if (!e) return;
      const s = service(e);
      if (live.has(s) || busy.has(s)) return void (e.retiredAt = undefined);
      if (e.retiredAt === undefined) {
        e.retiredAt = this.#scrapes;
        gone.add(s);
      } else if (e.retiredAt < this.#scrapes) {
        // Retired for a whole scrape interval with nothing open: no pair and no front choice uses it any more.
        freed.push(i);
      }
    });
    if (freed.length) {
      for (const source of this.#native) {
        try {
          source.reset(freed);
        } catch {
          // a closed splicer counts nothing more
        }
      }
      for (const i of freed) {
        this.#index.delete(this.keyOf(this.#entries[i]!.key));
        this.#entries[i] = undefined;
        this.#free.push(i);
        for (const fn of this.#onFree) fn(i);
      }
    }
    return gone;
  }
}

/**
 * Metrics whose figures are collected from tags: at each scrape, and also every `everyMs` between scrapes
 * (until close), so that tags of services gone are freed even where nothing scrapes.
 */
export abstract class TagCollected {
  #timer: NodeJS.Timeout | undefined;

  /** Reads the tags' counters into the families (and frees what went away). */
  protected abstract collectTags(): void;

  start(everyMs = 60_000): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.collectTags(), everyMs);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
