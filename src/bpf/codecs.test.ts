import { describe, expect, it } from 'vitest';
import { connDstCodec, connKeyCodec, origDstCodec, serviceKeyCodec, serviceValueCodec, settingsCodec, statNames, sumPerCpu } from './codecs.js';

describe('codecs (mirrors of bpf/lib/ecnet.h)', () => {
  it('lay a service key out as the kernel does: address, port in network order, protocol', () => {
    const b = serviceKeyCodec.encode({ ip: '10.96.123.45', port: 8080, protocol: 'tcp' });
    expect(b.toString('hex')).toBe('00000000000000000000ffff0a607b2d' + '1f90' + '06' + '00');
    expect(serviceKeyCodec.decode(b)).toEqual({ ip: '10.96.123.45', port: 8080, protocol: 'tcp' });
  });

  it('round-trip every struct at its C size', () => {
    const v = { id: 4242, disabled: true };
    expect(serviceValueCodec.decode(serviceValueCodec.encode(v))).toEqual(v);
    const d = { ip: 'fd00::1', port: 443, protocol: 'tcp' as const, serviceId: 9, v6Socket: true };
    expect(origDstCodec.decode(origDstCodec.encode(d))).toEqual(d);
    const k = { client: { ip: '10.1.2.3', port: 40000 }, proxy: { ip: '127.0.0.1', port: 15001 } };
    expect(connKeyCodec.decode(connKeyCodec.encode(k))).toEqual(k);
    const s = { proxy: { ip: '169.254.20.10', port: 15001 }, proxyIp6: 'fd00::ec', proxyMark: 0x1000 };
    expect(settingsCodec.decode(settingsCodec.encode(s))).toEqual(s);
    expect([serviceValueCodec.encode(v), origDstCodec.encode(d), connKeyCodec.encode(k), settingsCodec.encode(s)].map((b) => b.length)).toEqual([
      serviceValueCodec.size,
      origDstCodec.size,
      connKeyCodec.size,
      settingsCodec.size,
    ]);
  });

  it('lay a recorded destination out as an ecnet_origdst, then the timestamp', () => {
    const dst = { ip: '10.96.0.7', port: 80, protocol: 'tcp' as const, serviceId: 7, v6Socket: false };
    const v = { dst, recordedNs: 123_456_789_012_345n };
    const b = connDstCodec.encode(v);
    expect(b).toHaveLength(connDstCodec.size);
    // A reader of the first 24 bytes sees the ecnet_origdst.
    expect(b.subarray(0, origDstCodec.size)).toEqual(origDstCodec.encode(dst));
    expect(b.readBigUInt64LE(24)).toBe(123_456_789_012_345n);
    expect(connDstCodec.decode(b)).toEqual(v);
  });

  it('refuses an IPv6 proxy address where the IPv4 one goes', () => {
    expect(() => settingsCodec.encode({ proxy: { ip: 'fd00::1', port: 1 }, proxyMark: 1 })).toThrow(/must be IPv4/);
  });

  it('sums per-CPU counters', () => {
    const b = Buffer.alloc(8 * 3);
    b.writeBigUInt64LE(1n, 0);
    b.writeBigUInt64LE(2n, 8);
    b.writeBigUInt64LE(39n, 16);
    expect(sumPerCpu(b)).toBe(42n);
    expect(statNames).toHaveLength(7);
  });
});
