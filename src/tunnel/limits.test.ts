import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { ConnectionLimiter } from './limits.js';

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
});
