// The two places the MCS conformance suite runs its cluster set, behind one small interface: the members' API
// (put an object, remove it, read one, list), starting and closing the controlled set, and what a pod of a
// member gets for a clusterset.local name.
//  - ApiServerBackend: in-memory API servers (a hub and the members) and the controller watching them through
//    the real client (test/helpers/controlled-set.ts).
//  - LocalBackend: `ecnet local`'s control plane: one directory per cluster (the local source), the seed's
//    Clusters (examples/clusters.yaml) in <dir>/control-plane, and the controller in local mode built as the
//    supervisor of `ecnet local up` builds it (src/local/supervisor.ts: a LocalSource of the control-plane
//    directory, memberConnector({ controlPlane, clustersDir }), identities issued). Tests write and read the
//    member directories as `ecnet apply` / `ecnet get` / `ecnet delete` do: an unwatched local source each.
// No network namespaces: the local source is files.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { Service } from '../../src/api/core.js';
import { leaderElectionDefaults } from '../../src/config.js';
import { memberConnector } from '../../src/controlplane/connect.js';
import { Controller } from '../../src/controlplane/controller.js';
import { defaults } from '../../src/defaults.js';
import { hostsText } from '../../src/local/endpoints.js';
import { packageRoot } from '../../src/paths.js';
import { LocalSource } from '../../src/sources/local.js';
import { type KindRef, Kinds, type KubeObject } from '../../src/sources/source.js';
import { applyRule, readCoreDns, rewriteRules } from './coredns.js';
import { type ControlledSet, startControlledSet } from './controlled-set.js';
import { type KubeApiServer, startKubeApiServer } from './kube-api-server.js';

/** One member cluster as a test sees it. */
export interface MemberApi {
  put(o: KubeObject): Promise<void>;
  remove(kind: KindRef, namespace: string, name: string): Promise<void>;
  object<T extends KubeObject = KubeObject>(kind: KindRef, namespace: string, name: string): Promise<T | undefined>;
  objects<T extends KubeObject = KubeObject>(kind: KindRef, namespace: string): Promise<T[]>;
}

export interface McsBackend {
  readonly name: string;
  /** The stated bound on withdrawal: every member has lost the import this soon after the last export went. */
  readonly withdrawMs: number;
  /** Starts the controlled set of `members` (the controller's resync is `resyncMs`). */
  start(members: readonly string[], o: { resyncMs: number }): Promise<void>;
  member(name: string): MemberApi;
  /** The address a pod of `member` gets for `<name>.<namespace>.svc.clusterset.local` (undefined: no answer). */
  resolveClusterSet(member: string, namespace: string, name: string): Promise<string | undefined>;
  /** Changes whenever any member's EndpointSlices are written (a write of the same content included). */
  sliceWrites(): Promise<string>;
  close(): Promise<void>;
}

/**
 * CoreDNS with daemonset/coredns's Corefile, simulated: the rewrite turns the clusterset.local question into its
 * cluster.local name, and the kubernetes plugin answers `<svc>.<ns>.svc.cluster.local` with that Service's
 * ClusterIP (no answer for a headless Service's name here, nor for a name not of that form).
 */
