/**
 * kill -9 of the trainer while it publishes (e2e: the real app, a real job with the local runner
 * and the real `gim` CLI trainer): no half-written version is ever listed, the job fails with a
 * clear reason, and a retry (resuming from the checkpoint) publishes.
 *
 * The trainer is caught in its publish without any hook in it: the test watches the stack
 * directory (inotify) and acts when the publish's temporary directory appears. To hold the
 * trainer inside its publish for certain, the test holds the stack's labels lock (the file the
 * store takes after renaming the version into place): the trainer cannot get past it, so it is
 * always still publishing when the test stops it (SIGSTOP) a random few milliseconds after the
 * temporary directory appeared, somewhere between writing the first module and waiting for the
 * lock. While it is stopped, and again after kill -9, every version GET /v1/models lists must
 * load and embed. One round without the lock kills it as it writes labels.json. Nothing here
 * asserts a time: each wait has a generous deadline only.
 */
import assert from 'node:assert/strict';
import { type FSWatcher, watch } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, utimes } from 'node:fs/promises';
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

const TOKEN = 'kill-publish-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };
const JOB = {
  kind: 'encoder',
  model: 'tiny',
  spec: {
    modality: 'image',
    data: 'fashion-mnist-mini',
    channels: [4, 8, 8],
    epochs: 1,
    batch_size: 8,
    max_steps_per_epoch: 2,
    labels: ['latest'],
  },
};
/** The publish's temporary directory (VersionedDir.publish: `.tmp-` and 8 random bytes). */
const PUBLISH_TEMP = /^\.tmp-[0-9a-f]{16}$/;
/** labels.json's temporary sibling (writeFileAtomic). */
const LABELS_TEMP = /^\.tmp-labels\.json-/;
/** A generous deadline for each wait: the machine may be loaded. */
const WAIT_MS = 180_000;

/** Deterministic "random" delays (mulberry32), so that a failure can be replayed. */
function delays(seed: number, count: number, maxMs: number): number[] {
  let a = seed;
  return Array.from({ length: count }, () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * maxMs);
  });
}

interface Job {
  id: string;
  status: string;
  reason?: string;
  message?: string;
  attempts: { n: number; resume: boolean; runnerRef?: string; signal?: string | null }[];
  result?: { published?: { version: number } };
}

