// ServiceTable's all-or-nothing promise and its shadow of the map, against an in-memory stand-in for the
// kernel map that can be told to fail part-way and counts its dumps (the real map cannot be made to fail,
// short of filling it). Kernel behaviour itself is covered by test/datapath.test.ts.
import { describe, expect, it } from 'vitest';
import { FakeMap } from '../../test/helpers/fake-map.js';
import type { BpfError } from '../native/errors.js';
import { type ServiceKey, serviceKeyCodec, serviceValueCodec } from './codecs.js';
import { DatapathError } from './errors.js';
import { type ReplaceReport, type ServiceEntry, ServiceTable } from './services.js';

const entries = (n: number, id = 0): ServiceEntry[] =>
  Array.from({ length: n }, (_, i) => ({ ip: `10.96.0.${i + 1}`, port: 80, protocol: 'tcp', id: id + i, disabled: false }));

describe('ServiceTable.replaceAll', () => {
  it('restores the previous content when the kernel fails part-way, and throws a typed error', () => {
    const map = new FakeMap(100);
    const table = new ServiceTable(() => map);
    table.replaceAll(entries(10));
    const before = table.list();
    map.failBatchAfter = 3;
    // 5 go, 5 change, 10 come: the batch fails after 3 writes.
    const next = [...entries(5, 500), ...Array.from({ length: 10 }, (_, i) => ({ ip: `10.96.1.${i}`, port: 80, protocol: 'tcp' as const, id: i, disabled: false }))];
    let err: unknown;
    try {
      table.replaceAll(next);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DatapathError);
    expect((err as DatapathError).code).toBe('ECNET_MAP_UPDATE');
    expect(((err as DatapathError).cause as BpfError).errnoName).toBe('ENOMEM');
    expect(table.list()).toEqual(before);
  });

  it('says so, with both causes, when restoring fails too', () => {
    const map = new FakeMap(100);
    const table = new ServiceTable(() => map);
    table.replaceAll(entries(4));
    map.failBatchAfter = 1;
    map.failUpdates = true;
    let err: unknown;
    try {
      table.replaceAll(entries(4, 100));
    } catch (e) {
      err = e;
    }
    expect((err as Error).message).toMatch(/restoring the previous services also failed.*may hold a mix/);
    expect(((err as Error).cause as AggregateError).errors).toHaveLength(2);
  });

  it('refuses UDP until it is redirected, and duplicates, before writing anything', () => {
    const map = new FakeMap(100);
    const table = new ServiceTable(() => map);
    const udp = { ip: '10.96.0.10', port: 53, protocol: 'udp' as const, id: 1, disabled: false };
    expect(() => table.replaceAll([...entries(3), udp])).toThrow(/UDP services are not redirected yet/);
    expect(() => table.set(udp, udp)).toThrow(DatapathError);
    expect(() => table.replaceAll([...entries(3), ...entries(1)])).toThrow(/listed twice/);
    expect(map.data.size).toBe(0);
  });
});

/** n entries at other addresses than entries()'s, from 10.96.1.(from + 1). */
const others = (n: number, from: number): ServiceEntry[] =>
  Array.from({ length: n }, (_, i) => ({ ip: `10.96.1.${from + i + 1}`, port: 80, protocol: 'tcp', id: from + i, disabled: false }));
const hex = (k: ServiceKey): string => serviceKeyCodec.encode(k).toString('hex');
const rawKey = (k: ServiceKey, pad = 0): string => {
  const b = serviceKeyCodec.encode(k);
  b[19] = pad;
  return b.toString('hex');
};
const rawValue = (id: number, disabled = false): Buffer => serviceValueCodec.encode({ id, disabled });
/** What the map holds, as key hex → [id, disabled]. */
const content = (map: FakeMap) => new Map([...map.data].map(([k, v]) => [k, serviceValueCodec.decode(v)]));
const expectHolds = (map: FakeMap, want: readonly ServiceEntry[]) =>
  expect(content(map)).toEqual(new Map(want.map((e) => [hex(e), { id: e.id, disabled: e.disabled }])));

