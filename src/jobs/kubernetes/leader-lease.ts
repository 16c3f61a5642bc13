/**
 * Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it: with
 * several API replicas exactly one runs the job controller (creates and follows Jobs); the others
 * serve reads.
 *
 * Every `retryPeriodMs` each candidate reads the Lease. Absent: create it (an AlreadyExists means
 * another won). Held by us: renew (`renewTime`). Held by another: take it only once it has not
 * changed for `leaseDurationSeconds` as *we* observed it (our own clock, so clocks need not
 * agree), or when its holder is empty (released). Every write is an optimistic update carrying the
 * resourceVersion we read: a 409 means someone else wrote first, and we are not the leader. A
 * leader that has not renewed for `renewDeadlineMs` (less than the lease duration, so it steps
 * down before anyone may take over) stops leading. On `stop()` the leader releases the Lease
 * (empty holder, duration 1 s) so another replica takes over at its next try rather than after
 * the full duration; a crashed leader's Lease simply expires.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ILease } from 'kubernetes-models/coordination.k8s.io/v1/Lease';
import { type KubeApi, KubeApiError } from './kube-api.js';

export const JOBS_LEASE_NAME = 'gim-serve-jobs';

export interface LeaderLeaseOptions {
  api: KubeApi;
  namespace: string;
  /** Default `gim-serve-jobs`. */
  name?: string;
  /** Who we are: the pod's name (POD_NAME, from the downward API). Unique per replica. */
  identity: string;
  /** Written in the Lease: how long others wait after its last renewal. Default 15 s. */
  leaseDurationSeconds?: number;
  /** A leader that could not renew for this long steps down. Default 10 s. */
  renewDeadlineMs?: number;
  /** How often to try to acquire or renew. Default 2 s. */
  retryPeriodMs?: number;
  onStartedLeading?: () => void;
  onStoppedLeading?: () => void;
  /** A failed API call (leadership is kept until the renew deadline). */
  onWarning?: (message: string) => void;
}

/** Kubernetes MicroTime: RFC 3339 with microseconds. */
const microTime = (date: Date) => date.toISOString().replace(/Z$/, '000Z');
const monotonic = () => performance.now();

export class LeaderLease {
  readonly #api: KubeApi;
  readonly #namespace: string;
  readonly #name: string;
  readonly #identity: string;
  readonly #durationSeconds: number;
  readonly #renewDeadlineMs: number;
  readonly #retryPeriodMs: number;
  readonly #options: LeaderLeaseOptions;
  readonly #stopping = new AbortController();
  #loop: Promise<void> | undefined;
  #leader = false;
  /** Monotonic time before which our last successful renewal keeps us leader. */
  #deadline = 0;
  #stepDown: NodeJS.Timeout | undefined;
  /** The Lease's version as last seen, and when we saw it change. */
  #observed: { version: string; at: number } | undefined;

  constructor(options: LeaderLeaseOptions) {
    this.#options = options;
    this.#api = options.api;
    this.#namespace = options.namespace;
    this.#name = options.name ?? JOBS_LEASE_NAME;
    this.#identity = options.identity;
    this.#durationSeconds = options.leaseDurationSeconds ?? 15;
    this.#renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.#retryPeriodMs = options.retryPeriodMs ?? 2_000;
    if (!this.#identity) throw new Error('LeaderLease: an identity (the pod name) is required');
    if (this.#renewDeadlineMs >= this.#durationSeconds * 1000)
      throw new Error('LeaderLease: renewDeadlineMs must be less than leaseDurationSeconds');
  }

  /** Whether we hold the Lease now (and renewed it within the renew deadline). */
  get isLeader(): boolean {
    return this.#leader && monotonic() < this.#deadline;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Stops trying; a leader releases the Lease and stops leading. */
  async stop(): Promise<void> {
    this.#stopping.abort();
    await this.#loop;
    if (this.#leader) await this.#release();
    this.#lose();
  }

  async #run(): Promise<void> {
    const signal = this.#stopping.signal;
    while (!signal.aborted) {
      await this.#tryAcquireOrRenew();
      await sleep(this.#retryPeriodMs, undefined, { signal }).catch(() => undefined);
    }
  }

  async #tryAcquireOrRenew(): Promise<void> {
    const sentAt = monotonic();
    try {
      const lease = await this.#get();
      if (!lease) {
        this.#see(await this.#api.createLease(this.#namespace, this.#record(undefined)));
        return this.#renewed(sentAt);
      }
      this.#see(lease);
      const holder = lease.spec?.holderIdentity ?? '';
      if (holder !== this.#identity && holder !== '' && !this.#expired(lease)) return this.#lose();
      this.#see(await this.#api.replaceLease(this.#namespace, this.#record(lease)));
      this.#renewed(sentAt);
    } catch (error) {
      if (error instanceof KubeApiError && error.code === 'conflict') return this.#lose();
      this.#options.onWarning?.(`Lease ${this.#name}: ${(error as Error).message}`);
    }
  }

  async #get(): Promise<ILease | undefined> {
    try {
      return await this.#api.getLease(this.#namespace, this.#name);
    } catch (error) {
      if (error instanceof KubeApiError && error.code === 'not_found') return undefined;
      throw error;
    }
  }

  /** The Lease with us as holder: renewed, or taken over (a new acquireTime and transition). */
  #record(current: ILease | undefined): ILease {
    const now = microTime(new Date());
    const spec = current?.spec ?? {};
    const taking = spec.holderIdentity !== this.#identity;
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: current?.metadata ?? { name: this.#name, namespace: this.#namespace },
      spec: {
        ...spec,
        holderIdentity: this.#identity,
        leaseDurationSeconds: this.#durationSeconds,
        renewTime: now,
        ...(taking
          ? {
              acquireTime: now,
              leaseTransitions: current ? (spec.leaseTransitions ?? 0) + 1 : 0,
            }
          : {}),
      },
    };
  }

  #see(lease: ILease): void {
    const version = lease.metadata?.resourceVersion ?? '';
    if (this.#observed?.version !== version) this.#observed = { version, at: monotonic() };
  }

  /** Unchanged for its duration since we saw it change: its holder stopped renewing. */
  #expired(lease: ILease): boolean {
    const durationMs = (lease.spec?.leaseDurationSeconds ?? this.#durationSeconds) * 1000;
    return this.#observed !== undefined && monotonic() - this.#observed.at > durationMs;
  }

  #renewed(sentAt: number): void {
    // Counted from before the request: the Lease was renewed no earlier than that.
    this.#deadline = sentAt + this.#renewDeadlineMs;
    clearTimeout(this.#stepDown);
    this.#stepDown = setTimeout(() => this.#lose(), this.#deadline - monotonic());
    if (!this.#leader) {
      this.#leader = true;
      this.#options.onStartedLeading?.();
    }
  }

  #lose(): void {
    clearTimeout(this.#stepDown);
    this.#deadline = 0;
    if (!this.#leader) return;
    this.#leader = false;
    this.#options.onStoppedLeading?.();
  }

  async #release(): Promise<void> {
    try {
      const lease = await this.#get();
      if (lease?.spec?.holderIdentity !== this.#identity) return;
      await this.#api.replaceLease(this.#namespace, {
        ...lease,
        spec: {
          ...lease.spec,
          holderIdentity: '',
          leaseDurationSeconds: 1,
          renewTime: microTime(new Date()),
        },
      });
    } catch (error) {
      this.#options.onWarning?.(
        `Lease ${this.#name}: not released (${(error as Error).message}); it expires`,
      );
    }
  }
}