const coreDnsRules = rewriteRules(readCoreDns('coredns.yaml').data.Corefile!);
export function coreDnsAnswer(qname: string, service: (namespace: string, name: string) => Service | undefined): string | undefined {
  const asked = applyRule(coreDnsRules.name, qname);
  const m = /^([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local\.$/.exec(asked);
  if (!m) return undefined;
  const ip = service(m[2]!, m[1]!)?.spec.clusterIP;
  return ip && ip !== 'None' ? ip : undefined;
}

export class ApiServerBackend implements McsBackend {
  readonly name = 'in-memory API servers';
  /**
   * Measured on a 2-core machine: 13–23 ms, 31–55 ms with two suites at once and two busy loops beside (the
   * controller acts on the watch event, within its 5 ms debounce).
   */
  readonly withdrawMs = 2_000;
  readonly servers = new Map<string, KubeApiServer>();
  set?: ControlledSet;

  constructor(private readonly subnet: string) {}

  async start(members: readonly string[], o: { resyncMs: number }): Promise<void> {
    for (const name of members) this.servers.set(name, await startKubeApiServer());
    this.set = await startControlledSet([...this.servers], { subnet: this.subnet, resyncMs: o.resyncMs });
  }

  server(name: string): KubeApiServer {
    const s = this.servers.get(name);
    if (!s) throw new Error(`no member ${name}`);
    return s;
  }

  member(name: string): MemberApi {
    const s = () => this.server(name);
    return {
      put: async (o) => void s().put(o),
      remove: async (kind, ns, n) => void s().remove(kind, ns, n),
      object: async <T extends KubeObject>(kind: KindRef, ns: string, n: string) => s().object<T>(kind, ns, n),
      objects: async <T extends KubeObject>(kind: KindRef, ns: string) => s().objects<T>(kind, ns),
    };
  }

  async resolveClusterSet(member: string, namespace: string, name: string): Promise<string | undefined> {
    return coreDnsAnswer(`${name}.${namespace}.svc.clusterset.local.`, (ns, n) => this.server(member).object<Service>(Kinds.Service, ns, n));
  }

  async sliceWrites(): Promise<string> {
    return String([...this.servers.values()].reduce((n, s) => n + s.requests.filter((r) => r.path.includes('/endpointslices') && r.method !== 'GET').length, 0));
  }

  async close(): Promise<void> {
    await this.set?.close();
  }
}

export class LocalBackend implements McsBackend {
  readonly name = 'ecnet local (cluster directories)';
  /**
   * Measured on a 2-core machine: 328–337 ms, 342–376 ms with two suites at once and two busy loops beside.
   * Most of it is by design: the controller's member sources watch their directories, and an object gone from
   * its file is dropped only after a second look 300 ms later (directory-store.ts, DELETE_GRACE_MS); then the
   * controller deletes the imports from the member directories.
   */
  readonly withdrawMs = 3_000;
  root = '';
  readonly #members = new Map<string, LocalSource>();
  #controller?: Controller;
  #controlPlane?: LocalSource;

  async start(members: readonly string[], o: { resyncMs: number }): Promise<void> {
    this.root = mkdtempSync(join(tmpdir(), 'ecnet-mcs-'));
    for (const c of ['control-plane', ...members]) mkdirSync(join(this.root, c));
    // The seed's Clusters, as `ecnet apply -f examples/clusters.yaml` into the control-plane directory.
    const cp = new LocalSource({ dir: join(this.root, 'control-plane'), watch: false });
    const seed = parseAllDocuments(readFileSync(join(packageRoot, 'examples', 'clusters.yaml'), 'utf8')).map((d) => d.toJSON() as KubeObject);
    for (const c of seed.filter((c) => members.includes(c.metadata.name))) await cp.apply(c, { manager: 'ecnet-cli' });
    cp.destroy();
    for (const m of members) this.#members.set(m, new LocalSource({ dir: join(this.root, m), watch: false }));
    // As src/local/supervisor.ts's supervise() builds it, the resync aside (the tests say which they need).
    this.#controlPlane = new LocalSource({ dir: join(this.root, 'control-plane') });
    const identities = { namespace: leaderElectionDefaults.namespace, clusterSet: defaults.clusterSet, ttlMs: defaults.identityTtlMs };
    this.#controller = new Controller({ controlPlane: this.#controlPlane, connect: memberConnector({ controlPlane: this.#controlPlane, clustersDir: this.root }), memberTimeoutMs: 60_000, resyncMs: o.resyncMs, identities });
    await this.#controller.start();
  }

  #src(name: string): LocalSource {
    const s = this.#members.get(name);
    if (!s) throw new Error(`no member ${name}`);
    return s;
  }

  member(name: string): MemberApi {
    return {
      put: async (o) => void (await this.#src(name).apply(o, { manager: 'ecnet-cli' })),
      remove: async (kind, ns, n) => void (await this.#src(name).delete(kind, n, ns)),
      object: (kind, ns, n) => this.#src(name).get(kind, n, ns),
      objects: (kind, ns) => this.#src(name).list(kind, ns),
    };
  }

  /** What `ecnet local` gives a pod of `member`: the /etc/hosts hostsText writes from the member's Services. */
  async resolveClusterSet(member: string, namespace: string, name: string): Promise<string | undefined> {
    const services = await this.#src(member).list<Service>(Kinds.Service);
    const hosts = hostsText({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: 'default' }, status: { podIP: '10.244.0.9' } }, services);
    const line = hosts.split('\n').find((l) => l.split(/\s+/).slice(1).includes(`${name}.${namespace}.svc.clusterset.local`));
    return line?.split(/\s+/)[0];
  }

  /** Every EndpointSlice file and its inode and modification time: an atomic write (temporary file + rename) changes both. */
  async sliceWrites(): Promise<string> {
    const out: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.startsWith('endpointslice')) {
          const st = statSync(p);
          out.push(`${p}:${st.ino}:${st.mtimeMs}`);
        }
      }
    };
    for (const m of this.#members.keys()) walk(join(this.root, m));
    return out.sort().join('\n');
  }

  async close(): Promise<void> {
    await this.#controller?.close();
    this.#controlPlane?.destroy();
    for (const s of this.#members.values()) s.destroy();
    if (this.root) rmSync(this.root, { recursive: true, force: true });
  }
}
