import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadFashionMnist } from '../../src/gim/data/idx.js';
import { batches, type ImageDataset } from '../../src/gim/data/dataset.js';
import type { Schedule } from '../../src/gim/training/config.js';
import { trainImageStack, type ImageTrainJob } from '../../src/gim/training/train-image-stack.js';
import { loadCheckpoint } from '../../src/gim/training/checkpoint.js';
import type { CheckpointReason } from '../../src/gim/training/run-training.js';
import { openAudioFolder } from '../../src/gim/data/audio-folder.js';
import { defaultAudioAdapter } from '../../src/gim/modality/audio.js';
import { audioTrainingData } from '../../src/gim/training/audio-training.js';
import { describeEachBackend, testBackends } from '../helpers/backends.js';

const FIXTURE = new URL('../fixtures/fashion-mnist-mini', import.meta.url).pathname;
const SPEAKERS = new URL('../fixtures/audio/speakers', import.meta.url).pathname;
const plan = await testBackends();

function weights(stack: { depth: number; layer(m: number): { variables: tf.Variable[] } }) {
  const out: Float32Array[] = [];
  for (let m = 1; m <= stack.depth; m++)
    for (const v of stack.layer(m).variables) out.push(v.dataSync() as Float32Array);
  return out;
}

test('batches: skip leaves out the first batches and yields the rest unchanged', async () => {
  const dataset = await loadFashionMnist(FIXTURE, 'train');
  const opts = { batchSize: 16, seed: 5, epoch: 3, dropLast: true };
  const all: Float32Array[] = [];
  for await (const b of batches(dataset, opts)) all.push(b.images);
  const reads: number[] = [];
  const counting: ImageDataset = {
    info: dataset.info,
    fingerprint: () => dataset.fingerprint(),
    read: (indices) => {
      reads.push(indices.length);
      return dataset.read(indices);
    },
  };
  const rest: Float32Array[] = [];
  for await (const b of batches(counting, { ...opts, skip: 3 })) rest.push(b.images);
  assert.equal(rest.length, all.length - 3);
  rest.forEach((images, i) => assert.deepEqual(images, all[i + 3], `batch ${i + 3}`));
  assert.equal(reads.length, all.length - 3, 'skipped batches must not be read');
});

test('audio batches: skip leaves out the first batches and the rest draw the same windows', async () => {
  const adapter = defaultAudioAdapter({ windowSamples: 2000 });
  const data = audioTrainingData(await openAudioFolder(SPEAKERS, { adapter }), adapter);
  const opts = { batchSize: 2, seed: 7, epoch: 1 };
  const all: Float32Array[] = [];
  for await (const b of data.batches(opts)) all.push(b.data);
  assert.equal(all.length, 3);
  const rest: Float32Array[] = [];
  for await (const b of data.batches({ ...opts, skip: 2 })) rest.push(b.data);
  assert.equal(rest.length, 1);
  assert.deepEqual(rest[0], all[2]);
});

