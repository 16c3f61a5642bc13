/**
 * The inference worker crashing for real (an exit, an uncaught exception) with requests in flight
 * through the real HTTP app: the requests whose batch was in the worker are answered 503
 * `backend_unavailable` (no 500, no hang), readiness is 503 until the restarted worker has loaded
 * the stacks again and 200 after, and the restarted worker serves the same embeddings.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { INestApplication } from '@nestjs/common';
import request from 'supertest';
import { InferenceClient } from '../../src/inference/inference-client.js';
import { useBackend } from '../helpers/backends.js';
import {
  armCrash,
  CRASH_EXIT_CODE,
  CRASHING_WORKER_URL,
  type CrashHow,
} from '../helpers/crashing-inference-worker.js';
import {
  bootApp,
  fixturePngs,
  maxAbsDiff,
  metric,
  publishStack,
  scrape,
  tinyStack,
  waitReady,
} from './serve-fixtures.js';

const CLIENTS = 6;

describe('an inference worker that crashes (e2e)', () => {
  let modelsDir: string;
  let app: INestApplication;
  let server: Server;
  let pngs: Buffer[];
  /** Per png, its embedding before any crash. */
  let reference: number[][];

  const embed = (png: Buffer) =>
    request(server).post('/v1/models/tiny/embeddings').set('content-type', 'image/png').send(png);

  before(async () => {
    modelsDir = await mkdtemp(join(tmpdir(), 'gim-worker-crash-'));
    await useBackend('wasm');
    const stack = tinyStack(3);
    await publishStack(modelsDir, 'tiny', stack, ['latest']);
    stack.dispose();
    pngs = await fixturePngs(CLIENTS);
    // Items queued behind the crashed batch wait for the restart: room for a slow one here.
    const env = { MODELS_DIR: modelsDir, REQUEST_TIMEOUT_MS: '30000' };
    ({ app, server } = await bootApp(env, (opts) =>
      InferenceClient.start({ ...opts, workerUrl: CRASHING_WORKER_URL }),
    ));
    await waitReady(server, 60_000);
    reference = [];
    for (const png of pngs) {
      const res = await embed(png);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      reference.push(res.body.results[0].embeddings[0]);
    }
  });

  after(async () => {
    await app?.close();
    if (modelsDir) await rm(modelsDir, { recursive: true, force: true });
  });

  /**
   * Polls /health/ready every 10 ms until `stop()`; returns what it saw, in order. `stop()` polls
   * once more after the loop has ended: the loop's last answer may have been computed before the
   * caller's own readiness check (a 503 still in flight when the caller saw 200), so the last
   * entry is always an answer from after `stop()` was called.
   */
  function watchReadiness(): { stop: () => Promise<{ status: number; error?: string }[]> } {
    const seen: { status: number; error?: string }[] = [];
    let running = true;
    const poll = async (): Promise<boolean> => {
      const res = await request(server)
        .get('/health/ready')
        .catch(() => null);
      if (res === null) return false;
      const last = seen.at(-1);
      if (last?.status !== res.status || last?.error !== res.body.error)
        seen.push({ status: res.status, error: res.body.error });
      return true;
    };
    const polling = (async () => {
      while (running && (await poll())) await sleep(10);
    })();
    return {
      stop: async () => {
        running = false;
        await polling;
        await poll();
        return seen;
      },
    };
  }

  for (const [how, died] of [
    ['exit', `exit code ${CRASH_EXIT_CODE}`],
    ['throw', 'the inference worker crashed \\(a test made it throw\\)'],
  ] as [CrashHow, string][]) {
    test(`a worker that dies (${how}) mid-batch: its items 503, readiness 503 until restarted, then the same embeddings`, async () => {
      const tensorsBefore = metric(await scrape(server), 'gim_tfjs_tensors');
      const readiness = watchReadiness();
      let during: request.Response[];
      let seen: Awaited<ReturnType<ReturnType<typeof watchReadiness>['stop']>>;
      try {
        await armCrash(how);
        during = await Promise.all(pngs.map((png) => embed(png)));
        await waitReady(server, 60_000);
      } finally {
        seen = await readiness.stop();
      }

      let failed = 0;
      during.forEach((res, i) => {
        if (res.status === 200) {
          // Queued behind the crashed batch: served by the restarted worker.
          assert.ok(maxAbsDiff(res.body.results[0].embeddings[0], reference[i]!) < 1e-5);
          return;
        }
        if (res.status === 504 && res.body.error_type === 'timeout') return; // a very slow restart
        failed++;
        assert.equal(res.status, 503, JSON.stringify(res.body));
        assert.deepEqual(res.body, {
          error: res.body.error,
          error_type: 'backend_unavailable',
        });
        assert.match(res.body.error, new RegExp(`^the inference worker died \\(${died}\\)$`));
      });
      assert.ok(failed >= 1, 'the batch in the worker when it died was answered 503');

      const down = seen.filter((s) => s.status !== 200);
      assert.ok(
        down.length >= 1,
        `readiness never showed the dead worker: ${JSON.stringify(seen)}`,
      );
      for (const s of down) {
        assert.equal(s.status, 503);
        assert.match(
          s.error ?? '',
          new RegExp(
            `^the inference worker died \\(${died}\\); restarting it and loading its 1 stacks again$`,
          ),
        );
      }
      assert.equal(seen.at(-1)?.status, 200);

      // The restarted worker: the same numbers, one at a time as the reference was made.
      for (const [i, png] of pngs.entries()) {
        const res = await embed(png);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        assert.deepEqual(res.body.results[0].embeddings[0], reference[i]);
      }
      // It holds the tensors the first one held: the stack once, nothing left by the crash.
      assert.equal(metric(await scrape(server), 'gim_tfjs_tensors'), tensorsBefore);
    });
  }
});
