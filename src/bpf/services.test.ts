// ServiceTable's all-or-nothing promise, against an in-memory stand-in for the kernel map that can be told
// to fail part-way (the real map cannot be made to, short of memory pressure). Kernel behaviour itself is
// covered by test/datapath.test.ts.
import { describe, expect, it } from 'vitest';
import { BpfError } from '../native/errors.js';
import { DatapathError } from './errors.js';
import type { NativeMap } from '../native/addon.js';
import { type ServiceEntry, ServiceTable } from './services.js';

class FakeMap implements NativeMap {
  readonly data = new Map<string, Buffer>();
  /** Fail the batch update after applying this many entries. */
  failBatchAfter: number | undefined;
  /** Fail single updates (used by the restore path). */
  failUpdates = false;
  constructor(readonly capacity: number) {}
  info() {
    return { id: 1, name: 'ecnet_services', type: 1, keySize: 20, valueSize: 8, maxEntries: this.capacity, flags: 0 };
  }
  lookup(key: Buffer) {
    return this.data.get(key.toString('hex')) ?? null;
  }
  update(key: Buffer, value: Buffer) {
    if (this.failUpdates) throw new BpfError('injected', { op: 'map_update', errno: 12 });
    this.data.set(key.toString('hex'), Buffer.from(value));
  }
  delete(key: Buffer) {
    return this.data.delete(key.toString('hex'));
  }
  lookupAndDelete(key: Buffer) {
    const v = this.lookup(key);
    this.delete(key);
    return v;
  }
  entries() {
    const ks = [...this.data.keys()].map((k) => Buffer.from(k, 'hex'));
    return { keys: Buffer.concat(ks), values: Buffer.concat([...this.data.values()]), count: ks.length };
  }
  updateBatch(keys: Buffer, values: Buffer, count: number) {
    for (let i = 0; i < count; i++) {
      if (this.failBatchAfter !== undefined && i === this.failBatchAfter) {
        throw Object.assign(new BpfError('injected', { op: 'map_update_batch', errno: 12 }), { applied: i });
      }
      this.update(keys.subarray(i * 20, (i + 1) * 20), values.subarray(i * 8, (i + 1) * 8));
    }
    return count;
  }
  deleteBatch(keys: Buffer, count: number) {
    for (let i = 0; i < count; i++) this.delete(keys.subarray(i * 20, (i + 1) * 20));
    return count;
  }
  close() {}
}

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
