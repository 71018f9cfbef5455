import { describe, expect, it } from 'vitest';
import { Counter, Gauge, Registry } from 'prom-client';
import { renderMetrics } from './server.js';
import { componentRegistry } from './registry.js';
import { BucketHistogram } from './histogram.js';
import { MetricsParseError, parseMetrics, sumOf } from './parse.js';
import { OTHER, ServiceLabels } from './services.js';
import { reasonOfError, reasonOfErrno, reasonOfStatus } from './reasons.js';
import { ProxyMetrics } from '../proxy/metrics.js';
import { GatewayMetrics } from '../gateway/metrics.js';
import { EventLimiter } from '../util/rate-limit.js';

describe('the Prometheus text reader', () => {
  it('reads families, labels with escapes, histograms and special values', () => {
    const f = parseMetrics(
      [
        '# HELP a_total A counter',
        '# TYPE a_total counter',
        'a_total{x="1",y="q\\"uo\\\\te\\n"} 3',
        'a_total{x="2"} 4 1700000000000',
        '# TYPE h histogram',
        'h_bucket{le="0.1"} 1',
        'h_bucket{le="+Inf"} 2',
        'h_sum 0.5',
        'h_count 2',
        'g NaN',
        'i +Inf',
      ].join('\n'),
    );
    expect(f.get('a_total')!.type).toBe('counter');
    expect(f.get('a_total')!.samples[0]!.labels.y).toBe('q"uo\\te\n');
    expect(sumOf(f, 'a_total')).toBe(7);
    expect(sumOf(f, 'a_total', { x: '2' })).toBe(4);
    expect(f.get('h')!.samples).toHaveLength(4);
    expect(sumOf(f, 'h', {}, 'h_count')).toBe(2);
    expect(Number.isNaN(f.get('g')!.samples[0]!.value)).toBe(true);
  });

  it.each([
    ['a{x=1} 1', 'not quoted'],
    ['a{x="1"', 'expected , or }'],
    ['a{1x="1"} 1', 'bad label name'],
    ['a{x="1",x="2"} 1', 'twice'],
    ['a 1x', 'bad value'],
    ['a', 'without a value'],
    ['a 1\na 2', 'duplicate series'],
    ['# TYPE a nonsense', 'bad type'],
    ['a{x="\\q"} 1', 'bad escape'],
  ])('refuses %j', (text, why) => {
    expect(() => parseMetrics(text)).toThrow(MetricsParseError);
    expect(() => parseMetrics(text)).toThrow(why);
  });

  it("reads a component registry's whole output", async () => {
    const registry = componentRegistry('test');
    const m = new ProxyMetrics({ registry, localCluster: 'r/z/g/local' });
    m.openedOne({ namespace: 'ns', service: 'svc' }, 'r/z/g/a', 0.002).ended({ up: 10, down: 20 });
    m.failedAttempt({ namespace: 'ns', service: 'svc' }, 'r/z/g/a', 'refused');
    const f = parseMetrics(await registry.metrics());
    expect(sumOf(f, 'ecnet_proxy_connections_opened_total', { namespace: 'ns', service: 'svc', cluster: 'r/z/g/a' })).toBe(1);
    expect(sumOf(f, 'ecnet_proxy_bytes_total', { direction: 'sent' })).toBe(10);
    expect(sumOf(f, 'ecnet_proxy_bytes_total', { direction: 'received' })).toBe(20);
    expect(sumOf(f, 'ecnet_proxy_connection_attempts_failed_total', { reason: 'refused' })).toBe(1);
    expect(sumOf(f, 'ecnet_proxy_connection_setup_seconds', { cluster: 'r/z/g/a', le: '0.0025' }, 'ecnet_proxy_connection_setup_seconds_bucket')).toBe(1);
    expect(sumOf(f, 'ecnet_build_info', { component: 'test' })).toBe(1);
    expect(f.has('process_cpu_user_seconds_total')).toBe(true);
  });
});