describeEachBackend(plan, 'mid-epoch checkpoint and resume', (backend) => {
  for (const schedule of ['parallel', 'sequential'] as const satisfies Schedule[]) {
    test(`${schedule}: stopped mid-epoch and resumed ends bit-identical to an uninterrupted run`, async () => {
      const dataset = await loadFashionMnist(FIXTURE, 'train');
      const dir = await mkdtemp(join(tmpdir(), 'gim-mid-epoch-'));
      try {
        const job: ImageTrainJob = {
          dataset,
          channels: [4, 8, 8],
          train: {
            schedule,
            epochs: 2,
            batchSize: 8,
            seed: 4,
            maxStepsPerEpoch: 5,
            learningRate: 3e-3,
          },
          backend,
          checkpointDir: join(dir, 'stopped'),
        };
        const tensorsBefore = tf.memory().numTensors;
        const straight = await trainImageStack({ ...job, checkpointDir: join(dir, 'straight') });
        const want = weights(straight.stack);
        straight.stack.dispose();
        assert.equal(tf.memory().numTensors, tensorsBefore, 'a training run leaked tensors');

        // Stop after the second batch of epoch 2 (parallel), or of module 2's first epoch
        // (sequential: module 1 trains for steps 1-10).
        const stopAt = schedule === 'sequential' ? 12 : 7;
        const abort = new AbortController();
        const checkpoints: { path: string; globalStep: number; reason: CheckpointReason }[] = [];
        const part = await trainImageStack({
          ...job,
          signal: abort.signal,
          callbacks: {
            onStep: (p) => {
              if (p.globalStep === stopAt) abort.abort();
            },
            onCheckpoint: (path, info) => checkpoints.push({ path, ...info }),
          },
        });
        part.stack.dispose();
        assert.equal(part.result.aborted, true);
        assert.equal(part.result.steps, stopAt);
        assert.deepEqual(
          checkpoints.map((c) => [c.globalStep, c.reason]),
          schedule === 'sequential'
            ? [
                [5, 'epoch'],
                [10, 'epoch'],
                [12, 'cancel'],
              ]
            : [
                [5, 'epoch'],
                [7, 'cancel'],
              ],
        );
        const saved = await loadCheckpoint(job.checkpointDir as string);
        assert.ok(saved);
        tf.dispose([
          ...saved.trainer.predictors,
          ...saved.trainer.optimizers.flat().map((w) => w.tensor),
        ]);
        assert.equal(saved.state.step, stopAt);
        assert.equal(saved.state.stepInEpoch, 2);
        assert.equal(saved.state.phase, schedule === 'sequential' ? 1 : 0);
        assert.equal(saved.state.epochsDone, schedule === 'sequential' ? 0 : 1);
        assert.ok(saved.state.epochLossSums.some((l) => l > 0));

        const resumedLog: string[] = [];
        const resumed = await trainImageStack({
          ...job,
          resume: true,
          callbacks: { onLog: (l) => resumedLog.push(l) },
        });
        assert.match(
          resumedLog.join('\n'),
          new RegExp(`resuming from step ${stopAt} .*2 batches into the next`),
        );
        assert.equal(resumed.result.steps, straight.result.steps);
        assert.deepEqual(resumed.result.history, straight.result.history);
        assert.deepEqual(resumed.result.finalLosses, straight.result.finalLosses);
        // Same batches, same per-step seeds, same optimiser state, same kernels in the same
        // order: nothing is left for a difference to come from.
        const got = weights(resumed.stack);
        got.forEach((w, i) => assert.deepEqual(w, want[i], `variable ${i} differs`));
        resumed.stack.dispose();
        assert.equal(tf.memory().numTensors, tensorsBefore, 'resumed runs leaked tensors');
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  test('an abort from a macrotask (as a signal handler runs) stops the run after the current step', async () => {
    const dataset = await loadFashionMnist(FIXTURE, 'train');
    const dir = await mkdtemp(join(tmpdir(), 'gim-abort-'));
    try {
      const abort = new AbortController();
      const checkpoints: [number, CheckpointReason][] = [];
      const run = await trainImageStack({
        dataset,
        channels: [4, 8, 8],
        train: { epochs: 1, batchSize: 8, seed: 4, maxStepsPerEpoch: 5 },
        backend,
        checkpointDir: dir,
        signal: abort.signal,
        callbacks: {
          // The batches come from memory (microtasks only): the loop must still let this run.
          onStep: (p) => p.globalStep === 1 && setImmediate(() => abort.abort()),
          onCheckpoint: (_path, info) => checkpoints.push([info.globalStep, info.reason]),
        },
      });
      run.stack.dispose();
      assert.equal(run.result.steps, 1);
      assert.deepEqual(checkpoints, [[1, 'cancel']]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('resume with no checkpoint starts fresh; a gim-checkpoint/1 state loads as batch 0 of its epoch', async () => {
    const dataset = await loadFashionMnist(FIXTURE, 'train');
    const dir = await mkdtemp(join(tmpdir(), 'gim-resume-'));
    try {
      const job: ImageTrainJob = {
        dataset,
        channels: [4, 8, 8],
        train: { epochs: 2, batchSize: 8, seed: 4, maxStepsPerEpoch: 3 },
        backend,
        checkpointDir: dir,
      };
      const log: string[] = [];
      const abort = new AbortController();
      const first = await trainImageStack({
        ...job,
        resume: true,
        signal: abort.signal,
        callbacks: {
          onLog: (l) => log.push(l),
          onCheckpoint: (_p, info) => info.reason === 'epoch' && abort.abort(),
        },
      });
      first.stack.dispose();
      assert.match(log.join('\n'), /no checkpoint in .*: starting fresh/);
      assert.equal(first.result.steps, 3);

      // Rewrite the epoch-boundary checkpoint as the previous format wrote it.
      const latest = JSON.parse(await readFile(join(dir, 'latest.json'), 'utf8'));
      const statePath = join(dir, latest.checkpoint, 'state.json');
      const state = JSON.parse(await readFile(statePath, 'utf8'));
      delete state.stepInEpoch;
      delete state.epochLossSums;
      state.format = 'gim-checkpoint/1';
      await writeFile(statePath, JSON.stringify(state));
      const old = await loadCheckpoint(dir);
      assert.ok(old);
      tf.dispose([
        ...old.trainer.predictors,
        ...old.trainer.optimizers.flat().map((w) => w.tensor),
      ]);
      assert.equal(old.state.stepInEpoch, 0);
      assert.deepEqual(old.state.epochLossSums, [0, 0, 0]);
      const resumed = await trainImageStack({ ...job, resume: true });
      assert.equal(resumed.result.steps, 6);
      assert.equal(resumed.result.history.length, 2);
      resumed.stack.dispose();

      const now = JSON.parse(await readFile(join(dir, 'latest.json'), 'utf8'));
      await writeFile(
        join(dir, now.checkpoint, 'state.json'),
        JSON.stringify({ ...state, format: 'gim-checkpoint/9' }),
      );
      await assert.rejects(loadCheckpoint(dir), /gim-checkpoint\/9 checkpoint; this version reads/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
