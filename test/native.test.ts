// The addon's contract: every failure is a BpfError carrying errno, its name and the operation;
// handles are freed once, close() twice is harmless, use after close throws.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Datapath } from '../src/bpf/datapath.js';
import { BpfError } from '../src/native/errors.js';
import { pinPaths } from '../src/bpf/loader.js';
import { loadNative } from '../src/native/addon.js';
import { defaults } from '../src/config.js';
import { describeKernel } from './helpers/describe-kernel.js';
import { type TestCgroup, cleanupAll, makeCgroup, makePinDir } from './helpers/host.js';

function thrown(fn: () => unknown): BpfError {
  try {
    fn();
  } catch (e) {
    return e as BpfError;
  }
  throw new Error('did not throw');
}

describeKernel('native addon', () => {
  const pins = makePinDir();
  let cg: TestCgroup;
  beforeAll(() => {
    cg = makeCgroup();
    Datapath.open({ bpffs: pins.path, cgroup: cg.path, objectDir: defaults.objectDir, settings: { proxy: { ip: '127.0.0.1', port: 1 }, proxyMark: 1 } }).close();
  });
  afterAll(() => {
    cleanupAll(
      () => Datapath.isLoaded(pins.path) && Datapath.uninstall(pins.path),
      () => cg?.remove(),
      () => pins.remove(),
    );
  });

  it('reports a missing pin as a BpfError with errno, name and operation', () => {
    const e = thrown(() => loadNative().openPinnedMap(`${pins.path}/maps/nope`));
    expect(e).toBeInstanceOf(BpfError);
    expect(e).toMatchObject({ code: 'ECNET_BPF', errno: 2, errnoName: 'ENOENT' });
    expect(e.op).toMatch(/nope/);
  });

  it('refuses keys of the wrong size and a link opened as a map', () => {
    const map = loadNative().openPinnedMap(pinPaths(pins.path).map('ecnet_services'));
    try {
      expect(thrown(() => map.lookup(Buffer.alloc(3)))).toMatchObject({ errnoName: 'EINVAL' });
    } finally {
      map.close();
    }
    expect(thrown(() => loadNative().openPinnedMap(pinPaths(pins.path).link('ecnet_connect4')))).toMatchObject({ errnoName: 'EINVAL' });
  });

  it('closes once: a second close is harmless, use after close throws EBADF', () => {
    const map = loadNative().openPinnedMap(pinPaths(pins.path).map('ecnet_services'));
    map.close();
    map.close();
    expect(thrown(() => map.info())).toMatchObject({ errnoName: 'EBADF' });
    const link = loadNative().openPinnedLink(pinPaths(pins.path).link('ecnet_connect4'));
    link.close();
    link.close();
    expect(thrown(() => link.info())).toMatchObject({ errnoName: 'EBADF' });
  });

  it("carries libbpf's log when an object does not load", () => {
    const obj = loadNative().openObject(`${defaults.objectDir}/sock_connect.bpf.o`, pinPaths(pins.path).maps);
    try {
      obj.setMaxEntries('ecnet_services', 7); // differs from the pinned map: libbpf refuses to reuse it
      const e = thrown(() => obj.load());
      expect(e).toBeInstanceOf(BpfError);
      expect(e.message).toMatch(/ecnet_services/);
    } finally {
      obj.close();
    }
  });
});
