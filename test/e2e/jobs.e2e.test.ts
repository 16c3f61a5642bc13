/**
 * Training jobs end to end, with the real `gim` CLI as the trainer (local runner) on the tiny
 * committed fixture: submit an encoder job, follow its Server-Sent Events to the end, promote
 * the new version with If-Match while a client embeds in a loop (0 failures, sees the new
 * version, then the old one after a rollback); cancel; kill -9 of the API while a job trains.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { get as httpGet, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import {
  bootApp,
  fixturePngs,
  publishStack,
  ROOT,
  tinyStack,
  type TestApp,
  until,
  waitReady,
} from './serve-fixtures.js';
import { sseFields } from '../helpers/sse.js';

const TOKEN = 'jobs-test-token-0123456789ab';
const auth = { authorization: `Bearer ${TOKEN}` };
const DATA_ROOT = join(ROOT, 'test/fixtures');

/** A 1-epoch encoder job on the committed fixture: a few steps of a 4/8/8 stack. */
function encoderJob(steps: number, epochs = 1): Record<string, unknown> {
  return {
    kind: 'encoder',
    model: 'tiny',
    spec: {
      modality: 'image',
      data: 'fashion-mnist-mini',
      channels: [4, 8, 8],
      epochs,
      batch_size: 8,
      max_steps_per_epoch: steps,
      labels: ['latest'],
    },
  };
}

interface SseEvent {
  id?: string;
  event: string;
  data: Record<string, unknown>;
}

/** Reads a Server-Sent Events stream until it ends (or `stopWhen` says so). */
function readSse(
  url: string,
  headers: Record<string, string>,
  stopWhen: (e: SseEvent) => boolean = () => false,
): Promise<{ events: SseEvent[]; pings: number; contentType: string }> {
  return new Promise((resolve, reject) => {
    const events: SseEvent[] = [];
    let pings = 0;
    let buffer = '';
    httpGet(url, { headers }, (res: IncomingMessage) => {
      const contentType = String(res.headers['content-type']);
      if (res.statusCode !== 200) return reject(new Error(`SSE status ${res.statusCode}`));
      res.setEncoding('utf8');
      const done = (): void => resolve({ events, pings, contentType });
      res.on('data', (chunk: string) => {
        buffer += chunk;
        for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          if (block.startsWith(': ping')) pings++;
          const fields = sseFields(block);
          if (fields.event === undefined) continue;
          const event = {
            id: fields.id,
            event: fields.event,
            data: JSON.parse(fields.data ?? '{}'),
          };
          events.push(event);
          if (stopWhen(event)) {
            res.destroy();
            done();
          }
        }
      });
      res.on('end', done);
    }).on('error', reject);
  });
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    });
  });
}

