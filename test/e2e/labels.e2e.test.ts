import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { InferenceClient } from '../../src/inference/inference-client.js';
import type { StartInferenceClient } from '../../src/app/inference/inference.service.js';
import {
  bootApp,
  fixturePngs,
  Gate,
  publishStack,
  tinyStack,
  type TestApp,
  until,
  waitReady,
} from './serve-fixtures.js';

const TOKEN = 'labels-test-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };

describe('labels as an admin resource (e2e)', () => {
  let dir: string;
  let t: TestApp;
  let png: Buffer;
  /** Loads of tiny@2 wait here: how a cold load would show to clients. */
  const v2Load = new Gate();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-labels-'));
    await publishStack(dir, 'tiny', tinyStack(1), ['latest', 'stable']);
    await publishStack(dir, 'tiny', tinyStack(2), ['latest']);
    [png] = (await fixturePngs(1)) as [Buffer];
    const start: StartInferenceClient = async (opts) => {
      const client = await InferenceClient.start(opts);
      const load = client.load.bind(client);
      client.load = async (ref) => {
        if (ref === 'tiny@2') await v2Load.pass();
        return load(ref);
      };
      return client;
    };
    t = await bootApp(
      { MODELS_DIR: dir, ADMIN_TOKEN: TOKEN, PRELOAD: 'tiny@stable', REF_CACHE_MS: '0' },
      start,
    );
    await waitReady(t.server);
  });
  after(async () => {
    await t?.app.close();
    await rm(dir, { recursive: true, force: true });
  });

  const embed = () =>
    request(t.server).post('/v1/models/tiny/embeddings').set('content-type', 'image/png').send(png);

  test('read: labels, a stable ETag, and the history of publishes', async () => {
    const res = await request(t.server).get('/admin/v1/models/tiny/labels').set(auth);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.labels, { latest: 2, stable: 1 });
    assert.equal(res.headers.etag, res.body.etag);
    assert.deepEqual(
      res.body.history.map((m: { label: string; from: number | null; to: number; by: string }) => [
        m.label,
        m.from,
        m.to,
        m.by,
      ]),
      [
        ['latest', null, 1, 'publish'],
        ['stable', null, 1, 'publish'],
        ['latest', 1, 2, 'publish'],
      ],
    );
    const again = await request(t.server).get('/admin/v1/models/tiny/labels').set(auth);
    assert.equal(again.body.etag, res.body.etag, 'same labels, same ETag');
    assert.equal((await request(t.server).get('/admin/v1/models/tiny/labels')).status, 401);
  });

  test('a move needs If-Match: 428 without, 412 on a stale one (nothing moves)', async () => {
    const put = (ifMatch?: string) => {
      const r = request(t.server).put('/admin/v1/models/tiny/labels/candidate').set(auth);
      if (ifMatch !== undefined) r.set('if-match', ifMatch);
      return r.send({ version: 1 });
    };
    const missing = await put();
    assert.equal(missing.status, 428);
    assert.equal(missing.body.error_type, 'precondition_required');
    const stale = await put('"0000000000"');
    assert.equal(stale.status, 412);
    assert.equal(stale.body.error_type, 'precondition_failed');
    const now = await request(t.server).get('/admin/v1/models/tiny/labels').set(auth);
    assert.equal(now.body.labels.candidate, undefined);
    const bad = await request(t.server)
      .put('/admin/v1/models/tiny/labels/candidate')
      .set(auth)
      .set('if-match', '*')
      .send({ version: 9 });
    assert.equal(bad.status, 404);
  });

  test('moving stable: clients embedding through the switch see 0 failures and no cold load; rollback', async () => {
    const before = await request(t.server).get('/admin/v1/models/tiny/labels').set(auth);
    const versions: number[] = [];
    let failures = 0;
    let stop = false;
    const client = (async () => {
      while (!stop) {
        const res = await embed();
        if (res.status === 200) versions.push(res.body.version);
        else failures++;
      }
    })();
    await until('a few requests on v1', () => versions.length >= 5);

    // The move loads v2 first (held here): requests keep being served by v1 meanwhile.
    const move = request(t.server)
      .put('/admin/v1/models/tiny/labels/stable')
      .set(auth)
      .set('if-match', before.body.etag)
      .send({ version: 2, reason: 'better probe' })
      .then((r) => r);
    await until('the move to load v2', () => v2Load.arrivals > 0);
    const during = versions.length;
    await until('requests served while v2 loads', () => versions.length >= during + 10);
    assert.deepEqual(new Set(versions), new Set([1]), 'v1 serves until the move is done');
    v2Load.release();
    const moved = await move;
    assert.equal(moved.status, 200, moved.text);
    assert.deepEqual(moved.body.labels, { latest: 2, stable: 2 });
    assert.notEqual(moved.body.etag, before.body.etag);
    const last = moved.body.history.at(-1);
    assert.deepEqual(
      [last.label, last.from, last.to, last.reason],
      ['stable', 1, 2, 'better probe'],
    );
    assert.match(last.by, /^token:[0-9a-f]{8}$/);
    await until('v2 served after the move', () => versions.at(-1) === 2);

    const back = await request(t.server)
      .post('/admin/v1/models/tiny/labels/stable/rollback')
      .set(auth)
      .set('if-match', moved.body.etag)
      .send({ reason: 'regression' });
    assert.equal(back.status, 200, back.text);
    assert.equal(back.body.labels.stable, 1);
    const n = versions.length;
    await until('v1 served again', () => versions.length > n && versions.at(-1) === 1);
    stop = true;
    await client;
    assert.equal(failures, 0);
    // Once on v2, never back to v1 until the rollback: the switch is clean.
    const firstV2 = versions.indexOf(2);
    const lastV2 = versions.lastIndexOf(2);
    assert.ok(versions.slice(firstV2, lastV2 + 1).every((v): boolean => v === 2));
  });

  test('another replica moving the label: this one keeps serving the old version until the new one is warm', async () => {
    // tiny@2 is loaded by now; a third version is not.
    await publishStack(dir, 'tiny', tinyStack(3), ['latest']);
    const other = new StackStore(dir); // another replica's store, on the shared volume
    const state = await other.labelState('tiny');
    await other.moveLabel('tiny', 'stable', 2, { by: 'replica-b' }, state.etag);
    const res = await embed();
    assert.equal(res.status, 200);
    assert.equal(res.body.version, 2, 'v2 is warm here: served at once');
    await other.moveLabel('tiny', 'stable', 3, { by: 'replica-b' });
    // v3 was never loaded here: the first request after the move is still answered by v2, while
    // v3 loads in the background; then v3.
    const first = await embed();
    assert.equal(first.status, 200);
    assert.equal(first.body.version, 2);
    await until('v3 served once loaded', async () => (await embed()).body.version === 3);
  });

  test('delete: not latest; an unknown head is a 404', async () => {
    const state = await request(t.server).get('/admin/v1/models/tiny/labels').set(auth);
    const latest = await request(t.server)
      .delete('/admin/v1/models/tiny/labels/latest')
      .set(auth)
      .set('if-match', state.body.etag);
    assert.equal(latest.status, 409);
    const stable = await request(t.server)
      .delete('/admin/v1/models/tiny/labels/stable')
      .set(auth)
      .set('if-match', state.body.etag);
    assert.equal(stable.status, 200, stable.text);
    assert.equal(stable.body.labels.stable, undefined);
    assert.equal(stable.body.history.at(-1).to, null);

    // Head labels share the store's label logic (test/unit/head-store.test.ts moves them).
    const none = await request(t.server)
      .get('/admin/v1/models/tiny/classifiers/nope/labels')
      .set(auth);
    assert.equal(none.status, 404);
    assert.equal(none.body.error_type, 'not_found');
  });
});
