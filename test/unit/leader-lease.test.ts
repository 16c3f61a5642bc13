/**
 * Leader election on a coordination.k8s.io/v1 Lease, two candidates against one fake API server
 * (test/helpers/fake-kube-api.ts). Short durations (lease 1 s, renew deadline 0.4 s, retry
 * 0.1 s) keep the tests quick; they assert on the candidates' events and the Lease, not on
 * elapsed time. Where a test must show something does NOT happen by expiry, the lease is long
 * (30 s) and only the behaviour under test can end it within the test's timeout.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { KUBERNETES_RUNNER_API_CALLS } from '../../src/app/jobs/kubernetes-job.js';
import { KubeApi, KubeApiError } from '../../src/jobs/kubernetes/kube-api.js';
import { LeaderLease, type LeaderLeaseOptions } from '../../src/jobs/kubernetes/leader-lease.js';
import { FakeKubeApi } from '../helpers/fake-kube-api.js';

const NS = 'gim';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Candidate {
  name: string;
  lease: LeaderLease;
  api: KubeApi;
  token: string;
  /** Resolves at this candidate's next start (or stop) of leading. */
  next(event: 'started' | 'stopped'): Promise<void>;
}

/** Every candidate's leadership events, in the order they happened. */
let events: string[] = [];

async function cluster(): Promise<FakeKubeApi> {
  const fake = await FakeKubeApi.start('token-a', 'token-b', 'token-admin');
  events = [];
  cleanups.push(() => fake.close());
  return fake;
}

function candidate(
  fake: FakeKubeApi,
  name: 'a' | 'b',
  options: Partial<LeaderLeaseOptions> = {},
): Candidate {
  const token = `token-${name}`;
  const api = new KubeApi({ server: fake.url, token });
  const waiting = { started: [] as (() => void)[], stopped: [] as (() => void)[] };
  const on = (event: 'started' | 'stopped') => () => {
    events.push(`${name} ${event}`);
    for (const resolve of waiting[event].splice(0)) resolve();
  };
  const lease = new LeaderLease({
    api,
    namespace: NS,
    identity: `gim-serve-${name}`,
    leaseDurationSeconds: 1,
    renewDeadlineMs: 400,
    retryPeriodMs: 100,
    onStartedLeading: on('started'),
    onStoppedLeading: on('stopped'),
    ...options,
  });
  cleanups.push(async () => {
    await lease.stop();
    api.close();
  });
  return {
    name,
    lease,
    api,
    token,
    next: (event) => new Promise((resolve) => waiting[event].push(resolve)),
  };
}

/** Resolves once `c` has made `n` more calls from now. */
async function calls(fake: FakeKubeApi, c: Candidate, n: number): Promise<void> {
  let from = fake.calls.length;
  for (let i = 0; i < n; i++) {
    const call = await fake.waitForCall((x) => x.token === c.token, from);
    from = fake.calls.indexOf(call) + 1;
  }
}

const holder = (fake: FakeKubeApi) =>
  fake.store.get('leases', NS, 'gim-serve-jobs')?.spec as
    | { holderIdentity?: string; leaseTransitions?: number; leaseDurationSeconds?: number }
    | undefined;

