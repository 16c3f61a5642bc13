import * as tf from '@tensorflow/tfjs';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { GimError } from '../errors.js';
import type { AdapterConfig, ModuleConfig } from '../store/manifest.js';
import { fsyncDir, isErrno, writeFileDurable, writeJsonAtomic } from '../store/atomic.js';
import { loadModelArtifacts, saveModelArtifacts } from '../store/tfjs-files.js';
import type { TrainConfig } from './config.js';
import type { NamedTensor, TrainerState } from './greedy-trainer.js';

export const CHECKPOINT_FORMAT = 'gim-checkpoint/1';

/** Where a run stands, saved after every epoch so `--resume` continues from the next one. */
export interface CheckpointState {
  format: typeof CHECKPOINT_FORMAT;
  config: TrainConfig;
  adapter: AdapterConfig;
  modules: ModuleConfig[];
  /** Index of the current phase (sequential: one phase per module; otherwise one phase). */
  phase: number;
  /** Epochs completed in that phase. */
  epochsDone: number;
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
  const name = `ckpt-${String(state.step).padStart(8, '0')}`;
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
  const raw = JSON.parse(await readFile(join(ck, 'state.json'), 'utf8')) as CheckpointState & {
    trainerWeights: tf.io.WeightsManifestEntry[];
    optimizerNames: string[][];
  };
  if (raw.format !== CHECKPOINT_FORMAT)
    throw new GimError('invalid_data', `${ck}: not a ${CHECKPOINT_FORMAT} checkpoint`);
  const { trainerWeights, optimizerNames, ...state } = raw;
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
