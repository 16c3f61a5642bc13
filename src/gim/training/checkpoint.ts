import * as tf from '@tensorflow/tfjs';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { GimError } from '../errors.js';
import type { AdapterConfig, ModuleConfig } from '../store/manifest.js';
import { fsyncDir, isErrno, writeFileDurable, writeJsonAtomic } from '../store/atomic.js';
import { loadModelArtifacts, saveModelArtifacts } from '../store/tfjs-files.js';
import type { TrainConfig } from './config.js';
import type { NamedTensor, TrainerState } from './greedy-trainer.js';

/**
 * /2 adds the position inside an epoch (`stepInEpoch`, `epochLossSums`). A /1 checkpoint was only
 * ever written at an epoch boundary, so it loads as step 0 of its epoch; a reader of /1 refuses a
 * /2 checkpoint rather than silently replaying the steps of a half-done epoch.
 */
export const CHECKPOINT_FORMAT = 'gim-checkpoint/2';
const READABLE_FORMATS: readonly string[] = ['gim-checkpoint/1', CHECKPOINT_FORMAT];

/**
 * Where a run stands, saved after every epoch, and at the step where a run was stopped, so that
 * `--resume` continues from exactly there.
 */
export interface CheckpointState {
  format: typeof CHECKPOINT_FORMAT;
  config: TrainConfig;
  adapter: AdapterConfig;
  modules: ModuleConfig[];
  /** Index of the current phase (sequential: one phase per module; otherwise one phase). */
  phase: number;
  /** Epochs completed in that phase. */
  epochsDone: number;
  /** Batches of the current epoch (number `epochsDone`) already trained on: skipped on resume. */
  stepInEpoch: number;
  /** Sum of the loss per module over those batches (0 where not trained), for the epoch's mean. */
  epochLossSums: number[];
  /** Optimiser steps done so far, over all phases. */
  step: number;
  /** Mean loss per module (null: not trained in that epoch) of every completed epoch. */
  history: { phase: number; epoch: number; losses: (number | null)[] }[];
  elapsedSeconds: number;
  data: { source: string; fingerprint: string; items: number };
}

export interface Checkpoint {
  state: CheckpointState;
  modules: tf.io.ModelArtifacts[];
  trainer: TrainerState;
}

const LATEST = 'latest.json';

/**
 * Writes `<dir>/ckpt-<step>/` through a temporary directory, then points `<dir>/latest.json` at it
 * (replaced atomically), then removes older checkpoints: a crash leaves the previous one usable.
 */
