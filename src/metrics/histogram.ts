// A histogram whose buckets can also be added to in bulk: the native front counts its setup times in the same
// fixed buckets on its own thread, and they are merged here at each scrape (prom-client's Histogram takes one
// observation at a time only). Exposed in the Prometheus text format as any histogram.
import type { Registry } from 'prom-client';

interface Series {
  labels: Record<string, string>;
  counts: number[];
  sum: number;
}

export class BucketHistogram<L extends string> {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #series = new Map<string, Series>();

  /** `bounds`: the buckets' upper bounds in the metric's unit, ascending (+Inf is implied). */
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly L[],
    readonly bounds: readonly number[],
    registry: Registry,
    private readonly collect?: () => void,
  ) {
    registry.registerMetric(this as never);
  }

  #get(labels: Record<L, string>): Series {
    const key = this.labelNames.map((l) => labels[l]).join('\u0000');
    let s = this.#series.get(key);
    if (!s) this.#series.set(key, (s = { labels: { ...labels }, counts: new Array<number>(this.bounds.length + 1).fill(0), sum: 0 }));
    return s;
  }

  observe(labels: Record<L, string>, value: number): void {
    const s = this.#get(labels);
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    s.counts[i]!++;
    s.sum += value;
  }

  /** Adds counts per bucket (the bounds' length + 1, the last one +Inf) and their sum. */
  add(labels: Record<L, string>, counts: readonly number[], sum: number): void {
    const s = this.#get(labels);
    for (let i = 0; i < s.counts.length; i++) s.counts[i]! += counts[i] ?? 0;
    s.sum += sum;
  }

  /** Forgets the series whose labels match all of `match`. */
  remove(match: Partial<Record<L, string>>): void {
    for (const [k, s] of this.#series) if (Object.entries(match).every(([l, v]) => s.labels[l] === v)) this.#series.delete(k);
  }

  reset(): void {
    this.#series.clear();
  }

  /** What prom-client's registry reads at each scrape. */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: { metricName: string; labels: Record<string, string | number>; value: number }[] }> {
    this.collect?.();
    const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
    for (const s of this.#series.values()) {
      let acc = 0;
      for (let i = 0; i < s.counts.length; i++) {
        acc += s.counts[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...s.labels, le: i < this.bounds.length ? this.bounds[i]! : '+Inf' }, value: acc });
      }
      values.push({ metricName: `${this.name}_sum`, labels: s.labels, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: s.labels, value: acc });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

/** Setup-time buckets in seconds: 0.5 ms to 5 s (the native front's, native/src/front.h, in µs). */
export const SETUP_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] as const;
