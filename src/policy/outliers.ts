// Outlier detection as Envoy does it, for any set of members in groups: the node proxy's (cluster, service)
// targets (group: the service, member: the cluster) and the gateway's endpoints (group: a service port,
// member: `ip:port`). Consecutive failures eject a member for base × 2^multiplier, capped; the multiplier grows
// with each ejection and decays while the member stays in; a success ends the streak (and an ejection); at most
// maxEjectionPercent of a group is ejected at once, but always at least one member may be.
// Pure: the caller reports outcomes and passes the time; nothing here schedules anything.

export interface OutlierOptions {
  /** Consecutive failures that eject a member. */
  consecutiveFailures: number;
  /** The first ejection; each further one doubles it (base × 2^multiplier), up to maxEjectMs. */
  baseEjectMs: number;
  maxEjectMs: number;
  /**
   * At most this share (percent) of a group's members ejected at once; a failure that would exceed it ejects
   * nothing (the streak goes on, and ejects once there is room). At least one member may always be ejected
   * (Envoy's rule), so a group of one can lose its only member: callers still try ejected members, last.
   */
  maxEjectionPercent: number;
  /**
   * The multiplier drops by one for each decayMs a member spends in (not ejected) after its last ejection
   * ended (Envoy decrements it every interval a host stays healthy). Counted lazily, at the next ejection.
   */
  decayMs: number;
  /**
   * A failure more than this after the member's last reported outcome starts a new streak. Envoy sees every
   * success; here the native fronts report failures only (their successes are counted per tag, not per
   * endpoint), so without a window three failures spread over hours would eject a healthy member.
   */
  streakWindowMs: number;
}

export const defaultOutliers: OutlierOptions = { consecutiveFailures: 3, baseEjectMs: 5_000, maxEjectMs: 60_000, maxEjectionPercent: 50, decayMs: 10_000, streakWindowMs: 30_000 };

/** What the detector knows of one member now. */
export interface OutlierView {
  /** The current streak of failures. */
  failures: number;
  /** The multiplier the next ejection would use (after decay until `now`). */
  multiplier: number;
  /** Ms left of the current ejection; 0 when in. */
  ejectedForMs: number;
}

interface Member {
  failures: number;
  /** When an outcome was last reported (prune() drops members not heard of for long). */
  lastAt: number;
  multiplier: number;
  ejectedUntil: number;
  /** When the last ejection ended (by time or early), from which the multiplier decays. */
  endedAt: number;
}

export class OutlierDetector {
  readonly #groups = new Map<string, Map<string, Member>>();
  readonly #o: OutlierOptions;
  /** Bumped when an ejection starts or is ended early (one that runs out by time does not bump it). */
  #version = 0;

  constructor(options: Partial<OutlierOptions> = {}) {
    this.#o = { ...defaultOutliers, ...options };
  }

  get options(): Readonly<OutlierOptions> {
    return this.#o;
  }

  /** Changes when an ejection starts or is ended early: a table built from isEjected() may be stale. */
  get version(): number {
    return this.#version;
  }

