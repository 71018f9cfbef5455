// Loads the BPF objects, reusing pinned maps, and attaches each program once to the cgroup as a pinned
// bpf_link. A second load finds the pins and changes nothing, or atomically swaps in programs that differ.
// Uninstall detaches and unpins everything. Pin layout: <bpffs>/maps/<map>, <bpffs>/links/<program>.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { type DatapathSettings, settingsCodec, u32Key } from './codecs.js';
import { DatapathError } from './errors.js';
import { cgroupId, checkCgroup, checkKernel, checkRoot, ensureBpffs } from './host.js';
import { type NativeBinding, type NativeObject, loadNative } from '../native/addon.js';
import { AddressError } from '../net/address.js';

/** The compiled objects, one per hook (bpf/NAME.bpf.c → NAME.bpf.o). */
export const OBJECT_NAMES = ['sock_connect', 'sock_getpeername', 'sockops', 'sock_release'] as const;

/** Pinned maps by role. */
export const MAP_NAMES = {
  services: 'ecnet_services',
  sockets: 'ecnet_sock_dst',
  connections: 'ecnet_conn_dst',
  stats: 'ecnet_stats',
} as const;
export type MapRole = keyof typeof MAP_NAMES;

/**
 * Pinned maps a load replaces, rather than refuses, when a previous version pinned them with another layout
 * (type, key or value size): libbpf cannot reuse such a pin. ecnet_conn_dst holds only connections established
 * and not yet accepted by the proxy, each for milliseconds, so replacing it loses at most the connections being
 * accepted at that instant (recorded in the old map, looked for in the new one: the proxy closes them). The other
 * maps hold what must outlive a load (the redirect set, live sockets' original destinations, the counters):
 * another layout there stops the load.
 */
const REPLACEABLE: ReadonlySet<string> = new Set([MAP_NAMES.connections]);

export interface Capacity {
  services?: number;
  sockets?: number;
  connections?: number;
}

export interface InstallOptions {
  bpffs: string;
  cgroup: string;
  objectDir: string;
  settings: DatapathSettings;
  /** Map capacities; unset keeps a pinned map's capacity, or the compiled default. */
  capacity?: Capacity;
  logger?: Logger;
}

/** What a load did to each program's link; 'removed': a program the new build no longer has was detached. */
export type LinkAction = 'attached' | 'unchanged' | 'replaced' | 'removed';

export interface InstallReport {
  programs: { name: string; section: string; action: LinkAction; linkId: number; progId: number }[];
}

export const pinPaths = (bpffs: string) => ({
  maps: join(bpffs, 'maps'),
  links: join(bpffs, 'links'),
  map: (name: string) => join(bpffs, 'maps', name),
  link: (name: string) => join(bpffs, 'links', name),
  /** Where a pinned map of another layout waits while a load replaces it (removed once the load is through). */
  replaced: (name: string) => join(bpffs, 'maps', `${name}_replaced`), // bpffs refuses names with a dot
});

/** What a loaded program uses: its .rodata bytes (undefined when it has none) and the ids of its other maps. */
function mapsOf(native: NativeBinding, mapIds: number[]): { rodata: Buffer | undefined; shared: number[] } {
  let rodata: Buffer | undefined;
  const shared: number[] = [];
  for (const id of mapIds) {
    using(native.openMapById(id), (map) => {
      const name = map.info().name;
      if (name.endsWith('.rodata')) rodata = map.lookup(u32Key(0)) ?? undefined;
      else if (!name.includes('.')) shared.push(id); // the pinned maps; internal ones (.rodata, .bss) are per program
    });
  }
  return { rodata, shared: shared.sort((a, b) => a - b) };
}

/** The settings the attached connect programs were loaded with (from their .rodata), if any. */
export function attachedSettings(native: NativeBinding, progId: number): DatapathSettings | undefined {
  const raw = mapsOf(native, native.programInfoById(progId).mapIds).rodata;
  return raw && raw.length === settingsCodec.size ? settingsCodec.decode(raw) : undefined;
}

/**
 * Before an object is loaded: a pinned map whose layout differs from the object's is moved aside (REPLACEABLE),
 * so that the load creates and pins it anew, or stops the load. `aside` collects the names moved.
 */
