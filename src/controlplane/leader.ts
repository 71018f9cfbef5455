// Leader election on a coordination.k8s.io/v1 Lease, so that several `ecnet controller` replicas can run and
// only one writes. client-node ships no elector, so this is a small one after client-go's: the leader renews
// every retry period and gives up when it could not renew for renewDeadline; a follower takes the lease over
// once its record has not changed for leaseDuration, measured on the follower's own clock from when it saw
// the record change (the holder's renewTime is never compared across machines). Writes carry the
// resourceVersion they read, so two candidates can never both win one round.
import { CoordinationV1Api, type KubeConfig, type V1Lease, V1MicroTime } from '@kubernetes/client-node';
import { type Logger, componentLogger } from '../logger.js';
import { type Clock, systemClock } from '../util/time.js';
import { EcnetError } from '../errors.js';

export type LeaderElectionErrorCode = 'ECNET_LEADER_LOST' | 'ECNET_LEADER_CLOSED' | 'ECNET_LEADER_CONFLICT' | 'ECNET_LEADER_API' | 'ECNET_LEADER_TIMEOUT';

export class LeaderElectionError extends EcnetError<LeaderElectionErrorCode> {}

/** The three Lease calls the elector makes. A write that lost a race rejects with ECNET_LEADER_CONFLICT. */
export interface LeaseClient {
  get(namespace: string, name: string): Promise<V1Lease | undefined>;
  create(namespace: string, lease: V1Lease): Promise<V1Lease>;
  replace(namespace: string, name: string, lease: V1Lease): Promise<V1Lease>;
}

const statusOf = (err: unknown): number | undefined =>
  typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : undefined;

function apiError(what: string, err: unknown): LeaderElectionError {
  const status = statusOf(err);
  if (status === 409) return new LeaderElectionError('ECNET_LEADER_CONFLICT', `${what}: 409 Conflict (another candidate wrote first)`, { cause: err });
  return new LeaderElectionError('ECNET_LEADER_API', `${what}: ${status ? `HTTP ${status}` : err instanceof Error ? err.message : String(err)}`, { cause: err });
}

/** A LeaseClient on client-node's CoordinationV1Api. */
export function kubernetesLeaseClient(kc: KubeConfig): LeaseClient {
  const api = kc.makeApiClient(CoordinationV1Api);
  return {
    async get(namespace, name) {
      try {
        return await api.readNamespacedLease({ name, namespace });
      } catch (err) {
        if (statusOf(err) === 404) return undefined;
        throw apiError(`get lease ${namespace}/${name}`, err);
      }
    },
    async create(namespace, lease) {
      try {
        return await api.createNamespacedLease({ namespace, body: lease });
      } catch (err) {
        throw apiError(`create lease ${namespace}/${lease.metadata?.name}`, err);
      }
    },
    async replace(namespace, name, lease) {
      try {
        return await api.replaceNamespacedLease({ name, namespace, body: lease });
      } catch (err) {
        throw apiError(`update lease ${namespace}/${name}`, err);
      }
    },
  };
}

export interface LeaderElectorOptions {
  client: LeaseClient;
  namespace: string;
  name: string;
  /** Who holds the lease (the pod name). Must be unique among the candidates. */
  identity: string;
  /** How long a lease nobody renews stays held. Default 15 s. */
  leaseDurationMs?: number;
  /** The leader gives up when it could not renew for this long. Default 10 s; less than leaseDurationMs. */
  renewDeadlineMs?: number;
  /** Between attempts (followers add up to 20 % jitter). Default 2 s. */
  retryPeriodMs?: number;
  clock?: Clock;
  random?: () => number;
  logger?: Logger;
}

const JITTER = 0.2;

