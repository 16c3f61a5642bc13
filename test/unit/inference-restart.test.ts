/**
 * What a restarted inference worker does besides coming back (see also
 * test/e2e/worker-crash.e2e.test.ts): a stack it cannot load again is loaded at its next embed,
 * or the embed says why (not "not loaded"); a restart that fails is retried, with no call needed,
 * and `down` says why no worker serves meanwhile.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as tf from '@tensorflow/tfjs';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { InferenceClient } from '../../src/inference/inference-client.js';
import {
  CRASHING_WORKER_URL,
  REFUSE_START_ENV,
  REFUSED_EXIT_CODE,
} from '../helpers/crashing-inference-worker.js';
import { rejectsWith } from '../helpers/gim-error.js';
import { untrainedDraft } from '../helpers/stack-draft.js';

const adapter = defaultImageAdapter({ mean: [0.3], std: [0.3] });
const IMAGE = adapter.height * adapter.width;

let dir = '';
let client: InferenceClient;
const logLines: string[] = [];

before(async () => {
  await tf.setBackend('cpu');
  dir = await mkdtemp(join(tmpdir(), 'gim-restart-'));
  process.env[REFUSE_START_ENV] = join(dir, 'refuse-start');
  const store = new StackStore(dir);
  for (const seed of [1, 2]) {
    const stack = EncoderStack.create(adapter, visionModuleConfigs(adapter, [4, 8, 8]), seed);
    await store.publish('tiny', await untrainedDraft(stack, { backend: 'cpu' }));
    stack.dispose();
  }
  client = await InferenceClient.start({
    modelsDir: dir,
    backend: 'wasm',
    workerUrl: CRASHING_WORKER_URL,
    log: (l) => logLines.push(l),
  });
});

after(async () => {
  await client.close();
  delete process.env[REFUSE_START_ENV];
  await rm(dir, { recursive: true, force: true });
});

const image = () => Float32Array.from({ length: IMAGE }, (_, i) => (i % 17) / 17);

/** Kills the worker, waits until a new one is up; returns what `down` said meanwhile. */
async function killAndWaitForRestart(timeoutMs = 30_000): Promise<string[]> {
  const said = new Set<string>();
  await client.terminateWorkerForTest();
  const deadline = Date.now() + timeoutMs;
  // The first reading may come before the exit event: wait for `down` to be set, then cleared.
  while (said.size === 0 || client.down !== null) {
    if (client.down !== null) said.add(client.down);
    assert.ok(Date.now() < deadline, `no worker after ${timeoutMs} ms: ${client.down}`);
    await sleep(5);
  }
  return [...said];
}

test('a stack a restarted worker cannot load again: its embed says why, and loads it once fixed', async () => {
  await client.load('tiny@1');
  await client.load('tiny@2');
  const before = (await client.embed('tiny', 2, image(), 1, [3])).grids.get(3)!.data;

  const weights = join(dir, 'tiny', '2', 'module-2', 'weights.bin');
  await rename(weights, `${weights}.away`);
  const said = await killAndWaitForRestart();
  assert.match(
    said[0]!,
    /^the inference worker died \(exit code 1\); restarting it and loading its 2 stacks again$/,
  );
  assert.ok(
    logLines.some((l) =>
      /could not load tiny@2 again: tiny@2 is unavailable: tiny\/2\/module-2\/weights\.bin does not exist/.test(
        l,
      ),
    ),
    logLines.join('\n'),
  );
  assert.equal((await client.embed('tiny', 1, image(), 1, [3])).grids.get(3)!.shape.n, 1);
  await rejectsWith(
    client.embed('tiny', 2, image(), 1, [3]),
    'model_unavailable',
    /^tiny@2 is unavailable: tiny\/2\/module-2\/weights\.bin does not exist$/,
  );

  await rename(`${weights}.away`, weights);
  assert.deepEqual((await client.embed('tiny', 2, image(), 1, [3])).grids.get(3)!.data, before);
});

test('a restart that fails is retried without any call; `down` says why meanwhile', async () => {
  const refuse = process.env[REFUSE_START_ENV]!;
  await writeFile(refuse, '');
  await client.terminateWorkerForTest();
  const deadline = Date.now() + 30_000;
  while (!/^restarting the inference worker failed/.test(client.down ?? '')) {
    assert.ok(Date.now() < deadline, `down: ${client.down}`);
    await sleep(5);
  }
  assert.match(
    client.down!,
    new RegExp(
      `^restarting the inference worker failed \\(the inference worker died \\(exit code ${REFUSED_EXIT_CODE}\\)\\); trying again$`,
    ),
  );
  await rm(refuse);
  while (client.down !== null) {
    assert.ok(Date.now() < deadline, `still down: ${client.down}`);
    await sleep(5);
  }
  assert.ok(logLines.some((l) => /restart failed: .*; trying again/.test(l)));
  assert.equal((await client.embed('tiny', 1, image(), 1, [1])).grids.get(1)!.shape.n, 1);
});