describe('kill -9 of the trainer while it publishes (e2e, real trainer)', () => {
  let dir: string;
  let stackDir: string;
  let t: TestApp;
  let png: Buffer;
  let watcher: FSWatcher | undefined;
  /** What a failed round leaves to undo: held locks, a stopped trainer. */
  const cleanups: (() => Promise<void>)[] = [];
  let stoppedTrainer = 0;
  /** Called with each entry name the stack directory reports (created, renamed or removed). */
  let onEntry: (name: string) => void = () => undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-kill-publish-'));
    stackDir = join(dir, 'tiny');
    await publishStack(dir, 'tiny', tinyStack(1), ['latest', 'stable']);
    [png] = (await fixturePngs(1)) as [Buffer];
    t = await bootApp({
      MODELS_DIR: dir,
      ADMIN_TOKEN: TOKEN,
      DATA_ROOT: join(ROOT, 'test/fixtures'),
      REF_CACHE_MS: '0',
    });
    await waitReady(t.server);
    watcher = watch(stackDir, (_event, name) => {
      if (typeof name === 'string') onEntry(name);
    });
  });
  after(async () => {
    watcher?.close();
    // After a failed assertion: a trainer still stopped (our child: its pid is not reused while
    // it is stopped), a lock still held (and its timer).
    if (stoppedTrainer) process.kill(stoppedTrainer, 'SIGKILL');
    for (const cleanup of cleanups.splice(0)) await cleanup();
    await t?.app.close();
    await rm(dir, { recursive: true, force: true });
  });

  const getJob = async (id: string, waitSeconds = 0): Promise<Job> => {
    const res = await request(t.server)
      .get(`/admin/v1/training-jobs/${id}?wait_seconds=${waitSeconds}`)
      .set(auth);
    assert.equal(res.status, 200, res.text);
    return res.body as Job;
  };

  /** The pid of attempt `n`'s trainer, once it has one. */
  const trainerOf = async (id: string, n: number): Promise<number> => {
    let pid = 0;
    await until(
      `the trainer of attempt ${n}`,
      async () => {
        const job = await getJob(id);
        const attempt = job.attempts.find((a) => a.n === n);
        pid = Number(attempt?.runnerRef ?? 0);
        return pid > 0 || job.status === 'failed';
      },
      WAIT_MS,
    );
    assert.ok(pid > 0, `attempt ${n} has no trainer`);
    return pid;
  };

  /**
   * What a client sees: every version GET /v1/models lists loads and embeds (so is complete),
   * nothing is unavailable, and `latest` names a listed version. Returns the listed versions.
   */
  const listedVersionsServe = async (when: string): Promise<number[]> => {
    const list = await request(t.server).get('/v1/models');
    assert.equal(list.status, 200, list.text);
    assert.deepEqual(list.body.unavailable, [], `${when}: nothing unavailable`);
    const tiny = (list.body.models as { name: string; versions: number[]; labels: object }[]).find(
      (m) => m.name === 'tiny',
    );
    assert.ok(tiny, `${when}: tiny is listed`);
    const labels = tiny.labels as Record<string, number>;
    assert.ok(tiny.versions.includes(labels.latest!), `${when}: latest is a listed version`);
    for (const version of tiny.versions) {
      const res = await request(t.server)
        .post(`/v1/models/tiny/embeddings?version=${version}&layer=3`)
        .set('content-type', 'image/png')
        .send(png);
      assert.equal(res.status, 200, `${when}: tiny@${version} embeds: ${res.text}`);
      assert.equal(res.body.version, version);
      const vector = res.body.results[0].embeddings[0] as number[];
      assert.ok(vector.length > 0 && vector.every(Number.isFinite), `${when}: tiny@${version}`);
    }
    // Beside the API: each version directory has its manifest (written last, before the rename).
    for (const version of tiny.versions)
      await readFile(join(stackDir, String(version), 'manifest.json'));
    return tiny.versions;
  };

  /** Numeric entries of the stack directory: what a publish has renamed into place. */
  const versionDirs = async (): Promise<number[]> =>
    (await readdir(stackDir)).filter((n) => /^\d+$/.test(n)).map(Number);

  /**
   * Holds the stack's labels lock (as a live writer would: its mtime kept fresh, so that it is
   * never taken for a crashed writer's) until the returned function releases it.
   */
  const holdLabelsLock = async (): Promise<() => Promise<void>> => {
    const lock = join(stackDir, '.labels.lock');
    await (await open(lock, 'wx')).close();
    const fresh = setInterval(() => {
      const now = new Date();
      void utimes(lock, now, now).catch(() => undefined);
    }, 1000);
    const release = async (): Promise<void> => {
      clearInterval(fresh);
      if (cleanups.includes(release)) cleanups.splice(cleanups.indexOf(release), 1);
      await rm(lock, { force: true });
    };
    cleanups.push(release);
    return release;
  };

  test(
    'no half-written version is ever listed; the job fails clearly; a retry publishes',
    { timeout: 1_200_000 },
    async () => {
      const before = await listedVersionsServe('before');
      assert.deepEqual(before, [1]);
      const submitted = await request(t.server).post('/admin/v1/training-jobs').set(auth).send(JOB);
      assert.equal(submitted.status, 202, submitted.text);
      const id = submitted.body.id as string;

      // Rounds 1-2: stopped inside the publish at a (seeded) random point, then kill -9.
      // Round 3: stopped once the version is renamed into place, while it waits for the lock.
      // Round 4: no lock; killed as labels.json is being replaced.
      const rounds: ({ delayMs: number } | 'renamed' | 'labels')[] = [
        ...delays(20261207, 2, 25).map((delayMs) => ({ delayMs })),
        'renamed',
        'labels',
      ];
      const landed: string[] = [];
      let n = 1;
      let finished: Job | undefined;
      for (const round of rounds) {
        const pid = await trainerOf(id, n);
        const release = round === 'labels' ? async () => undefined : await holdLabelsLock();

        const versionsBefore = await versionDirs();
        let stopped = false;
        let gone = false;
        const stop = (): void => {
          if (stopped) return;
          stopped = true;
          try {
            process.kill(pid, round === 'labels' ? 'SIGKILL' : 'SIGSTOP');
            if (round !== 'labels') stoppedTrainer = pid;
          } catch {
            gone = true; // exited already (only possible without the lock: round 'labels')
          }
        };
        let temp = '';
        onEntry = (name) => {
          if (PUBLISH_TEMP.test(name)) temp ||= name;
          if (typeof round === 'object' && PUBLISH_TEMP.test(name)) {
            if (round.delayMs === 0) stop();
            else setTimeout(stop, round.delayMs);
          }
          if (round === 'renamed' && /^\d+$/.test(name)) stop();
          if (round === 'labels' && LABELS_TEMP.test(name)) stop();
        };
        await until(
          `round ${landed.length + 1}: the trainer caught in its publish`,
          () => stopped,
          WAIT_MS,
        );
        onEntry = () => undefined;
        const entries = await readdir(stackDir);
        const renamed = (await versionDirs()).filter((v) => !versionsBefore.includes(v));
        const where =
          round === 'labels'
            ? 'labels'
            : `${entries.includes(temp) ? 'writing' : 'renamed'}${renamed.length ? ` (v${renamed.join(',')} in place)` : ''}`;
        landed.push(
          typeof round === 'object' ? `+${round.delayMs} ms: ${where}` : `${round}: ${where}`,
        );
        assert.ok(
          !gone || round === 'labels',
          'a trainer held by the labels lock cannot have exited',
        );
        if (round !== 'labels') {
          // Held mid-publish: the trainer has its environment without the service's secrets.
          const environ = (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0');
          assert.ok(environ.includes(`MODELS_DIR=${dir}`), 'the trainer has MODELS_DIR');
          assert.ok(!environ.some((e) => e.startsWith('ADMIN_TOKEN=')), 'no ADMIN_TOKEN');
          await listedVersionsServe(`round ${landed.length}, trainer stopped`);
          process.kill(pid, 'SIGKILL');
          stoppedTrainer = 0;
        }
        const job = await getJob(id, 120);
        await release();
        await listedVersionsServe(`round ${landed.length}, after kill -9`);
        if (round === 'labels' && job.status === 'succeeded') {
          // The trainer had written labels.json and was gone before the signal: published.
          finished = job;
          landed[landed.length - 1] += ' (too late: it had published)';
          break;
        }
        assert.equal(job.status, 'failed', JSON.stringify(job));
        assert.equal(
          job.reason,
          'out_of_memory',
          'the local runner reads a SIGKILL as the OOM killer',
        );
        assert.match(job.message ?? '', /killed by SIGKILL/);
        assert.equal(job.attempts.at(-1)?.signal, 'SIGKILL');
        const retried = await request(t.server)
          .post(`/admin/v1/training-jobs/${id}/retry`)
          .set(auth);
        assert.equal(retried.status, 202, retried.text);
        n += 1;
      }
      finished ??= await (async () => {
        await trainerOf(id, n);
        let job = await getJob(id);
        await until(
          'the last attempt to finish',
          async () => ['succeeded', 'failed'].includes((job = await getJob(id, 30)).status),
          WAIT_MS,
        );
        return job;
      })();
      assert.equal(finished.status, 'succeeded', JSON.stringify(finished));
      assert.ok(finished.attempts.at(-1)?.resume, 'the last attempt resumed from the checkpoint');
      const published = finished.result?.published?.version;
      const versions = await listedVersionsServe('after the job');
      assert.equal(published, Math.max(...versions), 'the job published the newest version');
      const labels = await request(t.server).get('/admin/v1/models/tiny/labels').set(auth);
      assert.equal(labels.body.labels.latest, published);
      assert.equal(labels.body.labels.stable, 1, 'stable untouched');
      // What the kills left on disk is temporary entries only, which nothing lists.
      const leftovers = (await readdir(stackDir)).filter((e) => !/^\d+$/.test(e));
      assert.ok(
        leftovers.every(
          (e) =>
            e.startsWith('.tmp-') ||
            /^(labels\.json|labels\.history\.ndjson|\.labels\.lock)$/.test(e),
        ),
        leftovers.join(', '),
      );
      console.log(`# kills landed: ${landed.join('; ')}; versions ${versions.join(', ')}`);
      await sleep(0);
    },
  );
});