describe('LeaderLease', { timeout: 20_000 }, () => {
  test('of two candidates started together exactly one leads, and keeps leading', async () => {
    const fake = await cluster();
    const a = candidate(fake, 'a');
    const b = candidate(fake, 'b');
    const first = Promise.race([a.next('started'), b.next('started')]);
    a.lease.start();
    b.lease.start();
    await first;
    const [leader, other] = a.lease.isLeader ? [a, b] : [b, a];
    // Several rounds on both sides: the leader renews, the other does not take over.
    await Promise.all([calls(fake, leader, 6), calls(fake, other, 6)]);
    assert.deepEqual(events, [`${leader.name} started`]);
    assert.equal(leader.lease.isLeader, true);
    assert.equal(other.lease.isLeader, false);
    assert.equal(holder(fake)?.holderIdentity, `gim-serve-${leader.name}`);
    assert.equal(holder(fake)?.leaseTransitions, 0);
  });

  test('when the leader stops renewing (cut off from the API), it steps down and the other takes over', async () => {
    const fake = await cluster();
    const a = candidate(fake, 'a');
    const aLeads = a.next('started');
    a.lease.start();
    await aLeads;
    const b = candidate(fake, 'b');
    const bLeads = b.next('started');
    b.lease.start();
    await calls(fake, b, 2);
    assert.equal(b.lease.isLeader, false);

    const aStops = a.next('stopped');
    fake.tokens.delete(a.token);
    await Promise.all([aStops, bLeads]);
    // a stepped down at its renew deadline, before b could see the Lease expire.
    assert.deepEqual(events, ['a started', 'a stopped', 'b started']);
    assert.equal(a.lease.isLeader, false);
    assert.equal(b.lease.isLeader, true);
    assert.equal(holder(fake)?.holderIdentity, 'gim-serve-b');
    assert.equal(holder(fake)?.leaseTransitions, 1);
  });

  test(
    'a leader that stops releases the Lease: the other takes over without waiting for it to expire',
    { timeout: 10_000 },
    async () => {
      const fake = await cluster();
      const long = { leaseDurationSeconds: 30, renewDeadlineMs: 20_000 };
      const a = candidate(fake, 'a', long);
      const aLeads = a.next('started');
      a.lease.start();
      await aLeads;
      const b = candidate(fake, 'b', long);
      const bLeads = b.next('started');
      b.lease.start();
      await calls(fake, b, 2);

      await a.lease.stop();
      assert.equal(holder(fake)?.holderIdentity, '');
      // Only the release lets b lead within the test's timeout (the lease lasts 30 s).
      await bLeads;
      assert.deepEqual(events, ['a started', 'a stopped', 'b started']);
      assert.equal(holder(fake)?.holderIdentity, 'gim-serve-b');
    },
  );

  test(
    'a renewal refused with 409 (another replica wrote first) stops leading at once',
    { timeout: 10_000 },
    async () => {
      const fake = await cluster();
      const a = candidate(fake, 'a', { leaseDurationSeconds: 30, renewDeadlineMs: 20_000 });
      const aLeads = a.next('started');
      a.lease.start();
      await aLeads;
      const aStops = a.next('stopped');
      // Between a's read and its update, another replica takes the Lease.
      fake.beforeRequest = (method) => {
        if (method !== 'PUT') return;
        fake.beforeRequest = undefined;
        const lease = fake.store.get('leases', NS, 'gim-serve-jobs')!;
        fake.store.update('leases', {
          ...lease,
          spec: { ...lease.spec, holderIdentity: 'intruder' },
        });
      };
      await aStops;
      // It stepped down on the 409 itself, not on reading the Lease again afterwards.
      const last = fake.calls.filter((c) => c.token === a.token).at(-1);
      assert.deepEqual([last?.verb, last?.status], ['update', 409]);
      assert.equal(a.lease.isLeader, false);
      assert.equal(holder(fake)?.holderIdentity, 'intruder');
    },
  );

  test('a stale update is refused with 409 Conflict', async () => {
    const fake = await cluster();
    const api = new KubeApi({ server: fake.url, token: 'token-admin' });
    cleanups.push(() => api.close());
    const created = await api.createLease(NS, {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: 'gim-serve-jobs', namespace: NS },
      spec: { holderIdentity: 'x', leaseDurationSeconds: 15 },
    });
    const renewed = await api.replaceLease(NS, { ...created, spec: { holderIdentity: 'y' } });
    assert.notEqual(renewed.metadata?.resourceVersion, created.metadata?.resourceVersion);
    await assert.rejects(
      api.replaceLease(NS, { ...created, spec: { holderIdentity: 'z' } }),
      (e: unknown) => {
        assert.ok(e instanceof KubeApiError, String(e));
        assert.deepEqual([e.code, e.status, e.reason], ['conflict', 409, 'Conflict']);
        assert.match(e.message, /the object has been modified/);
        return true;
      },
    );
    await assert.rejects(api.createLease(NS, created), (e: unknown) => {
      assert.ok(e instanceof KubeApiError && e.code === 'conflict' && e.reason === 'AlreadyExists');
      return true;
    });
    assert.equal(holder(fake)?.holderIdentity, 'y');
  });

  test('refuses a renew deadline that is not shorter than the lease', () => {
    const api = new KubeApi({ server: 'http://127.0.0.1:1' });
    assert.throws(
      () =>
        new LeaderLease({
          api,
          namespace: NS,
          identity: 'p',
          leaseDurationSeconds: 1,
          renewDeadlineMs: 1000,
        }),
      /renewDeadlineMs must be less than leaseDurationSeconds/,
    );
    assert.throws(() => new LeaderLease({ api, namespace: NS, identity: '' }), /identity/);
  });

  test('the Lease calls are granted by KUBERNETES_RUNNER_API_CALLS', async () => {
    const fake = await cluster();
    const a = candidate(fake, 'a');
    const aLeads = a.next('started');
    a.lease.start();
    await aLeads;
    await calls(fake, a, 4);
    await a.lease.stop();
    const granted = KUBERNETES_RUNNER_API_CALLS.find((c) => c.resource === 'leases')!.verbs;
    const used = new Set(fake.calls.map((c) => c.verb));
    assert.deepEqual([...used].sort(), [...granted].sort());
  });
});
