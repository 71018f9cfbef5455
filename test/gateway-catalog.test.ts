// The gateway's live catalog, kept one service at a time from informer events, must match a catalog built from
// every resource after each change: a slice whose service label changes moves to its new service, a deleted
// slice or export is gone, and only exports with path rules are matched by the ingress. No privileges.
import { afterEach, describe, expect, it } from 'vitest';
import type { EndpointSlice, Service } from '../src/api/core.js';
import type { ServiceExport } from '../src/api/flomesh.js';
import { LiveCatalog, catalogFrom } from '../src/gateway/live-catalog.js';
import { type KindRef, Kinds } from '../src/sources/source.js';
import { MemorySource } from './helpers/memory-source.js';
import { endpointSlice, kube, service, serviceExport } from './helpers/objects.js';

const svc = (name: string) => service('shop', name);
const slice = (name: string, svcName: string, ip: string) => endpointSlice('shop', svcName, [ip], { name });
const exp = (name: string, path?: string) => serviceExport('shop', name, path ? { rules: [{ portNumber: 80, path, pathType: 'Prefix' }] } : {});
const o = kube;
const settle = () => new Promise((r) => setTimeout(r, 30));

describe("the gateway's live catalog", () => {
  let catalog: LiveCatalog | undefined;
  afterEach(() => catalog?.close());

  it('after each change, equals the catalog built from every resource', async () => {
    const src = new MemorySource();
    for (const x of [svc('web'), svc('db'), slice('web-1', 'web', '10.42.0.1'), slice('web-2', 'web', '10.42.0.2'), slice('db-1', 'db', '10.42.0.3'), exp('web', '/web'), exp('db')]) src.put(o(x));
    catalog = new LiveCatalog();
    await catalog.start(src, 1);
    const full = () => {
      const list = <T>(kind: KindRef) => src.informer(kind).list() as T[];
      return catalogFrom(list<Service>(Kinds.Service), list<EndpointSlice>(Kinds.EndpointSlice), list<ServiceExport>(Kinds.ServiceExport));
    };
    const same = () => {
      const want = full();
      expect(new Map([...catalog!.all()].map((s) => [`${s.namespace}/${s.name}`, s]))).toEqual(want);
      expect([...catalog!.withIngress()].map((s) => s.name).sort()).toEqual([...want.values()].filter((s) => s.export?.rules?.some((r) => r.path)).map((s) => s.name).sort());
    };
    same();
    expect(catalog.get('shop', 'web')?.ports.get(80)?.map((e) => e.ip).sort()).toEqual(['10.42.0.1', '10.42.0.2']);
    // web-2 is relabelled to db: it leaves web and joins db.
    src.put(o(slice('web-2', 'db', '10.42.0.2')));
    await settle();
    same();
    expect(catalog.get('shop', 'web')?.ports.get(80)?.map((e) => e.ip)).toEqual(['10.42.0.1']);
    expect(catalog.get('shop', 'db')?.ports.get(80)?.map((e) => e.ip).sort()).toEqual(['10.42.0.2', '10.42.0.3']);
    // A slice deleted, an export gone, an export gaining a path.
    src.remove(o(slice('web-1', 'web', '10.42.0.1')));
    src.remove(o(exp('web', '/web')));
    src.put(o(exp('db', '/db')));
    await settle();
    same();
    expect(catalog.get('shop', 'web')?.export).toBeUndefined();
    expect([...catalog.withIngress()].map((s) => s.name)).toEqual(['db']);
    // The Service goes: so does its entry, whatever its slices say.
    src.remove(o(svc('db')));
    await settle();
    same();
    expect(catalog.get('shop', 'db')).toBeUndefined();
  });
});
