/**
 * The service with JOB_RUNNER=kubernetes: two replicas on one models volume against a local
 * server speaking the Kubernetes REST API. One holds the Lease and creates the Jobs; a job
 * submitted to, followed from and cancelled through the other replica is run by the leader.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { stringify } from 'yaml';
import { FakeKubeApi } from '../helpers/fake-kube-api.js';
import { bootApp, publishStack, ROOT, tinyStack, type TestApp, until } from './serve-fixtures.js';

const TOKEN = 'k8s-jobs-test-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };

/** The Lease holder's identity. */
function holder(kube: FakeKubeApi): string {
  const lease = kube.store.get('leases', 'gim', 'gim-serve-jobs') as unknown as {
    spec: { holderIdentity: string };
  };
  return lease.spec.holderIdentity;
}

describe('training jobs on the kubernetes runner, two replicas (e2e)', () => {
  let dir: string;
  let kube: FakeKubeApi;
  const replicas: TestApp[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-k8s-jobs-'));
    await publishStack(dir, 'tiny', tinyStack(1), ['latest', 'stable']);
    kube = await FakeKubeApi.start('sa-token');
    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(
      kubeconfig,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'fake', cluster: { server: kube.url } }],
        users: [{ name: 'gim', user: { token: 'sa-token' } }],
        contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'gim', namespace: 'gim' } }],
        'current-context': 'fake',
      }),
    );
    for (const pod of ['gim-serve-a', 'gim-serve-b']) {
      replicas.push(
        await bootApp({
          MODELS_DIR: join(dir, ''),
          ADMIN_TOKEN: TOKEN,
          DATA_ROOT: join(ROOT, 'test/fixtures'),
          PRELOAD: 'none',
          JOB_RUNNER: 'kubernetes',
          KUBERNETES_RUNNER_CONFIG: join(ROOT, 'k8s/base/training-runner.yaml'),
          KUBECONFIG: kubeconfig,
          POD_NAME: pod,
        }),
      );
    }
  });
  after(async () => {
    for (const r of replicas) await r.app.close();
    await kube?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test(
    'one replica leads; a job submitted to the other runs as a Job created by the leader',
    { timeout: 60_000 },
    async () => {
      await until(
        'a leader',
        () => kube.store.get('leases', 'gim', 'gim-serve-jobs') !== undefined,
      );
      const leader = holder(kube);
      assert.ok(['gim-serve-a', 'gim-serve-b'].includes(leader));
      const follower = replicas[leader === 'gim-serve-a' ? 1 : 0] as TestApp;

      const submitted = await request(follower.server)
        .post('/admin/v1/training-jobs')
        .set(auth)
        .send({ kind: 'encoder', model: 'tiny', spec: { data: 'fashion-mnist-mini', epochs: 1 } });
      assert.equal(submitted.status, 202, submitted.text);
      const id = submitted.body.id as string;
      assert.equal(submitted.body.runner, 'kubernetes');
      const created = await kube.waitForCall((c) => c.verb === 'create' && c.resource === 'jobs');
      const body = created.body as {
        metadata: { name: string; labels: Record<string, string> };
        spec: { template: { spec: { containers: { args: string[] }[] } } };
      };
      assert.equal(body.metadata.labels['gim.dev/job-id'], id);
      assert.equal(body.metadata.name, `gim-train-${id}-1`);
      const args = body.spec.template.spec.containers[0]?.args ?? [];
      assert.ok(
        args.includes(`--progress-json=/models/.jobs/${id}/progress.ndjson`),
        args.join(' '),
      );
      assert.ok(args.includes('--data=' + join(ROOT, 'test/fixtures', 'fashion-mnist-mini')));
      const creators = kube.calls.filter((c) => c.verb === 'create' && c.resource === 'jobs');
      assert.equal(creators.length, 1, 'exactly one replica created the Job');

      kube.cluster.setJobCondition(body.metadata.name, { type: 'Complete' });
      const done = await request(follower.server)
        .get(`/admin/v1/training-jobs/${id}?wait_seconds=30`)
        .set(auth);
      assert.equal(done.body.status, 'succeeded', JSON.stringify(done.body));
      assert.equal(done.body.attempts[0].runnerRef, body.metadata.name);
    },
  );

  test(
    'a cancel sent to the follower: the leader deletes the Job, the job is cancelled',
    { timeout: 60_000 },
    async () => {
      const follower = replicas.find(
        (r) => holder(kube) !== r.config.jobs.kubernetes.podName,
      ) as TestApp;
      const from = kube.calls.length;
      const submitted = await request(follower.server)
        .post('/admin/v1/training-jobs')
        .set(auth)
        .send({ kind: 'encoder', model: 'tiny', spec: { data: 'fashion-mnist-mini', epochs: 1 } });
      const id = submitted.body.id as string;
      await kube.waitForCall((c) => c.verb === 'create' && c.resource === 'jobs', from);
      const cancel = await request(follower.server)
        .post(`/admin/v1/training-jobs/${id}/cancel`)
        .set(auth);
      assert.equal(cancel.status, 202, cancel.text);
      assert.match(cancel.body.cancel.by, /^token:/, 'recorded for the leader');
      const deleted = await kube.waitForCall(
        (c) => c.verb === 'delete' && c.resource === 'jobs',
        from,
      );
      assert.equal(deleted.name, `gim-train-${id}-1`);
      const done = await request(follower.server)
        .get(`/admin/v1/training-jobs/${id}?wait_seconds=30`)
        .set(auth);
      assert.equal(done.body.status, 'cancelled', JSON.stringify(done.body));
    },
  );
});