export async function saveCheckpoint(
  dir: string,
  state: CheckpointState,
  modules: tf.io.ModelArtifacts[],
  trainer: TrainerState,
): Promise<string> {
  await mkdir(dir, { recursive: true });
  const name = checkpointName(state.step);
  const tmp = join(dir, `.tmp-${name}-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp);
  for (let i = 0; i < modules.length; i++)
    await saveModelArtifacts(join(tmp, `module-${i + 1}`), modules[i] as tf.io.ModelArtifacts);
  const named: NamedTensor[] = [];
  trainer.predictors.forEach((tensor, i) => named.push({ name: `predictor-${i + 1}`, tensor }));
  trainer.optimizers.forEach((list, o) =>
    list.forEach((w, j) => named.push({ name: `optimizer-${o + 1}/${j}`, tensor: w.tensor })),
  );
  const { data, specs } = await tf.io.encodeWeights(named);
  await writeFileDurable(join(tmp, 'trainer.bin'), new Uint8Array(data as ArrayBuffer));
  await writeFileDurable(
    join(tmp, 'state.json'),
    JSON.stringify(
      {
        ...state,
        trainerWeights: specs,
        optimizerNames: trainer.optimizers.map((l) => l.map((w) => w.name)),
      },
      null,
      2,
    ),
  );
  await fsyncDir(tmp);
  await rm(join(dir, name), { recursive: true, force: true });
  await rename(tmp, join(dir, name));
  await fsyncDir(dir);
  await writeJsonAtomic(join(dir, LATEST), { checkpoint: name, step: state.step });
  for (const entry of await readdir(dir))
    if (entry.startsWith('ckpt-') && entry !== name)
      await rm(join(dir, entry), { recursive: true, force: true });
  return join(dir, name);
}

/**
 * Removes the checkpoints of a finished run (its version is published): a later `--resume` in
 * this directory starts fresh instead of publishing the same weights again. The pointer goes
 * first, so an interrupted removal leaves no checkpoint that would be resumed.
 */
export async function removeCheckpoints(dir: string): Promise<void> {
  await rm(join(dir, LATEST), { force: true });
  for (const entry of await readdir(dir).catch(() => []))
    if (entry.startsWith('ckpt-') || entry.startsWith('.tmp-ckpt-'))
      await rm(join(dir, entry), { recursive: true, force: true });
}

/** Directory name of the checkpoint taken after optimiser step `step`. */
export function checkpointName(step: number): string {
  return `ckpt-${String(step).padStart(8, '0')}`;
}

/**
 * The step of the checkpoint `latest.json` points at, or null when the directory has none: a
 * cheap look before loading (the CLI announces a resume before the backend starts).
 */
export async function peekCheckpoint(dir: string): Promise<{ step: number } | null> {
  try {
    const latest = JSON.parse(await readFile(join(dir, LATEST), 'utf8')) as { step?: unknown };
    return typeof latest.step === 'number' ? { step: latest.step } : null;
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return null;
    throw new GimError('invalid_data', `unreadable ${join(dir, LATEST)}: ${(e as Error).message}`);
  }
}

/** Loads the checkpoint `latest.json` points at, or null when the directory has none. */
export async function loadCheckpoint(dir: string): Promise<Checkpoint | null> {
  let latest: { checkpoint?: unknown };
  try {
    latest = JSON.parse(await readFile(join(dir, LATEST), 'utf8')) as { checkpoint?: unknown };
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return null;
    throw new GimError('invalid_data', `unreadable ${join(dir, LATEST)}: ${(e as Error).message}`);
  }
  if (typeof latest.checkpoint !== 'string' || !/^ckpt-\d+$/.test(latest.checkpoint))
    throw new GimError('invalid_data', `${join(dir, LATEST)} names no checkpoint`);
  const ck = join(dir, latest.checkpoint);
  const raw = JSON.parse(await readFile(join(ck, 'state.json'), 'utf8')) as Omit<
    CheckpointState,
    'format' | 'stepInEpoch' | 'epochLossSums'
  > &
    Partial<Pick<CheckpointState, 'stepInEpoch' | 'epochLossSums'>> & {
      format: string;
      trainerWeights: tf.io.WeightsManifestEntry[];
      optimizerNames: string[][];
    };
  if (!READABLE_FORMATS.includes(raw.format))
    throw new GimError(
      'invalid_data',
      `${ck}: a ${String(raw.format)} checkpoint; this version reads ${READABLE_FORMATS.join(' and ')}`,
    );
  const { trainerWeights, optimizerNames, ...rest } = raw;
  const state: CheckpointState = {
    ...rest,
    format: CHECKPOINT_FORMAT,
    stepInEpoch: rest.stepInEpoch ?? 0,
    epochLossSums: rest.epochLossSums ?? new Array<number>(rest.modules.length).fill(0),
  };
  const modules: tf.io.ModelArtifacts[] = [];
  for (let i = 0; i < state.modules.length; i++)
    modules.push(await loadModelArtifacts(join(ck, `module-${i + 1}`)));
  const bytes = await readFile(join(ck, 'trainer.bin'));
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const tensors = tf.io.decodeWeights(buffer, trainerWeights);
  const trainer: TrainerState = {
    predictors: state.modules.map((_, i) => need(tensors, `predictor-${i + 1}`)),
    optimizers: optimizerNames.map((names, o) =>
      names.map((name, j) => ({ name, tensor: need(tensors, `optimizer-${o + 1}/${j}`) })),
    ),
  };
  return { state, modules, trainer };
}

function need(map: tf.NamedTensorMap, name: string): tf.Tensor {
  const t = map[name];
  if (!t) throw new GimError('invalid_data', `checkpoint lacks trainer weight ${name}`);
  return t;
}