function checkPinnedLayouts(native: NativeBinding, opts: InstallOptions, obj: NativeObject, aside: string[]): void {
  const paths = pinPaths(opts.bpffs);
  for (const m of obj.maps()) {
    const pin = paths.map(m.name);
    if (m.name.includes('.') || !existsSync(pin)) continue;
    const p = using(native.openPinnedMap(pin), (h) => h.info());
    if (p.type === m.type && p.keySize === m.keySize && p.valueSize === m.valueSize) continue;
    const what = `pinned map ${m.name} (type ${p.type}, key ${p.keySize} B, value ${p.valueSize} B) has another layout than this build's (type ${m.type}, key ${m.keySize} B, value ${m.valueSize} B)`;
    if (!REPLACEABLE.has(m.name)) throw new DatapathError('ECNET_BPF_LOAD', `${what}: run \`ecnet bpf unload\` first`);
    opts.logger?.warn({ map: m.name, pinned: { keySize: p.keySize, valueSize: p.valueSize }, wanted: { keySize: m.keySize, valueSize: m.valueSize } }, 'replacing a pinned map of another layout');
    renameSync(pin, paths.replaced(m.name));
    aside.push(m.name);
  }
}

/** Puts the maps moved aside back in place of the ones this load pinned (nothing uses those yet). */
function restoreAside(paths: ReturnType<typeof pinPaths>, aside: string[]): void {
  for (const name of aside.splice(0)) {
    rmSync(paths.map(name), { force: true });
    renameSync(paths.replaced(name), paths.map(name));
  }
}

/**
 * A load that died between moving a pin aside and finishing left it there: the pin it made in its place (if
 * any) is what later loads use; without one, the old map goes back and is judged again.
 */
function recoverAside(paths: ReturnType<typeof pinPaths>): void {
  for (const name of REPLACEABLE) {
    if (!existsSync(paths.replaced(name))) continue;
    if (existsSync(paths.map(name))) unlinkSync(paths.replaced(name));
    else renameSync(paths.replaced(name), paths.map(name));
  }
}

function resolveCapacity(native: NativeBinding, bpffs: string, capacity: Capacity): Map<string, number> {
  const out = new Map<string, number>();
  for (const role of ['services', 'sockets', 'connections'] as const) {
    const name = MAP_NAMES[role];
    const pin = pinPaths(bpffs).map(name);
    const pinned = existsSync(pin) ? using(native.openPinnedMap(pin), (m) => m.info().maxEntries) : undefined;
    const wanted = capacity[role];
    if (wanted !== undefined && pinned !== undefined && wanted !== pinned) {
      throw new DatapathError(
        'ECNET_BPF_LOAD',
        `pinned map ${name} holds up to ${pinned} entries, ${wanted} requested: run \`ecnet bpf unload\` first to change its size`,
      );
    }
    const n = wanted ?? pinned;
    if (n !== undefined) out.set(name, n);
  }
  return out;
}

/** Runs `fn` with a handle the caller just opened, and closes it whatever happens. */
function using<H extends { close(): void }, T>(handle: H, fn: (h: H) => T): T {
  try {
    return fn(handle);
  } finally {
    handle.close();
  }
}

function loadObjects(native: NativeBinding, opts: InstallOptions, capacity: Map<string, number>, aside: string[]): NativeObject[] {
  const objects: NativeObject[] = [];
  const rodata = settingsCodec.encode(opts.settings);
  try {
    for (const name of OBJECT_NAMES) {
      const file = join(opts.objectDir, `${name}.bpf.o`);
      if (!existsSync(file)) {
        throw new DatapathError('ECNET_BPF_LOAD', `BPF object ${file} is missing (run npm run build)`);
      }
      const obj = native.openObject(file, pinPaths(opts.bpffs).maps);
      objects.push(obj);
      for (const m of obj.maps()) {
        const n = capacity.get(m.name);
        if (n !== undefined) obj.setMaxEntries(m.name, n);
        if (m.name.endsWith('.rodata')) {
          if (m.valueSize !== rodata.length) {
            throw new DatapathError('ECNET_BPF_LOAD', `${file}: .rodata is ${m.valueSize} bytes, struct ecnet_config is ${rodata.length}`);
          }
          obj.setInitialValue('.rodata', rodata);
        }
      }
      checkPinnedLayouts(native, opts, obj, aside);
      obj.load();
    }
    return objects;
  } catch (cause) {
    for (const o of objects) o.close();
    if (cause instanceof DatapathError || cause instanceof AddressError) throw cause;
    throw new DatapathError('ECNET_BPF_LOAD', `loading the BPF programs failed: ${(cause as Error).message}`, { cause });
  }
}

