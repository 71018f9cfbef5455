import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { ConnectionLimiter, sourceOf } from './limits.js';

const sock = (remoteAddress: string) => Object.assign(new EventEmitter(), { remoteAddress });

describe('ConnectionLimiter', () => {
  it('holds the total and the per-source limits, and frees a slot when its socket closes', () => {
    const l = new ConnectionLimiter({ total: 3, perSource: 2 });
    const a1 = sock('10.42.0.2');
    expect(l.admit(a1)).toBe(true);
    expect(l.admit(sock('10.42.0.2'))).toBe(true);
    expect(l.admit(sock('10.42.0.2'))).toBe(false); // that source is at its limit
    expect(l.admit(sock('10.42.0.3'))).toBe(true); // another source still gets in
    expect(l.admit(sock('10.42.0.4'))).toBe(false); // total reached
    a1.emit('close');
    expect(l.admit(sock('10.42.0.4'))).toBe(true);
    expect(l.refused).toBe(2);
    expect(l.open).toBe(3);
  });

  it('counts an IPv6 client by its /64 and a mapped IPv4 client as its IPv4 address', () => {
    expect(sourceOf('2001:db8:1:2:aaaa::1')).toBe(sourceOf('2001:db8:1:2:bbbb::9'));
    expect(sourceOf('2001:db8:1:3::1')).not.toBe(sourceOf('2001:db8:1:2::1'));
    expect(sourceOf('::ffff:10.42.0.2')).toBe('10.42.0.2');
    const l = new ConnectionLimiter({ total: 10, perSource: 1 });
    expect(l.admit(sock('2001:db8::1'))).toBe(true);
    expect(l.admit(sock('2001:db8::2'))).toBe(false);
  });

  it('release() frees a slot once, also when the socket lost its listeners (a pair handed to the kernel)', () => {
    const l = new ConnectionLimiter({ total: 10, perSource: 1 });
    const a = sock('10.42.0.2');
    expect(l.admit(a)).toBe(true);
    a.removeAllListeners();
    l.release(a);
    l.release(a);
    expect(l.open).toBe(0);
    expect(l.admit(sock('10.42.0.2'))).toBe(true);
    expect(l.open).toBe(1);
  });
});