describe('BucketHistogram', () => {
  it('adds observations and bulk bucket counts, cumulative in the output', async () => {
    const registry = componentRegistry('t');
    const h = new BucketHistogram('t_seconds', 'help', ['c'], [0.1, 1], registry);
    h.observe({ c: 'a' }, 0.05);
    h.observe({ c: 'a' }, 0.5);
    h.add({ c: 'a' }, [1, 0, 2], 7);
    const f = parseMetrics(await registry.metrics());
    const b = (le: string) => sumOf(f, 't_seconds', { c: 'a', le }, 't_seconds_bucket');
    expect([b('0.1'), b('1'), b('+Inf')]).toEqual([2, 3, 5]);
    expect(sumOf(f, 't_seconds', {}, 't_seconds_sum')).toBeCloseTo(7.55);
    expect(sumOf(f, 't_seconds', {}, 't_seconds_count')).toBe(5);
  });
});

describe('bounded labels', () => {
  it('services past the cap share _other, and a forgotten one gives its place back', () => {
    let said = 0;
    const l = new ServiceLabels(2, () => said++);
    expect(l.of('a', 'x')).toEqual({ namespace: 'a', service: 'x' });
    l.of('a', 'y');
    expect(l.of('a', 'z')).toBe(OTHER);
    expect(l.of('a', 'w')).toBe(OTHER);
    expect(said).toBe(1);
    expect(l.forget('a', 'x')).toBe(true);
    expect(l.of('a', 'z')).toEqual({ namespace: 'a', service: 'z' });
  });

  it('1,000 services: series grow with services × targets only, and go with the services', async () => {
    const registry = componentRegistry('agent');
    const live = new Set<string>();
    const m = new ProxyMetrics({ registry, localCluster: 'r/z/g/local', liveServices: () => live });
    const clusters = ['r/z/g/a', 'r/z/g/b'];
    for (let i = 0; i < 1000; i++) {
      live.add(`ns/svc-${i}`);
      for (const c of clusters) {
        // Many connections per target, from many clients: none adds a series.
        for (let k = 0; k < 5; k++) {
          m.openedOne({ namespace: 'ns', service: `svc-${i}` }, c, 0.001).ended({ up: 1, down: 1 });
          m.failedAttempt({ namespace: 'ns', service: `svc-${i}` }, c, k % 2 ? 'refused' : 'timeout');
        }
      }
    }
    m.rejectedOne('no_route');
    const f = parseMetrics(await registry.metrics());
    const series = (name: string) => f.get(name)?.samples.length ?? 0;
    expect(series('ecnet_proxy_connections_opened_total')).toBe(2000);
    expect(series('ecnet_proxy_connection_attempts_failed_total')).toBe(4000);
    expect(series('ecnet_proxy_bytes_total')).toBe(4000);
    expect(series('ecnet_proxy_connections_active')).toBe(2000);
    // Per cluster only: 2 × (13 buckets + Inf + sum + count).
    expect(series('ecnet_proxy_connection_setup_seconds')).toBe(32);
    expect(series('ecnet_proxy_connections_rejected_total')).toBe(1);
    // No label anywhere carries an address, a port or a pod.
    const values = [...f.values()].flatMap((fam) => fam.samples.flatMap((s) => Object.values(s.labels)));
    expect(values.filter((v) => /\d+\.\d+\.\d+\.\d+|:\d+$/.test(v))).toEqual([]);
    // The services go: so do their series.
    live.clear();
    live.add('ns/svc-0');
    const g = parseMetrics(await registry.metrics());
    expect(g.get('ecnet_proxy_connections_opened_total')!.samples).toHaveLength(2);
    expect(g.get('ecnet_proxy_connection_attempts_failed_total')!.samples).toHaveLength(4);
    expect(g.get('ecnet_proxy_connections_active')!.samples).toHaveLength(2);
  });

  it('a gateway labels only exported services: made-up names share the empty label', async () => {
    const registry = componentRegistry('gateway');
    const m = new GatewayMetrics({ registry });
    for (let i = 0; i < 500; i++) m.refusedOne('not_found', { namespace: 'x', service: `made-up-${i}` }, false);
    m.refusedOne('forbidden', { namespace: 'ns', service: 'real' }, true);
    const f = parseMetrics(await registry.metrics());
    expect(f.get('ecnet_gateway_tunnels_refused_total')!.samples).toHaveLength(2);
    expect(sumOf(f, 'ecnet_gateway_tunnels_refused_total', { namespace: '', service: '', reason: 'not_found' })).toBe(500);
  });
});