/** Host checks, then load-or-reuse and attach-once. Idempotent. */
export function install(opts: InstallOptions): InstallReport {
  checkRoot();
  checkKernel();
  checkCgroup(opts.cgroup);
  ensureBpffs(opts.bpffs);
  const native = loadNative();
  const paths = pinPaths(opts.bpffs);
  mkdirSync(paths.maps, { recursive: true });
  mkdirSync(paths.links, { recursive: true });

  recoverAside(paths);
  const mapsBefore = new Set(readdirSync(paths.maps));
  // Pins of another layout moved aside by this load: put back if it fails before any program uses the new maps.
  const aside: string[] = [];
  let objects: NativeObject[];
  try {
    objects = loadObjects(native, opts, resolveCapacity(native, opts.bpffs, opts.capacity ?? {}), aside);
  } catch (err) {
    restoreAside(paths, aside);
    // Objects that did load pinned their maps: remove the pins this call created (no program uses them).
    for (const name of readdirSync(paths.maps)) if (!mapsBefore.has(name)) rmSync(paths.map(name), { force: true });
    throw err;
  }
  const wantCgroup = cgroupId(opts.cgroup);
  const report: InstallReport = { programs: [] };
  const attachedNow: string[] = [];
  // Whether a program of this load has replaced one on its link: from then on the maps this load pinned are in use.
  let swapped = false;
  try {
    // Plan first, without changing anything, so that an incompatible pin stops the load before any change.
    const plan: { obj: NativeObject; name: string; section: string; pin: string; state: 'new' | 'existing' | 'defunct' }[] = [];
    for (const obj of objects) {
      for (const p of obj.programs()) {
        const pin = paths.link(p.name);
        let state: 'new' | 'existing' | 'defunct' = 'new';
        if (existsSync(pin)) {
          const info = using(native.openPinnedLink(pin), (l) => l.info());
          // cgroupId 0: the cgroup it was attached to is gone (or it was detached): the link is defunct.
          state = info.cgroupId === 0 ? 'defunct' : 'existing';
          if (state === 'existing' && info.cgroupId !== wantCgroup) {
            throw new DatapathError(
              'ECNET_BPF_LOAD',
              `${p.name} is already attached to another cgroup (id ${info.cgroupId}, not ${opts.cgroup}): run \`ecnet bpf unload\` first`,
            );
          }
        }
        plan.push({ obj, name: p.name, section: p.section, pin, state });
      }
    }
    for (const step of plan) {
      const fresh = step.obj.programInfo(step.name);
      if (step.state === 'defunct') {
        opts.logger?.warn({ program: step.name, pin: step.pin }, 'replacing a defunct link');
        using(native.openPinnedLink(step.pin), (l) => l.unpin());
      }
      if (step.state !== 'existing') {
        const link = step.obj.attachCgroup(step.name, opts.cgroup);
        try {
          link.pin(step.pin);
          attachedNow.push(step.pin);
          report.programs.push({ name: step.name, section: step.section, action: 'attached', linkId: link.info().id, progId: fresh.id });
        } finally {
          link.close();
        }
        continue;
      }
      const link = native.openPinnedLink(step.pin);
      try {
        const info = link.info();
        const old = native.programInfoById(info.progId);
        const [was, now] = [mapsOf(native, old.mapIds), mapsOf(native, fresh.mapIds)];
        // The same instructions (the tag leaves map references out), settings and maps: a map replaced above
        // leaves the same code writing to the old map, so it is swapped in too.
        const same =
          old.tag === fresh.tag &&
          Buffer.compare(was.rodata ?? Buffer.alloc(0), now.rodata ?? Buffer.alloc(0)) === 0 &&
          was.shared.join() === now.shared.join();
        if (!same) {
          swapped = true;
          step.obj.updateLink(link, step.name); // atomic: the hook is never empty
        }
        report.programs.push({
          name: step.name,
          section: step.section,
          action: same ? 'unchanged' : 'replaced',
          linkId: info.id,
          progId: same ? old.id : fresh.id,
        });
      } finally {
        link.close();
      }
    }
    // Programs an older build had and this one has not: detach them, or they would run forever.
    const planned = new Set(plan.map((p) => p.name));
    for (const name of readdirSync(paths.links).filter((n) => !planned.has(n))) {
      detachPin(native, paths.link(name));
      report.programs.push({ name, section: '', action: 'removed', linkId: 0, progId: 0 });
    }
  } catch (err) {
    // Undo the attachments made by this call, each on its own; replaced programs stay replaced (the swap is
    // atomic and complete). The original error is what the caller sees; undo failures are logged with it.
    const undo = bestEffort(attachedNow, (pin) => detachPin(native, pin));
    if (undo.length) opts.logger?.error({ err, undo }, 'rolling back the attachments failed too');
    // Maps moved aside go back unless a program of this load runs (and may have recorded into the new ones).
    try {
      if (swapped || undo.length) dropAside(paths, aside);
      else restoreAside(paths, aside);
    } catch (pins) {
      opts.logger?.error({ err, pins }, 'settling the replaced map pins failed too');
    }
    throw err instanceof DatapathError ? err : new DatapathError('ECNET_BPF_LOAD', `attaching failed: ${(err as Error).message}`, { cause: err });
  } finally {
    for (const o of objects) o.close();
  }
  dropAside(paths, aside);
  for (const p of report.programs) opts.logger?.info(p, `program ${p.action}`);
  return report;
}

