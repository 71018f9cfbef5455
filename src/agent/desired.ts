// What a node's datapath and proxy must hold, from the resources of its cluster: a ClusterIP:port of an
// imported service is redirected to the node proxy while its policy may send a connection to another cluster
// (or refuses one that kube-proxy would serve here),
// and the proxy's route for it names the service, the exporting clusters' gateways, the GlobalTrafficPolicy and
// the service's ready local endpoints. When the policy keeps every connection here (no policy or Locality,
// with ready local endpoints) the address is left to kube-proxy, as before the service was exported.
// Pure: resources in, desired state out. NodePlan keeps the answer per import, so that a change costs the
// imports it touches and one cheap merge, not a pass over every resource of the cluster.
import { isIP } from 'node:net';
import { type EndpointSlice, type Service, clusterIPsOf } from '../api/core.js';
import type { ClusterKey, GlobalTrafficPolicy, ServiceImport } from '../api/flomesh.js';
import { isClusterMachinery } from '../api/protected.js';
import { localEndpoints, slicesByService } from '../endpoints/slices.js';
import { needsNodeProxy } from '../policy/plan.js';
import { fnv1a } from '../util/hash.js';
import type { Route } from '../proxy/proxy.js';

export interface RedirectEntry {
  ip: string;
  port: number;
  /** A stable number for the service port, shown by `ecnet bpf dump`. */
  id: number;
}

export interface DesiredNode {
  redirects: RedirectEntry[];
  /** `ip:port` → route, for each redirect */
  routes: Map<string, Route>;
  /** `ip:port` → route of imported addresses left to kube-proxy (the policy keeps them in this cluster). */
  kept: Map<string, Route>;
  /** Imports left out because they (or their policy) could not be read. */
  problems: { import: string; error: string }[];
}

export const routeKey = (ip: string, port: number): string => `${ip}:${port}`;

/** The datapath's id of an import's port (`namespace/name`): what its records carry, shown by `ecnet bpf dump`. */
export const redirectId = (importKey: string, port: number): number => fnv1a(`${importKey}:${port}`);

/** What one import contributes, computed from its own inputs (the same namespace/name of each kind). */
export interface ImportInputs {
  import: ServiceImport | undefined;
  service: Service | undefined;
  policy: GlobalTrafficPolicy | undefined;
  slices: EndpointSlice[];
}

type Problem = { import: string; error: string };

/** An import's ask for one ip:port. */
interface Claim {
  key: string;
  entry: RedirectEntry;
  route: Route;
}

interface ImportPart {
  claims: Claim[];
  kept: Map<string, Route>;
  /** Its own problems (not those of sharing an address with another import). */
  problems: Problem[];
}

/** What changed since the last takeChanges(): `all` when the rule of capacity is in play (everything may move). */
export interface PlanChanges {
  all: boolean;
  /** ip:port whose redirect (or route) may have changed. */
  redirects: Set<string>;
  /** ip:port whose kept route may have changed. */
  kept: Set<string>;
}

const byCodeUnit = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The node's desired state kept one import at a time: `update` recomputes one `namespace/name` from its inputs
 * and re-files its claims, so a change costs that import, not the node's 10,000. The rules that need every import
 * are kept per address: each ip:port once (the first import in namespace/name order keeps it; the others are
 * reported), and at most `capacity` addresses (the first ones in namespace/name order; the rest is left out and
 * reported, never the whole set). Pure.
 */
export class NodePlan {
  readonly #localCluster: ClusterKey;
  readonly #capacity: number;
  readonly #parts = new Map<string, ImportPart>();
  /** ip:port → the imports asking for it, in namespace/name order: the first one has it. */
  readonly #claims = new Map<string, Claim[]>();
  readonly #kept = new Map<string, { key: string; route: Route }[]>();
  #changes: PlanChanges = { all: true, redirects: new Set(), kept: new Set() };
  /** Over capacity: the addresses that fit (computed when asked, until the next update). */
  #admitted: Set<string> | undefined;
  #problems: Problem[] | undefined;
  #problemsVersion = 0;
  /** Imports with problems of their own, and addresses asked for by more than one import. */
  readonly #troubled = new Set<string>();
  readonly #contested = new Set<string>();

  constructor(localCluster: ClusterKey, capacity = Infinity) {
    this.#localCluster = localCluster;
    this.#capacity = capacity;
  }