describe('failure reasons', () => {
  it('map errnos, statuses and tunnel errors to a few values', () => {
    expect(reasonOfErrno('ECONNREFUSED')).toBe('refused');
    expect(reasonOfErrno('EPIPE')).toBe('reset');
    expect(reasonOfErrno('EWHATEVER')).toBe('error');
    expect(reasonOfStatus(503)).toBe('no_endpoint');
    expect(reasonOfStatus(403)).toBe('forbidden');
    expect(reasonOfStatus(502)).toBe('bad_answer');
    expect(reasonOfError({ code: 'ECNET_TUNNEL_REFUSED', status: 404 })).toBe('not_found');
    expect(reasonOfError({ code: 'ECNET_TUNNEL_UNREACHABLE', cause: { code: 'ECONNRESET' } })).toBe('reset');
    expect(reasonOfError({ code: 'ECNET_TUNNEL_UNREACHABLE', cause: { code: 'EWEIRD' } })).toBe('unreachable');
    expect(reasonOfError({ code: 'ETIMEDOUT' })).toBe('timeout');
  });
});

describe('EventLimiter', () => {
  it('lets a burst through, then about perSecond, and says how many it left out', () => {
    let t = 0;
    const l = new EventLimiter(10, 5, () => t);
    const taken = Array.from({ length: 20 }, () => l.take());
    expect(taken.filter(Boolean)).toHaveLength(5);
    t += 1000;
    const next = l.take();
    expect(next).toEqual({ suppressed: 15 });
    const more = Array.from({ length: 20 }, () => l.take()).filter(Boolean);
    expect(more).toHaveLength(4);
  });
});

// prom-client's internals that removeServices reads: a failing test here says an upgrade changed them.
describe('prom-client', () => {
  it('keeps label sets where removeServices looks for them', () => {
    const c = new Counter({ name: 'x_total', help: 'x', labelNames: ['a'], registers: [] });
    c.inc({ a: '1' });
    expect(Object.values((c as unknown as { hashMap: Record<string, { labels: Record<string, string> }> }).hashMap)[0]!.labels).toEqual({ a: '1' });
  });
});

// /metrics is unauthenticated (the agent's on every address of the node) and a render runs on the event loop
// that serves connections: a flood of requests must not be a flood of renders, and no answer may be stale.
describe('renders of /metrics', () => {
  const counted = (minIntervalMs: number) => {
    const registry = new Registry();
    let renders = 0;
    const g = new Gauge({ name: 'v', help: 'v', registers: [registry], collect: () => void renders++ });
    return { render: () => renderMetrics(registry, { share: 1, minIntervalMs }), renders: () => renders, g };
  };

  it('requests that arrive together share one render', async () => {
    const r = counted(0);
    const texts = await Promise.all(Array.from({ length: 50 }, () => r.render()));
    expect(r.renders()).toBe(1);
    expect(new Set(texts).size).toBe(1);
  });

  it('a request made while a render runs gets the next one, which sees what changed meanwhile', async () => {
    const registry = new Registry();
    let renders = 0;
    let value = 1;
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    new Gauge({
      name: 'v',
      help: 'v',
      registers: [registry],
      async collect() {
        renders++;
        const v = value;
        if (renders === 1) await gate;
        this.set(v);
      },
    });
    const first = renderMetrics(registry, { share: 1, minIntervalMs: 0 });
    while (renders === 0) await new Promise((r) => setImmediate(r));
    value = 2;
    const second = renderMetrics(registry, { share: 1, minIntervalMs: 0 });
    const third = renderMetrics(registry, { share: 1, minIntervalMs: 0 });
    open();
    expect(await first).toMatch(/^v 1$/m);
    expect(await second).toMatch(/^v 2$/m);
    expect(await third).toBe(await second);
    expect(renders).toBe(2);
  });

  it('renders start at most once per interval', async () => {
    const r = counted(300);
    await r.render();
    const t0 = performance.now();
    r.g.set(7);
    const texts = await Promise.all(Array.from({ length: 20 }, () => r.render()));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
    expect(r.renders()).toBe(2);
    expect(texts.every((t) => /^v 7$/m.test(t))).toBe(true);
  });

  it('under a flood, renders take at most their share of the time', async () => {
    const registry = new Registry();
    let renders = 0;
    new Gauge({
      name: 'slow',
      help: 'slow',
      registers: [registry],
      collect() {
        renders++;
        const until = performance.now() + 20;
        while (performance.now() < until);
      },
    });
    const t0 = performance.now();
    // Requests one after another for a second: ~20 ms renders at a share of 0.2 start at most every ~100 ms.
    while (performance.now() - t0 < 1_000) await renderMetrics(registry, { share: 0.2, minIntervalMs: 0 });
    expect(renders).toBeLessThanOrEqual(12);
    expect(renders).toBeGreaterThanOrEqual(2);
  });

  it('a render that fails fails its requests only', async () => {
    const registry = new Registry();
    let fail = true;
    new Gauge({
      name: 'w',
      help: 'w',
      registers: [registry],
      collect() {
        if (fail) throw new Error('boom');
        this.set(1);
      },
    });
    await expect(renderMetrics(registry, { share: 1, minIntervalMs: 0 })).rejects.toThrow('boom');
    fail = false;
    expect(await renderMetrics(registry, { share: 1, minIntervalMs: 0 })).toMatch(/^w 1$/m);
  });
});