/** The replaced maps' pins go; the kernel frees each map when the last program using it is swapped out. */
function dropAside(paths: ReturnType<typeof pinPaths>, aside: string[]): void {
  for (const name of aside.splice(0)) unlinkSync(paths.replaced(name));
}

function detachPin(native: NativeBinding, pin: string): void {
  using(native.openPinnedLink(pin), (link) => {
    link.detach();
    link.unpin();
  });
}

/** Runs `fn` on every item, whatever fails; returns the failures. */
function bestEffort<T>(items: T[], fn: (item: T) => void): { item: T; err: unknown }[] {
  const failed: { item: T; err: unknown }[] = [];
  for (const item of items) {
    try {
      fn(item);
    } catch (err) {
      failed.push({ item, err });
    }
  }
  return failed;
}

export interface UninstallReport {
  detached: string[];
  unpinned: string[];
}

/**
 * Detaches every pinned link and removes every pin under `bpffs`, then the directory itself. Best effort:
 * one failure does not stop the rest; all of them are thrown together at the end (ECNET_UNINSTALL).
 */
export function uninstall(bpffs: string, logger?: Logger): UninstallReport {
  checkRoot();
  const paths = pinPaths(bpffs);
  const report: UninstallReport = { detached: [], unpinned: [] };
  if (!existsSync(bpffs)) return report;
  const native = loadNative();
  const links = existsSync(paths.links) ? readdirSync(paths.links) : [];
  const maps = existsSync(paths.maps) ? readdirSync(paths.maps) : [];
  const failed = [
    ...bestEffort(links, (name) => {
      detachPin(native, paths.link(name));
      report.detached.push(name);
    }),
    ...bestEffort(maps, (name) => {
      unlinkSync(paths.map(name));
      report.unpinned.push(name);
    }),
  ];
  if (!failed.length) {
    failed.push(...bestEffort([paths.links, paths.maps, bpffs], (dir) => existsSync(dir) && rmdirSync(dir)));
  }
  if (failed.length) {
    logger?.error({ failed: failed.map((f) => ({ item: f.item, err: String(f.err) })) }, 'uninstall incomplete');
    throw new DatapathError(
      'ECNET_UNINSTALL',
      `uninstall of ${bpffs} incomplete: ${failed.map((f) => `${f.item}: ${(f.err as Error).message}`).join('; ')}`,
      { cause: new AggregateError(failed.map((f) => f.err)) },
    );
  }
  logger?.info(report, 'datapath uninstalled');
  return report;
}