export class LeaderElector {
  readonly identity: string;
  /** Resolves (never rejects) with why, once leadership that was held is lost; the elector then stops. */
  readonly lost: Promise<LeaderElectionError>;
  readonly #client: LeaseClient;
  readonly #namespace: string;
  readonly #name: string;
  readonly #leaseMs: number;
  readonly #renewDeadlineMs: number;
  readonly #retryMs: number;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #log: Logger;
  #leading = false;
  #stopped = false;
  #running: Promise<void> | undefined;
  /** The lease as last read or written, and when (our clock) its resourceVersion last changed. */
  #observed: V1Lease | undefined;
  #observedAt = 0;
  #lastRenew = 0;
  #deadline: unknown;
  #wake: (() => void) | undefined;
  #acquired: Promise<void>;
  #resolveAcquired!: () => void;
  #rejectAcquired!: (err: Error) => void;
  #resolveLost!: (err: LeaderElectionError) => void;

  constructor(options: LeaderElectorOptions) {
    this.#client = options.client;
    this.#namespace = options.namespace;
    this.#name = options.name;
    this.identity = options.identity;
    this.#leaseMs = options.leaseDurationMs ?? 15_000;
    this.#renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.#retryMs = options.retryPeriodMs ?? 2_000;
    if (!this.identity) throw new LeaderElectionError('ECNET_LEADER_API', 'leader election needs an identity');
    if (!(this.#leaseMs > this.#renewDeadlineMs && this.#renewDeadlineMs > this.#retryMs * (1 + JITTER))) {
      throw new LeaderElectionError('ECNET_LEADER_API', `leader election needs lease duration > renew deadline > 1.2 × retry period, got ${this.#leaseMs} / ${this.#renewDeadlineMs} / ${this.#retryMs} ms`);
    }
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#log = (options.logger ?? componentLogger('leader-election')).child({ lease: `${this.#namespace}/${this.#name}`, identity: this.identity });
    this.#acquired = new Promise<void>((resolve, reject) => {
      this.#resolveAcquired = resolve;
      this.#rejectAcquired = reject;
    });
    this.#acquired.catch(() => undefined);
    this.lost = new Promise((resolve) => (this.#resolveLost = resolve));
  }

  get isLeader(): boolean {
    return this.#leading;
  }

  /** Starts campaigning (once); resolves when this candidate leads, rejects with ECNET_LEADER_CLOSED if stopped first. */
  acquire(): Promise<void> {
    if (this.#stopped) return Promise.reject(new LeaderElectionError('ECNET_LEADER_CLOSED', 'leader election closed'));
    this.#running ??= this.#loop();
    return this.#acquired;
  }

  /** Stops; a leader hands the lease back (empty holder) so a follower need not wait for it to expire. */
  async close(): Promise<void> {
    const wasLeading = this.#leading;
    this.#stop(new LeaderElectionError('ECNET_LEADER_CLOSED', 'leader election closed'));
    await this.#running;
    if (wasLeading) await this.#release();
  }

  /** Stops at once, without touching the lease (it expires after leaseDuration). */
  destroy(err?: Error): void {
    if (err) this.#log.warn({ err }, 'leader election destroyed');
    this.#stop(new LeaderElectionError('ECNET_LEADER_CLOSED', 'leader election destroyed', err ? { cause: err } : undefined));
  }

  #stop(why: LeaderElectionError): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#clock.clearTimeout(this.#deadline);
    this.#rejectAcquired(why);
    this.#leading = false;
    this.#wake?.();
  }

  #lose(why: LeaderElectionError): void {
    if (!this.#leading) return;
    this.#log.error({ err: why }, 'leadership lost');
    this.#stop(why);
    this.#resolveLost(why);
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      let renewed = false;
      try {
        renewed = await this.#withTimeout(this.#tryAcquireOrRenew(), this.#leading ? this.#renewDeadlineMs : this.#leaseMs);
      } catch (err) {
        if (this.#stopped) break;
        const e = err as LeaderElectionError;
        // A conflict is the normal outcome of a race with another candidate.
        if (e.code === 'ECNET_LEADER_CONFLICT') this.#log.debug({ err: e }, 'lease attempt lost a race');
        else this.#log.warn({ err: e }, 'lease attempt failed');
      }
      if (this.#stopped) break;
      const now = this.#clock.now();
      if (renewed) {
        this.#lastRenew = now;
        if (!this.#leading) {
          this.#leading = true;
          this.#log.info('became leader');
          this.#resolveAcquired();
        }
        this.#armDeadline();
      } else if (this.#leading) {
        const holder = this.#observed?.spec?.holderIdentity;
        if (holder && holder !== this.identity) {
          this.#lose(new LeaderElectionError('ECNET_LEADER_LOST', `lease ${this.#namespace}/${this.#name} is held by ${holder} now`));
        } else if (now - this.#lastRenew >= this.#renewDeadlineMs) {
          this.#lose(new LeaderElectionError('ECNET_LEADER_LOST', `could not renew lease ${this.#namespace}/${this.#name} for ${now - this.#lastRenew} ms`));
        }
      }
      if (this.#stopped) break;
      await this.#sleep(this.#leading ? this.#retryMs : this.#retryMs * (1 + JITTER * this.#random()));
    }
  }

  /** One round: true when this candidate holds the lease afterwards. */
  async #tryAcquireOrRenew(): Promise<boolean> {
    const now = this.#clock.now();
    const current = await this.#client.get(this.#namespace, this.#name);
    if (!current) {
      const created = await this.#client.create(this.#namespace, {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: this.#name, namespace: this.#namespace },
        spec: this.#spec(now, undefined),
      });
      this.#observe(created, now);
      return true;
    }
    this.#observe(current, now);
    const spec = current.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const durationMs = (spec.leaseDurationSeconds ?? this.#leaseMs / 1000) * 1000;
    if (holder && holder !== this.identity && this.#observedAt + durationMs > now) return false;
    if (holder && holder !== this.identity) this.#log.info({ previous: holder }, 'taking over an expired lease');
    const updated = await this.#client.replace(this.#namespace, this.#name, { ...current, spec: this.#spec(now, current) });
    this.#observe(updated, now);
    return true;
  }

  #spec(now: number, current: V1Lease | undefined): NonNullable<V1Lease['spec']> {
    const old = current?.spec ?? {};
    const mine = old.holderIdentity === this.identity;
    return {
      ...old,
      holderIdentity: this.identity,
      leaseDurationSeconds: Math.ceil(this.#leaseMs / 1000),
      acquireTime: mine && old.acquireTime ? old.acquireTime : new V1MicroTime(now),
      renewTime: new V1MicroTime(now),
      leaseTransitions: (old.leaseTransitions ?? 0) + (current && !mine ? 1 : 0),
    };
  }

  #observe(lease: V1Lease, now: number): void {
    if (!this.#observed || lease.metadata?.resourceVersion !== this.#observed.metadata?.resourceVersion) this.#observedAt = now;
    this.#observed = lease;
  }

  async #release(): Promise<void> {
    try {
      const current = await this.#withTimeout(this.#client.get(this.#namespace, this.#name), this.#renewDeadlineMs);
      if (current?.spec?.holderIdentity !== this.identity) return;
      await this.#withTimeout(
        this.#client.replace(this.#namespace, this.#name, {
          ...current,
          spec: { ...current.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: new V1MicroTime(this.#clock.now()) },
        }),
        this.#renewDeadlineMs,
      );
      this.#log.info('lease released');
    } catch (err) {
      // It expires by itself after leaseDuration.
      this.#log.warn({ err }, 'could not release the lease');
    }
  }

  /** Leading: no renewal for renewDeadline means lost, also while a request hangs. */
  #armDeadline(): void {
    this.#clock.clearTimeout(this.#deadline);
    this.#deadline = this.#clock.setTimeout(() => {
      this.#lose(new LeaderElectionError('ECNET_LEADER_LOST', `could not renew lease ${this.#namespace}/${this.#name} within ${this.#renewDeadlineMs} ms`));
    }, this.#renewDeadlineMs);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.#clock.setTimeout(() => {
        this.#wake = undefined;
        resolve();
      }, ms);
      this.#wake = () => {
        this.#clock.clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
    });
  }

  #withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = this.#clock.setTimeout(() => reject(new LeaderElectionError('ECNET_LEADER_TIMEOUT', `lease request: no answer within ${ms} ms`)), ms);
      p.then(
        (v) => {
          this.#clock.clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          this.#clock.clearTimeout(timer);
          reject(err);
        },
      );
    });
  }
}