  update(key: string, inputs: ImportInputs): void {
    const imp = inputs.import;
    const old = this.#parts.get(key);
    // Headless: no ClusterIP to redirect.
    const next = imp && (imp.spec as Partial<ServiceImport['spec']> | undefined)?.type !== 'Headless' ? importPart(key, imp, inputs.service, inputs.policy?.spec, inputs.slices, this.#localCluster) : undefined;
    if (!old && !next) return;
    this.#admitted = undefined;
    // Problems are gathered again only when this import had or has some, when an address it shares changes
    // hands (#file, #unfile), or when the capacity rule is in play: not on every change of the node's others.
    if (old?.problems.length || next?.problems.length || this.#claims.size > this.#capacity) this.#problemsChanged();
    for (const c of old?.claims ?? []) this.#unfile(this.#claims, routeKey(c.entry.ip, c.entry.port), key, this.#changes.redirects, this.#contested);
    for (const rk of old?.kept.keys() ?? []) this.#unfile(this.#kept, rk, key, this.#changes.kept);
    this.#troubled.delete(key);
    if (next?.problems.length) this.#troubled.add(key);
    if (next) {
      this.#parts.set(key, next);
      for (const c of next.claims) this.#file(this.#claims, routeKey(c.entry.ip, c.entry.port), c, this.#changes.redirects, this.#contested);
      for (const [rk, route] of next.kept) this.#file(this.#kept, rk, { key, route }, this.#changes.kept);
    } else this.#parts.delete(key);
    if (this.#claims.size > this.#capacity || (old && this.#claims.size + old.claims.length > this.#capacity)) this.#changes.all = true;
  }

  #unfile<T extends { key: string }>(index: Map<string, T[]>, rk: string, key: string, changed: Set<string>, contested?: Set<string>): void {
    const list = index.get(rk)?.filter((c) => c.key !== key);
    if (list?.length) index.set(rk, list);
    else index.delete(rk);
    if (contested?.has(rk)) this.#problemsChanged();
    if ((list?.length ?? 0) < 2) contested?.delete(rk);
    changed.add(rk);
  }

  #file<T extends { key: string }>(index: Map<string, T[]>, rk: string, claim: T, changed: Set<string>, contested?: Set<string>): void {
    const list = index.get(rk);
    if (!list) index.set(rk, [claim]);
    else if (!list.some((c) => c.key === claim.key)) {
      index.set(rk, [...list, claim].sort((a, b) => byCodeUnit(a.key, b.key)));
      if (contested) {
        contested.add(rk);
        this.#problemsChanged();
      }
    }
    changed.add(rk);
  }

  /** The addresses that fit, when more are asked for than the datapath holds; undefined when all fit. */
  #fits(): Set<string> | undefined {
    if (this.#claims.size <= this.#capacity) return undefined;
    if (this.#admitted) return this.#admitted;
    const admitted = new Set<string>();
    for (const k of [...this.#parts.keys()].sort(byCodeUnit)) {
      for (const c of this.#parts.get(k)!.claims) {
        const rk = routeKey(c.entry.ip, c.entry.port);
        if (admitted.size < this.#capacity && this.#claims.get(rk)![0]!.key === k) admitted.add(rk);
      }
    }
    this.#admitted = admitted;
    return admitted;
  }

  /** The redirect of `ip:port` and its route, if it is redirected. */
  get(rk: string): { entry: RedirectEntry; route: Route } | undefined {
    const c = this.#claims.get(rk)?.[0];
    const fits = this.#fits();
    return c && (!fits || fits.has(rk)) ? c : undefined;
  }

  keptRoute(rk: string): Route | undefined {
    return this.#kept.get(rk)?.[0]?.route;
  }

  /** Every redirect, in namespace/name order. */
  redirects(): RedirectEntry[] {
    const out: RedirectEntry[] = [];
    for (const k of [...this.#parts.keys()].sort(byCodeUnit)) {
      for (const c of this.#parts.get(k)!.claims) if (this.get(routeKey(c.entry.ip, c.entry.port)) === c) out.push(c.entry);
    }
    return out;
  }

  routes(): Map<string, Route> {
    const out = new Map<string, Route>();
    for (const rk of this.#claims.keys()) {
      const w = this.get(rk);
      if (w) out.set(rk, w.route);
    }
    return out;
  }

  kept(): Map<string, Route> {
    return new Map([...this.#kept].map(([rk, list]) => [rk, list[0]!.route]));
  }

  get size(): number {
    return Math.min(this.#claims.size, this.#capacity);
  }

  #problemsChanged(): void {
    this.#problems = undefined;
    this.#problemsVersion++;
  }

  /** Changes whenever problems() may answer differently: a caller compares it instead of the list. */
  get problemsVersion(): number {
    return this.#problemsVersion;
  }

  /** Imports (or their addresses) left out, and why, in namespace/name order (then by the text). */
  problems(): Problem[] {
    if (this.#problems) return this.#problems;
    const out: Problem[] = [];
    for (const k of this.#troubled) out.push(...this.#parts.get(k)!.problems);
    for (const rk of this.#contested) {
      const [first, ...rest] = this.#claims.get(rk)!;
      for (const c of rest) out.push({ import: c.key, error: `${rk} is redirected for ${first!.route.namespace}/${first!.route.service} already: left out` });
    }
    const fits = this.#fits();
    if (fits) for (const [rk, [first]] of this.#claims) if (!fits.has(rk)) out.push({ import: first!.key, error: `the datapath holds ${this.#capacity} redirects: ${rk} left out` });
    this.#problems = out.sort((a, b) => byCodeUnit(a.import, b.import) || byCodeUnit(a.error, b.error));
    return this.#problems;
  }

  /** What changed since the last call (everything, the first time). */
  takeChanges(): PlanChanges {
    const c = this.#changes;
    this.#changes = { all: false, redirects: new Set(), kept: new Set() };
    return c;
  }

  result(): DesiredNode {
    return { redirects: this.redirects(), routes: this.routes(), kept: this.kept(), problems: this.problems() };
  }
}

/** The whole computation at once (tests, the CLI): every import through one NodePlan. */
export function desiredNode(input: {
  localCluster: ClusterKey;
  imports: ServiceImport[];
  policies: GlobalTrafficPolicy[];
  services: Service[];
  endpointSlices: EndpointSlice[];
  /** How many redirects the datapath holds (its map's capacity); default: no limit. */
  capacity?: number;
}): DesiredNode {
  const key = (o: { metadata: { namespace?: string; name: string } }) => `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
  const policies = new Map(input.policies.map((p) => [key(p), p]));
  const services = new Map(input.services.map((s) => [key(s), s]));
  const slices = slicesByService(input.endpointSlices);
  const plan = new NodePlan(input.localCluster, input.capacity);
  for (const imp of input.imports) {
    const k = key(imp);
    plan.update(k, { import: imp, service: services.get(k), policy: policies.get(k), slices: slices.get(k) ?? [] });
  }
  return plan.result();
}

/** Ports one import may redirect at most: what it asks for beyond this costs it alone, not the node's map. */
export const MAX_PORTS_PER_IMPORT = 100;

/** One import's claims, routes and kept addresses, or its problems; never throws, whatever the import holds. */
function importPart(k: string, imp: ServiceImport, svc: Service | undefined, policy: GlobalTrafficPolicy['spec'] | undefined, slices: EndpointSlice[], localCluster: ClusterKey): ImportPart {
  const out: ImportPart = { claims: [], kept: new Map(), problems: [] };
  // One import (or its policy, or its Service) that does not hold together costs only itself.
  try {
    const [namespace, name] = [imp.metadata.namespace, imp.metadata.name];
    if (isClusterMachinery(namespace, name)) {
      out.problems.push({ import: k, error: "the cluster's own Service (the API server's, or kube-system): never redirected" });
      return out;
    }
    const spec = imp.spec as Partial<ServiceImport['spec']> | undefined;
    if (typeof spec !== 'object' || spec === null) {
      out.problems.push({ import: k, error: 'it has no spec: not redirected' });
      return out;
    }
    // Only this cluster's own ClusterIP of the same-named Service (the derived Service, or the exporter's own):
    // an import must not take over any other address (another team's VIP, an external database).
    const own = new Set(svc ? clusterIPsOf(svc) : []);
    const all: unknown[] = Array.isArray(spec.ips) ? spec.ips : [];
    const foreign = all.filter((ip) => !own.has(ip as string));
    if (foreign.length) out.problems.push({ import: k, error: `spec.ips ${foreign.map(String).join(', ')} ${foreign.length > 1 ? 'are' : 'is'} not the ClusterIP of Service ${k} in this cluster: not redirected` });
    const ips: string[] = [];
    for (const ip of all.filter((x) => own.has(x as string))) {
      if (typeof ip === 'string' && isIP(ip)) ips.push(ip);
      else out.problems.push({ import: k, error: `${String(ip)} is not an IP address: not redirected` });
    }
    // Only ports its Service has (TCP), and at most MAX_PORTS_PER_IMPORT of them: an import cannot make up
    // ports to fill the node's map.
    const servicePorts = new Set((svc?.spec.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP').map((p) => p.port));
    const ports = (Array.isArray(spec.ports) ? spec.ports : []).filter((port) => (port.protocol ?? 'TCP') === 'TCP'); // the datapath redirects TCP only
    const unknown = ports.filter((port) => !servicePorts.has(port.port));
    if (unknown.length) out.problems.push({ import: k, error: `port ${unknown.slice(0, 5).map((p) => p.port).join(', ')}${unknown.length > 5 ? ', …' : ''} is not a port of Service ${k} in this cluster: not redirected` });
    const mine = ports.filter((port) => servicePorts.has(port.port));
    if (mine.length > MAX_PORTS_PER_IMPORT) out.problems.push({ import: k, error: `${mine.length} ports: only the first ${MAX_PORTS_PER_IMPORT} are redirected` });
    const local = localEndpoints(svc, slices);
    const claims: Claim[] = [];
    const kept = new Map<string, Route>();
    for (const port of mine.slice(0, MAX_PORTS_PER_IMPORT)) {
      const route: Route = {
        service: name,
        namespace: namespace ?? 'default',
        port: port.port,
        exporters: port.endpoints.map((e) => ({ clusterKey: e.clusterKey, gateway: { host: e.target.ip || e.target.host, port: e.target.port } })),
        policy,
        localEndpoints: local.get(port.port) ?? [],
      };
      const leaves = needsNodeProxy({ localCluster, localEndpoints: route.localEndpoints.length > 0, exporters: route.exporters, policy });
      for (const ip of ips) {
        if (!leaves) kept.set(routeKey(ip, port.port), route);
        else claims.push({ key: k, entry: { ip, port: port.port, id: redirectId(k, port.port) }, route });
      }
    }
    Object.assign(out, { claims, kept });
  } catch (err) {
    out.problems.push({ import: k, error: (err as Error).message });
  }
  return out;
}