/** What a replaceAll of `want` must report against what the map really holds. */
function diffOf(map: FakeMap, want: readonly ServiceEntry[]): ReplaceReport {
  const r = { added: 0, updated: 0, removed: 0, unchanged: 0 };
  const keys = new Set<string>();
  for (const e of want) {
    const k = hex(e);
    keys.add(k);
    const held = map.data.get(k);
    if (!held) r.added++;
    else if (held.equals(rawValue(e.id, e.disabled))) r.unchanged++;
    else r.updated++;
  }
  for (const k of map.data.keys()) if (!keys.has(k)) r.removed++;
  return r;
}

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('ServiceTable: the shadow of the map', () => {
  it('reads the map once, then diffs against what it wrote; verify reads it again', () => {
    const map = new FakeMap(100);
    const table = new ServiceTable(() => map);
    table.replaceAll(entries(10));
    expect(map.dumps).toBe(1);
    expect(table.replaceAll([...entries(9), ...others(2, 50)])).toEqual({ added: 2, updated: 0, removed: 1, unchanged: 9 });
    expect(table.replaceAll(entries(9))).toEqual({ added: 0, updated: 0, removed: 2, unchanged: 9 });
    expect(map.dumps).toBe(1);
    expect(table.replaceAll(entries(9), { verify: true })).toEqual({ added: 0, updated: 0, removed: 0, unchanged: 9 });
    expect(map.dumps).toBe(2);
    expectHolds(map, entries(9));
  });

  it('stays exact across random replaceAll, apply, set and delete (IPv4 and IPv6 keys)', () => {
    const rnd = prng(7);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const pool: ServiceKey[] = [];
    for (let i = 1; i <= 24; i++) for (const port of [80, 443]) pool.push({ ip: i % 4 ? `10.96.${i >> 3}.${i}` : `fd00::${i.toString(16)}`, port, protocol: 'tcp' });
    const some = (p: number): ServiceEntry[] => pool.filter(() => rnd() < p).map((k) => ({ ...k, id: Math.floor(rnd() * 3), disabled: rnd() < 0.2 }));
    const map = new FakeMap(40);
    const table = new ServiceTable(() => map);
    table.replaceAll([]);
    for (let step = 0; step < 400; step++) {
      const op = rnd();
      try {
        if (op < 0.3) {
          const want = some(rnd());
          const before = diffOf(map, want);
          if (before.added - before.removed + map.data.size <= 40) {
            expect(table.replaceAll(want)).toEqual(before);
            expectHolds(map, want);
          } else expect(() => table.replaceAll(want)).toThrow(/do not fit/);
        } else if (op < 0.6) {
          const ups = some(0.1);
          const removes = [...some(0.1), ...some(0.05)].map(({ ip, port, protocol }) => ({ ip, port, protocol }));
          table.apply(ups, removes);
        } else if (op < 0.8) {
          const k = pick(pool);
          table.set(k, { id: Math.floor(rnd() * 3), disabled: false });
        } else {
          expect(table.delete(pick(pool))).toBeTypeOf('boolean');
        }
      } catch (e) {
        // A full map refuses set and apply (E2BIG, or the capacity check); anything else is a failure.
        expect((e as DatapathError).code).toBe('ECNET_MAP_FULL');
      }
      // The shadow agrees with the map: a replaceAll of what the map holds writes nothing, without a dump.
      const dumps = map.dumps;
      const now = new ServiceTable(() => map).list();
      expect(table.replaceAll(now)).toEqual({ added: 0, updated: 0, removed: 0, unchanged: now.length });
      expect(map.dumps - dumps).toBeLessThanOrEqual(1); // the list() above; a set that hit E2BIG costs one more
    }
  });

  it('does not see a write behind its back until a verifying call, which repairs it (any key bytes)', () => {
    const map = new FakeMap(100);
    const table = new ServiceTable(() => map);
    table.replaceAll(entries(10));
    // Another writer: one entry gone, one changed, and four it never wrote (TCP, UDP, IPv6, odd padding).
    map.data.delete(hex(entries(1)[0]!));
    map.data.set(hex(entries(2)[1]!), rawValue(99));
    map.data.set(hex({ ip: '10.96.5.5', port: 80, protocol: 'tcp' }), rawValue(1));
    map.data.set(hex({ ip: '10.96.5.5', port: 53, protocol: 'udp' }), rawValue(2));
    map.data.set(hex({ ip: 'fd00::5', port: 80, protocol: 'tcp' }), rawValue(3));
    map.data.set(rawKey({ ip: '10.96.5.6', port: 80, protocol: 'tcp' }, 1), rawValue(4));
    // Diffed against the shadow, the map looks right: nothing is written (the limit of the shadow).
    expect(table.replaceAll(entries(10))).toEqual({ added: 0, updated: 0, removed: 0, unchanged: 10 });
    expect(map.data.size).toBe(13);
    expect(table.replaceAll(entries(10), { verify: true })).toEqual({ added: 1, updated: 1, removed: 4, unchanged: 8 });
    expectHolds(map, entries(10));
    expect(table.replaceAll(entries(10))).toEqual({ added: 0, updated: 0, removed: 0, unchanged: 10 });
  });

  it('forgets the shadow when delete or apply finds the map otherwise, and reads the map next time', () => {
    const map = new FakeMap(100);
    const table = new ServiceTable(() => map);
    table.replaceAll(entries(10));
    map.data.delete(hex(entries(1)[0]!));
    expect(table.delete(entries(1)[0]!)).toBe(false);
    map.data.set(hex({ ip: '10.96.5.5', port: 80, protocol: 'tcp' }), rawValue(1));
    const dumps = map.dumps;
    expect(table.replaceAll(entries(10))).toEqual({ added: 1, updated: 0, removed: 1, unchanged: 9 });
    expect(map.dumps).toBe(dumps + 1);
    // apply reads the keys it writes: one written behind the table's back voids the shadow.
    map.data.set(hex(others(1, 70)[0]!), rawValue(5));
    expect(table.apply(others(1, 70), [])).toEqual({ added: 0, updated: 1, removed: 0, unchanged: 0 });
    map.data.set(hex({ ip: '10.96.5.7', port: 80, protocol: 'tcp' }), rawValue(1));
    expect(table.replaceAll(entries(10))).toEqual({ added: 0, updated: 0, removed: 2, unchanged: 10 });
    expect(map.dumps).toBe(dumps + 2);
    expectHolds(map, entries(10));
  });

  it('after a kernel error part-way, the map and what the table knows of it are the previous content', () => {
    const map = new FakeMap(100);
    const table = new ServiceTable(() => map);
    table.replaceAll(entries(10));
    const before = content(map);
    map.failBatchAfter = 2;
    expect(() => table.replaceAll([...entries(5), ...others(5, 40)])).toThrow(DatapathError);
    expect(() => table.apply(others(5, 60), entries(3))).toThrow(DatapathError);
    expect(content(map)).toEqual(before);
    map.failBatchAfter = undefined;
    // Read again after the failure; the counts are against the restored content.
    const dumps = map.dumps;
    expect(table.replaceAll([...entries(5), ...others(5, 40)])).toEqual({ added: 5, updated: 0, removed: 5, unchanged: 5 });
    expect(map.dumps).toBe(dumps + 1);
    expect(table.replaceAll(entries(10))).toEqual({ added: 5, updated: 0, removed: 5, unchanged: 5 });
    expect(map.dumps).toBe(dumps + 1);
    expectHolds(map, entries(10));
  });

  it('a failed set voids the shadow; the capacity check uses it when known', () => {
    const map = new FakeMap(12);
    const table = new ServiceTable(() => map);
    table.replaceAll(entries(10));
    map.failUpdates = true;
    expect(() => table.set(others(1, 80)[0]!, { id: 1, disabled: false })).toThrow(DatapathError);
    map.failUpdates = false;
    const dumps = map.dumps;
    expect(() => table.replaceAll(entries(13))).toThrow(/13 services do not fit.*capacity 12/);
    expect(map.dumps).toBe(dumps + 1);
    expect(() => table.replaceAll(entries(13))).toThrow(/do not fit/);
    expect(() => table.apply(others(3, 80), [])).toThrow(/3 more services do not fit/);
    expect(map.dumps).toBe(dumps + 1);
    expectHolds(map, entries(10));
  });

  it('validates entries whose address it has seen before as the codecs do, and finds a key listed twice', () => {
    const map = new FakeMap(100);
    const table = new ServiceTable(() => map);
    table.replaceAll(entries(3));
    const e = entries(1)[0]!;
    const bad: [ServiceEntry, RegExp][] = [
      [{ ...e, id: -1 }, /service id must be an integer/],
      [{ ...e, id: 1.5 }, /service id must be an integer/],
      [{ ...e, id: 2 ** 32 }, /service id must be an integer/],
      [{ ...e, port: 0 }, /1\.\.65535/],
      [{ ...e, port: 80.5 }, /1\.\.65535/],
      [{ ...e, protocol: 'udp' }, /UDP services are not redirected yet/],
      [{ ...e, protocol: 'sctp' as never }, /unknown protocol/],
    ];
    for (const [x, message] of bad) expect(() => table.replaceAll([...entries(3).slice(1), x])).toThrow(message);
    // Listed twice: a key the map holds, and the same address spelt another way.
    expect(() => table.replaceAll([...entries(3), entries(1)[0]!])).toThrow(/listed twice/);
    expect(() => table.replaceAll([...entries(3), { ...e, ip: `::ffff:${e.ip}` }])).toThrow(/listed twice/);
    expect(() => table.replaceAll([{ ...e, ip: 'fd00::1' }, { ...e, ip: 'fd00:0::1', id: 9 }])).toThrow(/listed twice/);
    expectHolds(map, entries(3));
  });

  it('a shadow is of one map: a getter that returns another reads that one', () => {
    const a = new FakeMap(100);
    const b = new FakeMap(100);
    let map = a;
    const table = new ServiceTable(() => map);
    table.replaceAll(entries(10));
    map = b;
    expect(table.replaceAll(entries(10))).toEqual({ added: 10, updated: 0, removed: 0, unchanged: 0 });
    expect(b.dumps).toBe(1);
  });
});