describe('TagBook', () => {
  /** A stand-in for the addon's per-tag counters: cumulative, zeroed by reset. */
  function fakeNative() {
    const up: number[] = [];
    const resets: number[] = [];
    return {
      up,
      resets,
      add: (tag: number, n: number) => (up[tag] = (up[tag] ?? 0) + n),
      source: {
        read: () => ({ up: [...up], down: up.map(() => 0), opened: up.map(() => 0), setupSumUs: up.map(() => 0), setupBuckets: up.map(() => []) }),
        reset: (tags: number[]) => {
          for (const t of tags) up[t] = 0;
          resets.push(...tags);
        },
      },
    };
  }

  it("churned service names reuse freed tags: the table stays as big as what is live, and a reused tag's counts start clean", async () => {
    const { TagBook } = await import('./tags.js');
    const book = new TagBook<{ namespace: string; service: string }>((k) => `${k.namespace}/${k.service}`);
    const native = fakeNative();
    book.addNative(native.source);
    const freed: number[] = [];
    book.onFree((t) => freed.push(t));
    const counted = new Map<string, number>();
    const emit = (k: { namespace: string; service: string }, d: { up: number }) => counted.set(`${k.namespace}/${k.service}`, (counted.get(`${k.namespace}/${k.service}`) ?? 0) + d.up);
    let highest = 0;
    for (let round = 0; round < 20; round++) {
      // 100 live services a round, all with new names: the last round's go away.
      const live = new Set<string>();
      for (let i = 0; i < 100; i++) {
        const name = `svc-${round}-${i}`;
        live.add(`ns/${name}`);
        const tag = book.tag({ namespace: 'ns', service: name });
        highest = Math.max(highest, tag);
        native.add(tag, 10);
      }
      book.collect(emit, live);
    }
    // Two rounds' worth at most (one live, one retired and waiting a scrape), not 20.
    expect(highest).toBeLessThan(300);
    expect(book.size).toBeLessThanOrEqual(200);
    expect(freed.length).toBeGreaterThan(1000);
    expect(native.resets.length).toBe(freed.length);
    // Every service was counted its own 10 bytes, none another's.
    expect(counted.size).toBe(2000);
    expect([...counted.values()].every((v) => v === 10)).toBe(true);
  });

  it('a service with a connection open is not retired, and one that comes back before it is freed keeps its tag', async () => {
    const { TagBook } = await import('./tags.js');
    const book = new TagBook<{ namespace: string; service: string }>((k) => `${k.namespace}/${k.service}`);
    book.addNative(fakeNative().source);
    const a = book.tag({ namespace: 'ns', service: 'a' });
    const b = book.tag({ namespace: 'ns', service: 'b' });
    const closed = book.opened(a);
    const none = new Set<string>();
    expect([...book.collect(() => undefined, none).gone]).toEqual(['ns/b']);
    expect(book.tag({ namespace: 'ns', service: 'b' })).toBe(b);
    book.collect(() => undefined, none);
    book.collect(() => undefined, none);
    expect(book.info(a)).toEqual({ namespace: 'ns', service: 'a' });
    closed();
    book.collect(() => undefined, none);
    book.collect(() => undefined, none);
    expect(book.info(a)).toBeUndefined();
  });
});
