// Kernel tier: the real BPF objects, attached to a throwaway cgroup, real client processes in it, in a
// network namespace of the test's own where 10.96.0.0/16 is local, so nothing can leave the machine and a
// connection that is *not* redirected is caught by a "direct" listener instead of timing out.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type OriginalDestination, type RecordedDestination, connDstCodec, connKeyCodec, origDstCodec, serviceKeyCodec, serviceValueCodec, settingsCodec } from '../src/bpf/codecs.js';
import { Datapath, type DatapathOptions } from '../src/bpf/datapath.js';
import { DatapathError } from '../src/bpf/errors.js';
import { ktimeNs } from '../src/bpf/ktime.js';
import { ConnRecordSweeper } from '../src/bpf/sweeper.js';
import { type ServiceEntry, ServiceTable } from '../src/bpf/services.js';
import { AddressError } from '../src/net/address.js';
import { loadNative } from '../src/native/addon.js';
import { cookieOf, connectMarked } from '../src/native/sockets.js';
import { defaults } from '../src/config.js';
import {
  type TestCgroup,
  type TestNetns,
  bpftoolCgroupPrograms,
  cleanupAll,
  joinCgroup,
  makeCgroup,
  makeNetns,
  makePinDir,
  runClient,
} from './helpers/host.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { ManualClock } from './helpers/clocks.js';

const PROXY = { ip: '127.0.0.1', port: 15001 };
const MARK = defaults.proxyMark;
const svc = (ip: string, port: number) => ({ ip, port, protocol: 'tcp' as const });
const MAX_AGE_MS = defaults.connRecordMaxAgeMs;

/** An ecnet_conn_dst record written by hand, `ageMs` old on the kernel's clock. */
function record(dp: Datapath, client: { ip: string; port: number }, dst: OriginalDestination, ageMs: number): Buffer {
  const key = connKeyCodec.encode({ client, proxy: PROXY });
  dp.map('connections').update(key, connDstCodec.encode({ dst, recordedNs: ktimeNs() - BigInt(ageMs) * 1_000_000n }), 0);
  return key;
}
const accepted = (client: { ip: string; port: number }) => ({ remoteAddress: client.ip, remotePort: client.port, localAddress: PROXY.ip, localPort: PROXY.port });
const pinnedMapId = (pin: string): number => {
  const m = loadNative().openPinnedMap(pin);
  try {
    return m.info().id;
  } finally {
    m.close();
  }
};
/** Pins a map of the layout the previous version gave ecnet_conn_dst (24-byte values, no timestamp) at `pin`. */
function pinOldConnDst(pin: string): number {
  if (existsSync(pin)) unlinkSync(pin);
  execFileSync('bpftool', ['map', 'create', pin, 'type', 'lru_hash', 'key', '36', 'value', '24', 'entries', '65536', 'name', 'ecnet_conn_dst']);
  return pinnedMapId(pin);
}