describe('training jobs (e2e, real trainer)', () => {
  let dir: string;
  let t: TestApp;
  let base: string;
  let png: Buffer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-jobs-e2e-'));
    await publishStack(dir, 'tiny', tinyStack(1), ['latest', 'stable']);
    [png] = (await fixturePngs(1)) as [Buffer];
    t = await bootApp({
      MODELS_DIR: dir,
      ADMIN_TOKEN: TOKEN,
      DATA_ROOT,
      REF_CACHE_MS: '0',
      JOB_STOP_GRACE_MS: '20000',
    });
    base = await listen(t.server);
    await waitReady(t.server);
  });
  after(async () => {
    await t?.app.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('validate shows the command; a path out of DATA_ROOT is a 400 that names nothing', async () => {
    const ok = await request(t.server)
      .post('/admin/v1/training-jobs/validate')
      .set(auth)
      .send(encoderJob(3));
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.body.args.slice(0, 3), ['train', 'image', '--name=tiny']);
    assert.ok(ok.body.args.includes(`--data=${join(DATA_ROOT, 'fashion-mnist-mini')}`));
    const bad = await request(t.server)
      .post('/admin/v1/training-jobs/validate')
      .set(auth)
      .send({ ...encoderJob(3), spec: { data: '/etc' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error_type, 'invalid_argument');
    assert.doesNotMatch(bad.body.error, /passwd|hosts|\/etc\//);
    const none = await request(t.server).post('/admin/v1/training-jobs').send(encoderJob(3));
    assert.equal(none.status, 401);
  });

  test('an encoder job: SSE to the end, version 2 published, promoted with If-Match through a live client, rolled back', async () => {
    const submitted = await request(t.server)
      .post('/admin/v1/training-jobs')
      .set(auth)
      .set('idempotency-key', 'e2e-train-1')
      .send(encoderJob(4));
    assert.equal(submitted.status, 202, submitted.text);
    assert.equal(submitted.headers.location, `/admin/v1/training-jobs/${submitted.body.id}`);
    const id = submitted.body.id as string;
    const again = await request(t.server)
      .post('/admin/v1/training-jobs')
      .set(auth)
      .set('idempotency-key', 'e2e-train-1')
      .send(encoderJob(4));
    assert.equal(again.status, 200);
    assert.equal(again.body.id, id, 'a retried submit returns the same job');

    const { events, contentType } = await readSse(
      `${base}/admin/v1/training-jobs/${id}/events`,
      auth,
    );
    assert.match(contentType, /^text\/event-stream/);
    const statuses = events.filter((e) => e.event === 'status').map((e) => e.data.status);
    assert.deepEqual(statuses, ['queued', 'starting', 'running', 'publishing', 'succeeded']);
    const progress = events.filter((e) => e.event === 'progress');
    assert.ok(progress.length >= 1);
    const losses = progress.at(-1)?.data.losses as number[];
    assert.equal(losses.length, 3, 'a loss per module');
    assert.ok(losses.every((l) => Number.isFinite(l) && l > 0));
    assert.ok(Number(progress.at(-1)?.data.unitsPerSecond) > 0);
    const published = events.find((e) => e.event === 'published');
    assert.deepEqual([published?.data.name, published?.data.version], ['tiny', 2]);
    assert.equal(events.at(-1)?.event, 'end');
    const ids = events.filter((e) => e.id !== undefined).map((e) => Number(e.id));
    assert.deepEqual(
      ids,
      ids.map((_, i) => i + 1),
      'ids are the sequence numbers',
    );

    // Resumable: after Last-Event-ID, only the later events.
    const tail = await readSse(`${base}/admin/v1/training-jobs/${id}/events`, {
      ...auth,
      'last-event-id': String(ids.at(-3)),
    });
    assert.deepEqual(
      tail.events.map((e) => e.id ?? 'end'),
      [String(ids.at(-2)), String(ids.at(-1)), 'end'],
    );

    const job = await request(t.server).get(`/admin/v1/training-jobs/${id}`).set(auth);
    assert.equal(job.body.status, 'succeeded');
    assert.equal(job.body.result.published.version, 2);
    const log = await request(t.server).get(`/admin/v1/training-jobs/${id}/logs?tail=5`).set(auth);
    assert.equal(log.status, 200);
    assert.match(log.headers['content-type'] ?? '', /^text\/plain/);

    // Promote tiny@2 to stable while a client embeds in a loop.
    const versions: number[] = [];
    let failures = 0;
    let stop = false;
    const client = (async () => {
      while (!stop) {
        const res = await request(t.server)
          .post('/v1/models/tiny/embeddings')
          .set('content-type', 'image/png')
          .send(png);
        if (res.status === 200) versions.push(res.body.version as number);
        else failures++;
      }
    })();
    await until('the client on v1', () => versions.length >= 3);
    const labels = await request(t.server).get('/admin/v1/models/tiny/labels').set(auth);
    const moved = await request(t.server)
      .put('/admin/v1/models/tiny/labels/stable')
      .set(auth)
      .set('if-match', labels.body.etag)
      .send({ version: 2, reason: `job ${id}` });
    assert.equal(moved.status, 200, moved.text);
    await until('the client on v2', () => versions.at(-1) === 2);
    const back = await request(t.server)
      .post('/admin/v1/models/tiny/labels/stable/rollback')
      .set(auth)
      .set('if-match', moved.body.etag);
    assert.equal(back.status, 200, back.text);
    const n = versions.length;
    await until('the client on v1 again', () => versions.length > n && versions.at(-1) === 1);
    stop = true;
    await client;
    assert.equal(failures, 0, 'no request failed through the switch');
  });

  test('cancel: the trainer checkpoints and stops, the job is cancelled, no version appears', async () => {
    const before = await readdir(join(dir, 'tiny'));
    const submitted = await request(t.server)
      .post('/admin/v1/training-jobs')
      .set(auth)
      .send(encoderJob(1000, 3));
    const id = submitted.body.id as string;
    await readSse(
      `${base}/admin/v1/training-jobs/${id}/events`,
      auth,
      (e) => e.event === 'progress',
    );
    const cancel = await request(t.server)
      .post(`/admin/v1/training-jobs/${id}/cancel`)
      .set(auth)
      .send({ reason: 'e2e' });
    assert.equal(cancel.status, 202, cancel.text);
    assert.equal(cancel.body.status, 'cancelling');
    const done = await request(t.server)
      .get(`/admin/v1/training-jobs/${id}?wait_seconds=60`)
      .set(auth);
    assert.equal(done.body.status, 'cancelled', JSON.stringify(done.body));
    assert.equal(done.body.attempts[0].exitCode, 3);
    const { events } = await readSse(`${base}/admin/v1/training-jobs/${id}/events`, auth);
    const checkpoint = events.filter((e) => e.event === 'checkpoint').at(-1);
    assert.equal(checkpoint?.data.reason, 'cancel');
    assert.deepEqual(await readdir(join(dir, 'tiny')), before, 'no version appeared');
    const del = await request(t.server).delete(`/admin/v1/training-jobs/${id}`).set(auth);
    assert.equal(del.status, 204);
    assert.equal(
      (await request(t.server).get(`/admin/v1/training-jobs/${id}`).set(auth)).status,
      404,
    );
  });
});

describe('kill -9 of the API while a local job trains (e2e, real processes)', () => {
  let dir: string;
  let api: ChildProcess | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-jobs-kill-'));
    await publishStack(dir, 'tiny', tinyStack(1), ['latest', 'stable']);
  });
  after(async () => {
    api?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  async function startApi(port: number): Promise<ChildProcess> {
    const child = spawn(
      process.execPath,
      ['--import', '@swc-node/register/esm-register', 'src/main.ts'],
      {
        cwd: ROOT,
        env: {
          ...process.env,
          PORT: String(port),
          HOST: '127.0.0.1',
          MODELS_DIR: dir,
          ADMIN_TOKEN: TOKEN,
          DATA_ROOT,
          GIM_BACKEND: 'wasm',
          PRELOAD: 'none',
          LOG_LEVEL: 'warn',
          JOB_STOP_GRACE_MS: '1000',
        },
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    const until = Date.now() + 60_000;
    for (;;) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/health/live`);
        if (res.ok) return child;
      } catch {
        // not listening yet
      }
      assert.ok(Date.now() < until, 'the API did not start');
      await sleep(100);
    }
  }

  test('after a restart the job is interrupted, resumes from its checkpoint and succeeds', async () => {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const url = `http://127.0.0.1:${port}/admin/v1/training-jobs`;
    const headers = { ...auth, 'content-type': 'application/json' };
    api = await startApi(port);
    const submitted = await fetch(url, {
      method: 'POST',
      headers,
      body: JSON.stringify(encoderJob(30, 10)),
    });
    assert.equal(submitted.status, 202);
    const { id } = (await submitted.json()) as { id: string };
    // Until a checkpoint exists (the end of epoch 1), then the API dies without a word. Its
    // trainer outlives it; held still here (SIGSTOP) so that it cannot finish meanwhile, it is
    // killed by the next API after JOB_STOP_GRACE_MS, and the job resumes from that checkpoint.
    // The trainer's pid from its start event; held (SIGSTOP) as soon as the first checkpoint is
    // announced, so that it cannot finish its remaining epochs meanwhile.
    let trainer = 0;
    await readSse(`${url}/${id}/events`, auth, (e) => {
      if (e.event === 'start') trainer = Number(e.data.pid);
      if (e.event === 'checkpoint') process.kill(trainer, 'SIGSTOP');
      return e.event === 'checkpoint';
    });
    api.kill('SIGKILL');
    await new Promise((resolve) => api?.once('exit', resolve));

    api = await startApi(port);
    const res = await fetch(`${url}/${id}?wait_seconds=120`, { headers: auth });
    const job = (await res.json()) as {
      status: string;
      resumes: number;
      attempts: { resume: boolean; outcome?: string }[];
      result?: { published?: { version: number } };
    };
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
    assert.equal(job.attempts[0]?.outcome, 'interrupted');
    assert.equal(job.attempts.at(-1)?.resume, true);
    assert.equal(job.resumes, 1);
    assert.equal(job.result?.published?.version, 2);
    const { events } = await readSse(`${url}/${id}/events`, auth);
    const starts = events.filter(
      (e) => e.event === 'log' && /resuming from step/.test(String(e.data.line)),
    );
    assert.ok(starts.length >= 1, 'the second attempt resumed from the checkpoint');
    api.kill('SIGTERM');
    await new Promise((resolve) => api?.once('exit', resolve));
    api = undefined;
  });
});
