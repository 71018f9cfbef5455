import { describe, expect, it } from 'vitest';
import { formatEndpoint, normalizeIp, parseEndpoint, parseServiceAddress, readAddress, writeAddress } from './address.js';
import { AddressError } from './address.js';

const roundTrip = (ip: string): string => {
  const b = Buffer.alloc(16);
  writeAddress(ip, b, 0);
  return readAddress(b, 0);
};

describe('addresses', () => {
  it('stores IPv4 as IPv4-mapped bytes and reads it back dotted', () => {
    const b = Buffer.alloc(16);
    writeAddress('10.96.123.45', b, 0);
    expect(b.toString('hex')).toBe('00000000000000000000ffff0a607b2d');
    expect(readAddress(b, 0)).toBe('10.96.123.45');
  });

  it('round-trips IPv6 in RFC 5952 form', () => {
    expect(roundTrip('fd00:0:0:0:0:0:0:1')).toBe('fd00::1');
    expect(roundTrip('::1')).toBe('::1');
    expect(roundTrip('::')).toBe('::');
    expect(roundTrip('2001:db8:0:0:1:0:0:1')).toBe('2001:db8::1:0:0:1');
    expect(roundTrip('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2:3:4:5:6');
    expect(roundTrip('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(roundTrip('64:ff9b::10.0.0.1')).toBe('64:ff9b::a00:1');
    expect(normalizeIp('fe80::1%eth0')).toBe('fe80::1');
  });

  it('parses IP:PORT[/proto] and refuses what is malformed, with the reason', () => {
    expect(parseServiceAddress('10.96.0.10:53/udp')).toEqual({ ip: '10.96.0.10', port: 53, protocol: 'udp' });
    expect(parseServiceAddress('10.96.0.10:80')).toEqual({ ip: '10.96.0.10', port: 80, protocol: 'tcp' });
    expect(parseServiceAddress('[fd00::a]:8080/TCP')).toEqual({ ip: 'fd00::a', port: 8080, protocol: 'tcp' });
    expect(formatEndpoint(parseEndpoint('[fd00::a]:8080'))).toBe('[fd00::a]:8080');
    const cases: [string, RegExp][] = [
      ['10.96.0.10', /IP:PORT/],
      ['10.96.0:80', /not an IP address/],
      ['10.96.0.10:0', /1\.\.65535/],
      ['10.96.0.10:65536', /1\.\.65535/],
      ['10.96.0.10:80/sctp', /tcp or udp/],
      ['fd00::a:80', /IP:PORT/],
      ['256.1.1.1:80', /not an IP address/],
    ];
    for (const [text, why] of cases) {
      let err: unknown;
      try {
        parseServiceAddress(text);
      } catch (e) {
        err = e;
      }
      expect(err, text).toBeInstanceOf(AddressError);
      expect((err as AddressError).code).toBe('ECNET_BAD_ADDRESS');
      expect((err as Error).message, text).toMatch(why);
    }
  });
});