  #member(group: string, member: string): Member {
    let g = this.#groups.get(group);
    if (!g) this.#groups.set(group, (g = new Map()));
    let m = g.get(member);
    if (!m) g.set(member, (m = { failures: 0, lastAt: 0, multiplier: 0, ejectedUntil: 0, endedAt: 0 }));
    return m;
  }

  /**
   * A failure of `member`. `groupSize`: how many members the group has now (the caller knows; members never
   * reported count otherwise as absent). Returns whether this failure ejected it.
   */
  failure(group: string, member: string, now: number, groupSize?: number): boolean {
    const m = this.#member(group, member);
    if (m.failures > 0 && now - m.lastAt > this.#o.streakWindowMs) m.failures = 0;
    m.lastAt = now;
    m.failures++;
    // Already out: tried anyway (last, or as the only one) and failed again; the ejection runs its course.
    if (m.ejectedUntil > now || m.failures < this.#o.consecutiveFailures) return false;
    const size = Math.max(groupSize ?? 0, this.#groups.get(group)!.size);
    const ejected = this.ejectedIn(group, now);
    if (ejected > 0 && (100 * (ejected + 1)) / size > this.#o.maxEjectionPercent) return false;
    const multiplier = this.#decayed(m, now);
    m.ejectedUntil = now + Math.min(this.#o.maxEjectMs, this.#o.baseEjectMs * 2 ** Math.min(multiplier, 30));
    m.multiplier = multiplier + 1;
    m.endedAt = 0;
    m.failures = 0;
    this.#version++;
    return true;
  }

  /** A success of `member`: the streak ends, and so does an ejection (it was tried and it worked). */
  success(group: string, member: string, now: number): void {
    const m = this.#groups.get(group)?.get(member);
    // Nothing known: nothing to end (the common case costs a lookup, and no state is made).
    if (!m) return;
    m.lastAt = now;
    m.failures = 0;
    if (m.ejectedUntil > now) {
      m.ejectedUntil = 0;
      m.endedAt = now;
      this.#version++;
    }
    // Back to what no state means: forgotten, so that the maps hold the troubled members only.
    if (m.ejectedUntil <= now && this.#decayed(m, now) === 0) this.forget(group, member);
  }

  isEjected(group: string, member: string, now: number): boolean {
    return (this.#groups.get(group)?.get(member)?.ejectedUntil ?? 0) > now;
  }

  /** How many members of `group` are ejected now. */
  ejectedIn(group: string, now: number): number {
    let n = 0;
    for (const m of this.#groups.get(group)?.values() ?? []) if (m.ejectedUntil > now) n++;
    return n;
  }

  /** The earliest time after `now` at which an ejection in `group` (or any group) runs out; undefined: none. */
  nextExpiry(now: number, group?: string): number | undefined {
    let next: number | undefined;
    const groups = group === undefined ? this.#groups.values() : [this.#groups.get(group) ?? new Map<string, Member>()];
    for (const g of groups) for (const m of g.values()) if (m.ejectedUntil > now && (next === undefined || m.ejectedUntil < next)) next = m.ejectedUntil;
    return next;
  }

  view(group: string, member: string, now: number): OutlierView {
    const m = this.#groups.get(group)?.get(member);
    if (!m) return { failures: 0, multiplier: 0, ejectedForMs: 0 };
    return { failures: m.failures, multiplier: m.ejectedUntil > now ? m.multiplier : this.#decayed(m, now), ejectedForMs: Math.max(0, m.ejectedUntil - now) };
  }

  /** Forgets a member (gone from its group), or a whole group. */
  forget(group: string, member?: string): void {
    if (member === undefined) return void this.#groups.delete(group);
    const g = this.#groups.get(group);
    g?.delete(member);
    if (g && !g.size) this.#groups.delete(group);
  }

  /**
   * Forgets members not ejected whose last outcome is older than `idleMs` (an endpoint gone from its
   * Service, a cluster no longer routed to): what a caller reports must not grow the state without bound.
   */
  prune(now: number, idleMs: number): void {
    for (const [group, g] of this.#groups) {
      for (const [member, m] of g) if (m.ejectedUntil <= now && now - m.lastAt >= idleMs) g.delete(member);
      if (!g.size) this.#groups.delete(group);
    }
  }

  /** The members of a group the detector holds state for. */
  members(group: string): string[] {
    return [...(this.#groups.get(group)?.keys() ?? [])];
  }

  /** The groups the detector holds state for. */
  groups(): string[] {
    return [...this.#groups.keys()];
  }

  /** The multiplier after the time spent in since the last ejection ended. */
  #decayed(m: Member, now: number): number {
    const endedAt = m.endedAt || m.ejectedUntil;
    if (!m.multiplier || endedAt === 0 || now <= endedAt) return m.multiplier;
    return Math.max(0, m.multiplier - Math.floor((now - endedAt) / Math.max(1, this.#o.decayMs)));
  }
}
