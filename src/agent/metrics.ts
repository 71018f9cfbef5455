// The agent's own Prometheus families (the node proxy's are in proxy/metrics.ts, in the same registry): its
// reconciles, its routes, and the datapath — each map's fill and the programs' counters (ecnet_stats).
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface AgentMetricsSources {
  status: () => { synced: boolean; redirects: number; degraded: unknown[] };
  /** Routes by state: redirected, or kept for kube-proxy (a retiring one). */
  routes: () => { redirected: number; kept: number };
  /** The datapath's maps (Datapath.fill) and counters (Datapath.stats); either may throw (a closed handle). */
  fill?: () => { map: string; entries: number; capacity: number }[];
  counters?: () => Record<string, number>;
  /** The kernel splicer's pairs now (its own and the front's). */
  pairs?: () => number;
}

export class AgentMetrics {
  readonly reconcile: Histogram;
  readonly reconcileErrors: Counter;
  #fillAt = 0;
  #fill: { map: string; entries: number; capacity: number }[] = [];
  readonly #counted = new Map<string, number>();

  constructor(registry: Registry, s: AgentMetricsSources, now: () => number = Date.now) {
    const registers = [registry];
    this.reconcile = new Histogram({ name: 'ecnet_agent_reconcile_duration_seconds', help: 'Time of one reconcile (imports, policies, services and slices to the datapath and the routes)', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers });
    this.reconcileErrors = new Counter({ name: 'ecnet_agent_reconcile_errors_total', help: 'Reconciles that failed (the datapath keeps its previous state; retried with backoff)', registers });
    new Gauge({ name: 'ecnet_agent_synced', help: '1 once the agent has listed what it watches and reconciled, else 0', registers, collect() { this.set(s.status().synced ? 1 : 0); } });
    new Gauge({ name: 'ecnet_agent_imports_degraded', help: 'Imports left out of the datapath (see the Warning events on them)', registers, collect() { this.set(s.status().degraded.length); } });
    new Gauge({
      name: 'ecnet_agent_routes',
      help: 'Imported service addresses, by state: redirected to the node proxy, or kept for kube-proxy',
      labelNames: ['state'],
      registers,
      collect() {
        const r = s.routes();
        this.set({ state: 'redirected' }, r.redirected);
        this.set({ state: 'kept' }, r.kept);
      },
    });
    const fill = () => {
      // Dumping the LRU maps costs a copy of each: at most every 10 s, however often Prometheus asks.
      if (s.fill && now() - this.#fillAt >= 10_000) {
        try {
          this.#fill = s.fill();
          this.#fillAt = now();
        } catch {
          // a closed datapath handle (a hand-over): the last figures stand
        }
      }
      return this.#fill;
    };
    new Gauge({ name: 'ecnet_datapath_map_entries', help: 'Entries in each datapath map (read at most every 10 s)', labelNames: ['map'], registers, collect() { for (const f of fill()) this.set({ map: f.map }, f.entries); } });
    new Gauge({ name: 'ecnet_datapath_map_capacity', help: 'Capacity (max_entries) of each datapath map', labelNames: ['map'], registers, collect() { for (const f of fill()) this.set({ map: f.map }, f.capacity); } });
    const counted = this.#counted;
    new Counter({
      name: 'ecnet_datapath_events_total',
      help: "The datapath programs' counters (ecnet_stats, summed over CPUs), by event",
      labelNames: ['event'],
      registers,
      collect() {
        let c: Record<string, number> | undefined;
        try {
          c = s.counters?.();
        } catch {
          c = undefined;
        }
        for (const [event, total] of Object.entries(c ?? {})) {
          // Counters only go up: a datapath reloaded from scratch starts again at 0, which counts as a reset.
          const was = counted.get(event) ?? 0;
          this.inc({ event }, total >= was ? total - was : total);
          counted.set(event, total);
        }
      },
    });
    if (s.pairs) new Gauge({ name: 'ecnet_splicer_pairs', help: 'Connection pairs the kernel splicer carries now', registers, collect() { this.set(s.pairs!()); } });
  }

  reconciled(seconds: number, err?: unknown): void {
    this.reconcile.observe(seconds);
    if (err) this.reconcileErrors.inc();
  }
}