/** Answers each connection with who answered and, for the proxy, the original destination it recovered. */
function listener(host: string, port: number, reply: (s: net.Socket) => object): Promise<net.Server> {
  const server = net.createServer((s) => {
    const body = JSON.stringify(reply(s));
    s.once('data', () => s.end(body));
    s.on('error', () => {});
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

describeKernel('datapath: redirect in the kernel', () => {
  let cg: TestCgroup;
  let ns: TestNetns;
  const pins = makePinDir();
  let dp: Datapath | undefined;
  const servers: net.Server[] = [];
  let opts: DatapathOptions;
  /** Called by the proxy listener before it takes the original destination. */
  let onAccept: ((s: net.Socket) => void) | undefined;

  beforeAll(async () => {
    cg = makeCgroup();
    ns = makeNetns(['10.96.0.0/16', 'fd00:96::/64']);
    ns.enter();
    opts = {
      bpffs: pins.path,
      cgroup: cg.path,
      objectDir: defaults.objectDir,
      settings: { proxy: PROXY, proxyIp6: '::1', proxyMark: MARK },
      capacity: { services: 64 },
    };
    dp = Datapath.open(opts);
    const proxyReply = (s: net.Socket) => {
      onAccept?.(s);
      const d = dp!.takeOriginalDestination(s);
      return { via: 'proxy', orig: d ? `${d.ip}:${d.port}` : null, id: d?.serviceId };
    };
    servers.push(
      await listener(PROXY.ip, PROXY.port, proxyReply),
      await listener('::1', PROXY.port, proxyReply),
      // Everything in 10.96.0.0/16 is local in this netns: a connection left alone lands here.
      await listener('::', 8080, () => ({ via: 'direct' })),
      await listener('::', 9090, () => ({ via: 'direct' })),
    );
  });

  afterAll(async () => {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    cleanupAll(
      () => dp?.close(),
      () => Datapath.isLoaded(pins.path) && Datapath.uninstall(pins.path),
      () => ns?.remove(),
      () => cg?.remove(),
      () => pins.remove(),
    );
  });

  it('codecs have the sizes of the loaded maps and of the structs the addon was compiled with', () => {
    const sizes = loadNative().structSizes();
    const info = (role: Parameters<Datapath['map']>[0]) => dp!.map(role).info();
    expect([serviceKeyCodec.size, serviceValueCodec.size]).toEqual([info('services').keySize, info('services').valueSize]);
    expect([connKeyCodec.size, connDstCodec.size]).toEqual([info('connections').keySize, info('connections').valueSize]);
    expect(origDstCodec.size).toBe(info('sockets').valueSize);
    expect(sizes).toEqual({
      svc_key: serviceKeyCodec.size,
      svc_value: serviceValueCodec.size,
      origdst: origDstCodec.size,
      conn_key: connKeyCodec.size,
      conn_dst: connDstCodec.size,
      config: settingsCodec.size,
    });
  });

  it('sends a client in the cgroup to the proxy, which recovers the ClusterIP; getpeername still shows the ClusterIP', async () => {
    dp!.services.set(svc('10.96.123.45', 8080), { id: 7, disabled: false });
    const [r] = await runClient({ cgroup: cg.path, targets: ['10.96.123.45:8080'] });
    expect(r).toMatchObject({ peer: '10.96.123.45:8080' });
    expect(JSON.parse(r!.reply!)).toEqual({ via: 'proxy', orig: '10.96.123.45:8080', id: 7 });
  });

  it('recovers the right original destination for 100 parallel connections', async () => {
    const targets: string[] = [];
    for (let i = 1; i <= 10; i++) {
      dp!.services.set(svc(`10.96.1.${i}`, 8000 + i), { id: 100 + i, disabled: false });
      for (let j = 0; j < 10; j++) targets.push(`10.96.1.${i}:${8000 + i}`);
    }
    const results = await runClient({ cgroup: cg.path, targets });
    expect(results).toHaveLength(100);
    for (const r of results) {
      expect(r.error).toBeUndefined();
      expect(r.peer).toBe(r.target);
      expect(JSON.parse(r.reply!)).toMatchObject({ via: 'proxy', orig: r.target });
    }
  });

  it('redirects IPv6 services to the IPv6 proxy address (connect6, getpeername6)', async () => {
    dp!.services.set(svc('fd00:96::10', 8080), { id: 60, disabled: false });
    const [r] = await runClient({ cgroup: cg.path, targets: ['[fd00:96::10]:8080'] });
    expect(r!.peer).toBe('fd00:96::10:8080');
    expect(JSON.parse(r!.reply!)).toEqual({ via: 'proxy', orig: 'fd00:96::10:8080', id: 60 });
    // Not in the map: untouched.
    const [other] = await runClient({ cgroup: cg.path, targets: ['[fd00:96::11]:8080'] });
    expect(JSON.parse(other!.reply!)).toEqual({ via: 'direct' });
  });

  it('redirects a dual-stack socket reaching an IPv4 service through its ::ffff: address', async () => {
    const [r] = await runClient({ cgroup: cg.path, targets: ['[::ffff:10.96.123.45]:8080'] });
    expect(r!.peer).toBe('::ffff:10.96.123.45:8080');
    expect(JSON.parse(r!.reply!)).toEqual({ via: 'proxy', orig: '10.96.123.45:8080', id: 7 });
    const sockets = dp!.dump('ecnet_sock_dst').rows;
    expect(sockets).toEqual([]);
  });

  it('leaves alone a process outside the cgroup and a service not in the map', async () => {
    const [outside] = await runClient({ targets: ['10.96.123.45:8080'] });
    expect(JSON.parse(outside!.reply!)).toEqual({ via: 'direct' });
    const [unknown] = await runClient({ cgroup: cg.path, targets: ['10.96.200.1:9090'] });
    expect(JSON.parse(unknown!.reply!)).toEqual({ via: 'direct' });
    expect(unknown!.peer).toBe('10.96.200.1:9090');
  });

  it("never redirects sockets carrying the proxy's mark, and counts them", async () => {
    const before = dp!.stats().skipped_mark;
    const [marked] = await runClient({ cgroup: cg.path, targets: ['10.96.123.45:8080'], mark: MARK });
    expect(JSON.parse(marked!.reply!)).toEqual({ via: 'direct' });
    expect(dp!.stats().skipped_mark).toBe(before + 1);
    // Other mark bits do not count.
    const [other] = await runClient({ cgroup: cg.path, targets: ['10.96.123.45:8080'], mark: 0x2 });
    expect(JSON.parse(other!.reply!)).toMatchObject({ via: 'proxy' });
  });

  it('connectMarked (what the proxy uses upstream) is not redirected, from inside the cgroup', async () => {
    const ask = (s: net.Socket) =>
      new Promise<string>((resolve, reject) => {
        let reply = '';
        s.once('connect', () => s.end('hi'));
        s.on('data', (d: Buffer) => (reply += d.toString()));
        s.once('close', () => resolve(reply));
        s.once('error', reject);
      });
    const leave = joinCgroup(cg.path);
    try {
      const marked = connectMarked({ host: '10.96.123.45', port: 8080, mark: MARK });
      const markedReply = ask(marked);
      await new Promise((r) => marked.once('connect', r));
      expect(cookieOf(marked)).toBeGreaterThan(0n);
      expect(JSON.parse(await markedReply)).toEqual({ via: 'direct' });
      // The same connect without the mark, from the same process: redirected (so this test can fail).
      expect(JSON.parse(await ask(net.connect({ host: '10.96.123.45', port: 8080 })))).toMatchObject({ via: 'proxy' });
    } finally {
      leave();
    }
  });

  it('holds no entries once the connections are closed and accepted', async () => {
    const count = () => ({ sockets: dp!.map('sockets').entries().count, connections: dp!.map('connections').entries().count });
    const before = count();
    const results = await runClient({ cgroup: cg.path, targets: Array(20).fill('10.96.123.45:8080') });
    expect(results.every((r) => r.reply?.includes('"via":"proxy"'))).toBe(true);
    expect(count()).toEqual(before);
    expect(before).toEqual({ sockets: 0, connections: 0 });
  });

  it('records each connection with the time sockops saw it, on the clock the proxy compares with', async () => {
    let seen: RecordedDestination | undefined;
    onAccept = (s) => {
      const key = connKeyCodec.encode({ client: { ip: s.remoteAddress!, port: s.remotePort! }, proxy: { ip: s.localAddress!, port: s.localPort! } });
      const v = dp!.map('connections').lookup(key);
      seen = v ? connDstCodec.decode(v) : undefined;
    };
    try {
      const before = ktimeNs();
      const [r] = await runClient({ cgroup: cg.path, targets: ['10.96.123.45:8080'] });
      const after = ktimeNs();
      expect(JSON.parse(r!.reply!)).toEqual({ via: 'proxy', orig: '10.96.123.45:8080', id: 7 });
      expect(seen?.dst).toEqual({ ip: '10.96.123.45', port: 8080, protocol: 'tcp', serviceId: 7, v6Socket: false });
      // bpf_ktime_get_ns() in the kernel, between two readings of ktimeNs() here: the same clock.
      expect(seen!.recordedNs).toBeGreaterThan(before);
      expect(seen!.recordedNs).toBeLessThan(after);
    } finally {
      onAccept = undefined;
    }
  });

  it('ignores a record older than the bound: the take deletes it, a plain lookup leaves it', () => {
    const client = { ip: '10.1.2.3', port: 40000 };
    const dst: OriginalDestination = { ip: '10.96.0.9', port: 80, protocol: 'tcp', serviceId: 9, v6Socket: false };
    const key = record(dp!, client, dst, MAX_AGE_MS + 1_000);
    const taken = dp!.staleRecords.taken;
    expect(dp!.originalDestination(accepted(client))).toBeUndefined();
    expect(dp!.map('connections').lookup(key)).not.toBeNull();
    const row = dp!.dump('ecnet_conn_dst').rows[0] as { value: { dst: OriginalDestination; ageMs: number } };
    expect(row.value.dst).toEqual(dst);
    expect(row.value.ageMs).toBeGreaterThanOrEqual(MAX_AGE_MS + 1_000);
    expect(row.value.ageMs).toBeLessThan(MAX_AGE_MS + 2_000);
    expect(dp!.takeOriginalDestination(accepted(client))).toBeUndefined();
    expect(dp!.map('connections').lookup(key)).toBeNull();
    expect(dp!.staleRecords.taken).toBe(taken + 1);
    // Just inside the bound: still the connection's.
    record(dp!, client, dst, MAX_AGE_MS - 1_000);
    expect(dp!.originalDestination(accepted(client))).toEqual(dst);
    expect(dp!.takeOriginalDestination(accepted(client))).toEqual(dst);
    expect(dp!.map('connections').entries().count).toBe(0);
  });

  it('the sweeper deletes records older than the bound and keeps the fresh ones', () => {
    const dst: OriginalDestination = { ip: '10.96.0.9', port: 80, protocol: 'tcp', serviceId: 9, v6Socket: false };
    const stale = Array.from({ length: 300 }, (_, i) => ({ ip: '10.1.3.1', port: 20000 + i }));
    const fresh = Array.from({ length: 3 }, (_, i) => ({ ip: '10.1.3.2', port: 30000 + i }));
    stale.forEach((c, i) => record(dp!, c, dst, MAX_AGE_MS + 1 + i * 1_000));
    fresh.forEach((c) => record(dp!, c, dst, 10));
    const clock = new ManualClock();
    const sweeper = new ConnRecordSweeper({ sweep: () => dp!.sweepConnections(), clock, everyMs: 30_000, logger: pino({ level: 'silent' }) });
    sweeper.start();
    try {
      clock.step(30_000);
      expect(sweeper.stats).toEqual({ sweeps: 1, swept: 300, lastError: undefined });
      const left = dp!.dump('ecnet_conn_dst').rows.map((r) => (r.key as { client: { port: number } }).client.port).sort();
      expect(left).toEqual(fresh.map((c) => c.port));
      // Nothing more to sweep.
      clock.step(30_000);
      expect(sweeper.stats).toMatchObject({ sweeps: 2, swept: 300 });
      expect(dp!.sweepConnections()).toEqual({ swept: 0, kept: 3 });
    } finally {
      sweeper.close();
      for (const c of fresh) dp!.takeOriginalDestination(accepted(c));
    }
    expect(dp!.map('connections').entries().count).toBe(0);
  });

  it('rejects bad input with a typed error and writes nothing', () => {
    const list = () => dp!.services.list().length;
    const n = list();
    const bad = [svc('10.96.1', 80), svc('10.96.0.1', 0), svc('10.96.0.1', 65536), svc('not-an-ip', 80), { ip: '10.96.0.1', port: 80, protocol: 'sctp' as never }];
    for (const key of bad) {
      expect(() => dp!.services.set(key, { id: 1, disabled: false })).toThrow(AddressError);
      try {
        dp!.services.set(key, { id: 1, disabled: false });
      } catch (e) {
        expect((e as AddressError).code).toBe('ECNET_BAD_ADDRESS');
      }
    }
    // One bad entry among good ones: replaceAll writes none of them.
    expect(() => dp!.services.replaceAll([{ ...svc('10.96.9.1', 80), id: 1, disabled: false }, { ...svc('10.96.9.2', 0), id: 2, disabled: false }])).toThrow(/1\.\.65535/);
    expect(list()).toBe(n);
  });

  it('refuses to overfill the services map (capacity 64 here), all or nothing', () => {
    const before = dp!.services.list();
    const many = Array.from({ length: 65 }, (_, i) => ({ ...svc(`10.96.50.${i}`, 80), id: i, disabled: false }));
    let err: unknown;
    try {
      dp!.services.replaceAll(many);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DatapathError);
    expect((err as DatapathError).code).toBe('ECNET_MAP_FULL');
    expect(dp!.services.list()).toEqual(before);
    // Filling it one by one: the 65th is refused by the kernel (E2BIG), as a typed error.
    const room = 64 - before.length;
    for (let i = 0; i < room; i++) dp!.services.set(svc(`10.96.60.${i}`, 80), { id: i, disabled: false });
    let full: unknown;
    try {
      dp!.services.set(svc('10.96.61.1', 80), { id: 1, disabled: false });
    } catch (e) {
      full = e;
    }
    expect((full as DatapathError).code).toBe('ECNET_MAP_FULL');
    expect(((full as DatapathError).cause as { errnoName: string }).errnoName).toBe('E2BIG');
    dp!.services.replaceAll(before);
    expect(dp!.services.list()).toHaveLength(before.length);
  });

  it("replaceAll trusts what it last wrote until asked to verify; a kernel refusal part-way restores the map", () => {
    const sorted = (xs: ServiceEntry[]) => [...xs].sort((a, b) => `${a.ip}:${a.port}`.localeCompare(`${b.ip}:${b.port}`));
    const held = () => sorted(dp!.services.list());
    const before = held();
    const own = Array.from({ length: 10 }, (_, i) => ({ ...svc(`10.96.70.${i}`, 80), id: i, disabled: false }));
    const want = sorted([...before, ...own]);
    dp!.services.replaceAll(want);
    // Another writer of the same map (as `ecnet bpf service` in another process would be).
    const other = new ServiceTable(() => dp!.map('services'));
    other.delete(own[0]!);
    other.set(svc('10.96.71.1', 80), { id: 7, disabled: false });
    // Diffed against what it wrote, the table does not see it; verifying, it repairs it.
    expect(dp!.services.replaceAll(want)).toMatchObject({ added: 0, removed: 0 });
    expect(held()).toHaveLength(want.length);
    expect(held()).not.toEqual(want);
    expect(dp!.services.replaceAll(want, { verify: true })).toEqual({ added: 1, updated: 0, removed: 1, unchanged: want.length - 1 });
    expect(held()).toEqual(want);
    // The other writer fills the map; the table, unaware, passes its capacity check and the kernel refuses
    // (E2BIG) after the updates that come first in the batch were applied: they are undone.
    for (let i = 0; held().length < 64; i++) other.set(svc(`10.96.72.${i}`, 80), { id: i, disabled: false });
    const full = held();
    const next = [...want.map((e) => ({ ...e, id: e.id + 100 })), ...Array.from({ length: 3 }, (_, i) => ({ ...svc(`10.96.73.${i}`, 80), id: i, disabled: false }))];
    let err: unknown;
    try {
      dp!.services.replaceAll(next);
    } catch (e) {
      err = e;
    }
    expect((err as DatapathError).code).toBe('ECNET_MAP_FULL');
    expect(((err as DatapathError).cause as { errnoName: string }).errnoName).toBe('E2BIG');
    expect(held()).toEqual(full);
    // After the failure the table reads the map again, so the same call now removes the other writer's entries
    // first and fits (against its stale record it would have failed the same way).
    expect(dp!.services.replaceAll(next)).toEqual({ added: 3, updated: want.length, removed: full.length - want.length, unchanged: 0 });
    expect(held()).toEqual(sorted(next));
    dp!.services.replaceAll(before);
    expect(held()).toEqual(before);
  });

  it('a second open after close reuses the pins and attaches nothing twice', () => {
    const links = dp!.status().programs.map((p) => [p.name, p.linkId]);
    const maps = dp!.status().maps.map((m) => [m.name, m.id]);
    const services = dp!.services.list();
    dp!.close();
    dp = Datapath.open(opts);
    expect(dp.installed!.programs.every((p) => p.action === 'unchanged')).toBe(true);
    expect(dp.status().programs.map((p) => [p.name, p.linkId])).toEqual(links);
    expect(dp.status().maps.map((m) => [m.name, m.id])).toEqual(maps);
    expect(dp.services.list()).toEqual(services);
    const attached = bpftoolCgroupPrograms(cg.path).sort();
    expect(attached).toEqual([
      'cgroup_inet4_connect:ecnet_connect4',
      'cgroup_inet4_getpeername:ecnet_getpeername4',
      'cgroup_inet6_connect:ecnet_connect6',
      'cgroup_inet6_getpeername:ecnet_getpeername6',
      'cgroup_inet_sock_release:ecnet_sock_release',
      'cgroup_sock_ops:ecnet_sockops',
    ].sort());
  });

  it('a new proxy address swaps the connect programs atomically on the same links', async () => {
    const links = dp!.status().programs.map((p) => p.linkId);
    dp!.close();
    const server = await listener(PROXY.ip, 15002, (s) => ({ via: 'proxy2', orig: dp!.takeOriginalDestination(s)?.ip }));
    try {
      dp = Datapath.open({ ...opts, settings: { ...opts.settings, proxy: { ip: PROXY.ip, port: 15002 } } });
      const actions = Object.fromEntries(dp.installed!.programs.map((p) => [p.name, p.action]));
      expect(actions).toMatchObject({ ecnet_connect4: 'replaced', ecnet_connect6: 'replaced', ecnet_sockops: 'unchanged' });
      expect(dp.status().programs.map((p) => p.linkId)).toEqual(links);
      expect(dp.status().settings?.proxy).toEqual({ ip: PROXY.ip, port: 15002 });
      const [r] = await runClient({ cgroup: cg.path, targets: ['10.96.123.45:8080'] });
      expect(JSON.parse(r!.reply!)).toEqual({ via: 'proxy2', orig: '10.96.123.45' });
    } finally {
      await new Promise((r) => server.close(r));
      dp!.close();
      dp = Datapath.open(opts);
    }
  });

  it('replaces a pinned ecnet_conn_dst of the previous layout (no timestamp), and redirects on', async () => {
    const pin = join(pins.path, 'maps', 'ecnet_conn_dst');
    const links = dp!.status().programs.map((p) => [p.name, p.linkId]);
    dp!.close();
    const oldId = pinOldConnDst(pin);
    dp = Datapath.open(opts);
    // sockops is the same code, but wrote to the map that is now replaced: it is swapped onto the new one.
    const actions = Object.fromEntries(dp.installed!.programs.map((p) => [p.name, p.action]));
    expect(actions).toEqual({
      ecnet_connect4: 'unchanged',
      ecnet_connect6: 'unchanged',
      ecnet_getpeername4: 'unchanged',
      ecnet_getpeername6: 'unchanged',
      ecnet_sockops: 'replaced',
      ecnet_sock_release: 'unchanged',
    });
    expect(dp.status().programs.map((p) => [p.name, p.linkId])).toEqual(links);
    const info = dp.map('connections').info();
    expect(info).toMatchObject({ keySize: 36, valueSize: 32, maxEntries: 65536 });
    expect(info.id).not.toBe(oldId);
    expect(readdirSync(join(pins.path, 'maps')).sort()).toEqual(['ecnet_conn_dst', 'ecnet_services', 'ecnet_sock_dst', 'ecnet_stats']);
    const [r] = await runClient({ cgroup: cg.path, targets: ['10.96.123.45:8080'] });
    expect(JSON.parse(r!.reply!)).toEqual({ via: 'proxy', orig: '10.96.123.45:8080', id: 7 });
    // A handle opened on the old layout (a CLI of this version against an older agent's pins) says so.
    dp.close();
    pinOldConnDst(pin);
    const stale = Datapath.openPinned(pins.path);
    try {
      expect(() => stale.takeOriginalDestination(accepted({ ip: '10.1.2.3', port: 1 }))).toThrow(/holds 24-byte values, this version 32/);
      expect(stale.status().maps.find((m) => m.name === 'ecnet_conn_dst')?.valueSize).toBe(24);
    } finally {
      stale.close();
    }
    dp = Datapath.open(opts);
    expect(dp.map('connections').info().valueSize).toBe(32);
  });

  it('unload leaves nothing attached or pinned (bpftool)', async () => {
    const mapIds = dp!.status().maps.map((m) => m.id);
    dp!.uninstall();
    dp = undefined;
    expect(bpftoolCgroupPrograms(cg.path)).toEqual([]);
    expect(existsSync(pins.path)).toBe(false);
    // The kernel frees detached programs, and then their maps, from a workqueue: give it a moment (bounded).
    const alive = () =>
      (JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show'], { encoding: 'utf8' })) as { id: number }[])
        .map((m) => m.id)
        .filter((id) => mapIds.includes(id));
    for (let i = 0; i < 50 && alive().length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(alive()).toEqual([]);
    expect(() => Datapath.openPinned(pins.path)).toThrow(/no ecnet datapath is loaded/);
  });
});

describeKernel('datapath: the services map at scale', () => {
  const pins = makePinDir();
  let cg: TestCgroup;
  let dp: Datapath;

  beforeAll(() => {
    cg = makeCgroup();
    dp = Datapath.open({ bpffs: pins.path, cgroup: cg.path, objectDir: defaults.objectDir, settings: { proxy: PROXY, proxyMark: MARK } });
  });
  afterAll(() => {
    cleanupAll(
      () => dp?.close(),
      () => Datapath.isLoaded(pins.path) && Datapath.uninstall(pins.path),
      () => cg?.remove(),
      () => pins.remove(),
    );
  });

  const entries = (n: number, offset = 0) =>
    Array.from({ length: n }, (_, i) => ({ ...svc(`10.${100 + ((i + offset) >> 16)}.${((i + offset) >> 8) & 255}.${(i + offset) & 255}`, 80), id: i + offset, disabled: false }));

  it('replaceAll of 10,000 services is applied as a diff', () => {
    expect(dp.services.replaceAll(entries(10_000))).toEqual({ added: 10_000, updated: 0, removed: 0, unchanged: 0 });
    expect(dp.services.list()).toHaveLength(10_000);
    // 1% churn: 50 go, 50 come, 50 change their id.
    const next = entries(10_000).slice(50);
    next.push(...entries(50, 20_000));
    for (let i = 0; i < 50; i++) next[i] = { ...next[i]!, id: next[i]!.id + 1 };
    expect(dp.services.replaceAll(next)).toEqual({ added: 50, updated: 50, removed: 50, unchanged: 9_900 });
    const got = new Map(dp.services.list().map((e) => [`${e.ip}:${e.port}`, e.id]));
    expect(got.size).toBe(10_000);
    for (const e of next) expect(got.get(`${e.ip}:${e.port}`)).toBe(e.id);
    // Applying the same set again writes nothing.
    expect(dp.services.replaceAll(next)).toMatchObject({ added: 0, updated: 0, removed: 0 });
  });

  it('apply writes a change without reading the map, all or nothing, and keeps count against the capacity', () => {
    dp.services.replaceAll(entries(10_000));
    // 10 removed, 10 added, 10 with a new id, 10 unchanged.
    const removes = entries(10).map(({ ip, port, protocol }) => ({ ip, port, protocol }));
    const upserts = [...entries(10, 40_000), ...entries(10, 10).map((e) => ({ ...e, id: e.id + 7 })), ...entries(10, 20)];
    expect(dp.services.apply(upserts, removes)).toEqual({ added: 10, updated: 10, removed: 10, unchanged: 10 });
    const got = new Map(dp.services.list().map((e) => [`${e.ip}:${e.port}`, e.id]));
    expect(got.size).toBe(10_000);
    for (const e of upserts) expect(got.get(`${e.ip}:${e.port}`)).toBe(e.id);
    for (const e of removes) expect(got.has(`${e.ip}:${e.port}`)).toBe(false);
    // A key removed twice in one change is removed (and counted) once.
    expect(dp.services.apply([], [removes[10 - 1]!, ...entries(1, 20).map(({ ip, port, protocol }) => ({ ip, port, protocol })), ...entries(1, 20).map(({ ip, port, protocol }) => ({ ip, port, protocol }))])).toEqual({ added: 0, updated: 0, removed: 1, unchanged: 0 });
    dp.services.apply(entries(1, 20), []);
    // A bad entry anywhere: nothing written.
    const before = dp.services.list();
    expect(() => dp.services.apply([...entries(5, 50_000), { ...svc('10.96.0.1', 0), id: 1, disabled: false }], removes)).toThrow(AddressError);
    // More than the map holds: refused before any write.
    const room = dp.services.capacity - 10_000;
    expect(() => dp.services.apply(entries(room + 1, 60_000), [])).toThrow(/do not fit/);
    expect(dp.services.list()).toEqual(before);
  });

  it('a replaceAll that fails validation at its last entry leaves the 10,000 untouched', () => {
    const before = dp.services.list();
    const next = [...entries(9_999, 30_000), { ...svc('10.96.0.1', 0), id: 1, disabled: false }];
    expect(() => dp.services.replaceAll(next)).toThrow(AddressError);
    expect(dp.services.list()).toEqual(before);
  });
});

describeKernel('datapath: pinned maps of another layout', () => {
  const pins = makePinDir();
  let cg: TestCgroup;
  let other: TestCgroup;
  let opts: DatapathOptions;
  const pin = (name: string) => join(pins.path, 'maps', name);
  const mapsDir = () => readdirSync(join(pins.path, 'maps')).sort();
  const ALL = ['ecnet_conn_dst', 'ecnet_services', 'ecnet_sock_dst', 'ecnet_stats'];

  beforeAll(() => {
    cg = makeCgroup();
    other = makeCgroup();
    opts = { bpffs: pins.path, cgroup: cg.path, objectDir: defaults.objectDir, settings: { proxy: PROXY, proxyMark: MARK } };
    Datapath.open(opts).close();
  });
  afterAll(() => {
    cleanupAll(
      () => Datapath.isLoaded(pins.path) && Datapath.uninstall(pins.path),
      () => other?.remove(),
      () => cg?.remove(),
      () => pins.remove(),
    );
  });

  it('a load that fails puts the old ecnet_conn_dst back: while loading, and when the plan stops it', () => {
    const oldId = pinOldConnDst(pin('ecnet_conn_dst'));
    // Only the first object: it pins the new map, then the second is missing.
    const partial = mkdtempSync(join(tmpdir(), 'ecnet-objects-'));
    try {
      copyFileSync(join(defaults.objectDir, 'sock_connect.bpf.o'), join(partial, 'sock_connect.bpf.o'));
      expect(() => Datapath.open({ ...opts, objectDir: partial })).toThrow(/sock_getpeername.bpf.o is missing/);
    } finally {
      rmSync(partial, { recursive: true, force: true });
    }
    expect(pinnedMapId(pin('ecnet_conn_dst'))).toBe(oldId);
    expect(mapsDir()).toEqual(ALL);
    // Attached to another cgroup: refused before any hook changes.
    expect(() => Datapath.open({ ...opts, cgroup: other.path })).toThrow(/already attached to another cgroup/);
    expect(pinnedMapId(pin('ecnet_conn_dst'))).toBe(oldId);
    expect(mapsDir()).toEqual(ALL);
  });

  it('a load left half-way (the old map moved aside, nothing in its place) is finished by the next one', () => {
    pinOldConnDst(pin('ecnet_conn_dst'));
    execFileSync('mv', [pin('ecnet_conn_dst'), pin('ecnet_conn_dst_replaced')]);
    const dp = Datapath.open(opts);
    try {
      expect(dp.map('connections').info().valueSize).toBe(32);
      expect(dp.installed!.programs.find((p) => p.name === 'ecnet_sockops')?.action).toBe('replaced');
    } finally {
      dp.close();
    }
    expect(mapsDir()).toEqual(ALL);
  });

  it('another layout of a map that holds state (here ecnet_sock_dst) stops the load, changing nothing', () => {
    const connId = pinnedMapId(pin('ecnet_conn_dst'));
    unlinkSync(pin('ecnet_sock_dst'));
    execFileSync('bpftool', ['map', 'create', pin('ecnet_sock_dst'), 'type', 'lru_hash', 'key', '8', 'value', '16', 'entries', '65536', 'name', 'ecnet_sock_dst']);
    let err: unknown;
    try {
      Datapath.open(opts).close();
    } catch (e) {
      err = e;
    }
    expect((err as DatapathError).code).toBe('ECNET_BPF_LOAD');
    expect((err as Error).message).toMatch(/pinned map ecnet_sock_dst .*value 16 B.* another layout .*value 24 B.*ecnet bpf unload/);
    expect(pinnedMapId(pin('ecnet_conn_dst'))).toBe(connId);
    expect(mapsDir()).toEqual(ALL);
  });
});
