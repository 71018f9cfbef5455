// An in-memory stand-in for the ecnet_services hash map (20-byte keys, 8-byte values) that can be told to fail
// part-way, and counts its dumps (the real map cannot be made to fail, short of filling it).
import { BpfError } from '../../src/native/errors.js';
import type { NativeMap } from '../../src/native/addon.js';

export class FakeMap implements NativeMap {
  /** hex of the key → value: what "the kernel" holds; tests write it directly to act behind a table's back. */
  readonly data = new Map<string, Buffer>();
  /** Fail the batch update after applying this many entries. */
  failBatchAfter: number | undefined;
  /** Fail single updates (used by the restore path). */
  failUpdates = false;
  /** How many times the whole map was read (entries()). */
  dumps = 0;
  constructor(readonly capacity: number) {}
  info() {
    return { id: 1, name: 'ecnet_services', type: 1, keySize: 20, valueSize: 8, maxEntries: this.capacity, flags: 0 };
  }
  lookup(key: Buffer) {
    return this.data.get(key.toString('hex')) ?? null;
  }
  update(key: Buffer, value: Buffer) {
    if (this.failUpdates) throw new BpfError('injected', { op: 'map_update', errno: 12 });
    if (!this.data.has(key.toString('hex')) && this.data.size >= this.capacity) throw new BpfError('full', { op: 'map_update', errno: 7 });
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
    this.dumps++;
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
