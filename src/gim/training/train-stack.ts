import type * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import type {
  AdapterConfig,
  DataRecord,
  Modality,
  ModuleConfig,
  ModuleManifest,
  StackManifest,
} from '../store/manifest.js';
import type { StackDraft } from '../store/stack-store.js';
import { resolveTrainConfig, type TrainConfig } from './config.js';
import { GreedyTrainer, importTrainerState } from './greedy-trainer.js';
import { loadCheckpoint } from './checkpoint.js';
import type { TrainableStack, TrainingData } from './modality.js';
import { runTraining, type TrainCallbacks, type TrainResult } from './run-training.js';

/** What a modality contributes to a training job; everything else is shared. */
export interface StackRecipe<S extends TrainableStack> {
  modality: Modality;
  /** A new stack for this data (e.g. normalisation statistics from a sample). */
  create(seed: number): Promise<S>;
  /** A stack from saved weights (a checkpoint or a parent version). */
  restore(
    adapter: AdapterConfig,
    configs: ModuleConfig[],
    artifacts: tf.io.ModelArtifacts[],
  ): Promise<S>;
  /**
   * A parent's stack with the job's new modules on top (GIM grows a stack greedily: the parent's
   * modules are kept), or the stack itself when the job asks for no more modules than it has.
   */
  grow?(parent: S, seed: number): S;
  data(stack: S): TrainingData;
  describeData(): Promise<DataRecord>;
}

export interface TrainJobOptions {
  train?: Partial<TrainConfig>;
  /** Retrain from `train.fromModule` on a published stack: its adapter and weights are kept. */
  parent?: { manifest: StackManifest; modules: tf.io.ModelArtifacts[] };
  checkpointDir?: string;
  /** Continue from the checkpoint in `checkpointDir` (if there is one). */
  resume?: boolean;
  callbacks?: TrainCallbacks & { onLog?(line: string): void };
  signal?: AbortSignal;
  /** Name of the tfjs backend, recorded in the manifest. */
  backend: string;
}

export interface TrainOutcome<S extends TrainableStack> {
  stack: S;
  result: TrainResult;
  /** Ready for `StackStore.publish`. */
  draft: StackDraft;
}

/**
 * Trains (or resumes, or retrains from module k) a stack and returns it with a manifest draft.
 * Publishing is the caller's: this function writes only checkpoints.
 *
 * With `train.epochs` 0 the stack keeps its initial weights: the same `create(seed)` (and so the
 * same data-derived adapter) a trained run starts from, checked by the same trainer set-up, no
 * batch read, no checkpoint read or written. Its draft is marked `untrained`: the random-init
 * baseline of the stack that training with this seed would give.
 */
export async function trainStack<S extends TrainableStack>(
  recipe: StackRecipe<S>,
  job: TrainJobOptions,
): Promise<TrainOutcome<S>> {
  const log = job.callbacks?.onLog ?? (() => undefined);
  const untrained = job.train?.epochs === 0;
  if (untrained && job.parent)
    throw new GimError(
      'invalid_argument',
      'epochs 0 publishes a new stack with its initial weights; a retrain from a parent needs epochs >= 1',
    );
  // Nothing to resume, and an earlier run's checkpoint there is not this run's to touch.
  const checkpointDir = untrained ? undefined : job.checkpointDir;
  if (untrained && job.resume) log('epochs 0 trains nothing: no checkpoint is read');
  const checkpoint = job.resume && checkpointDir ? await loadCheckpoint(checkpointDir) : null;
  // A job runner passes --resume on every retry, including the first attempt's.
  if (job.resume && checkpointDir && !checkpoint)
    log(`no checkpoint in ${checkpointDir}: starting fresh`);
  const data = await recipe.describeData();
  let stack: S;
  let config: TrainConfig;
  if (checkpoint) {
    config = checkpoint.state.config;
    if (data.fingerprint !== checkpoint.state.data.fingerprint)
      throw new GimError('conflict', `the checkpoint in ${checkpointDir} was made on other data`);
    stack = await recipe.restore(
      checkpoint.state.adapter,
      checkpoint.state.modules,
      checkpoint.modules,
    );
    const at = checkpoint.state;
    log(
      `resuming from step ${at.step} (phase ${at.phase + 1}, ${at.epochsDone} epochs done` +
        `${at.stepInEpoch > 0 ? `, ${at.stepInEpoch} batches into the next` : ''})`,
    );
  } else if (job.parent) {
    const p = job.parent.manifest;
    const seed = resolveTrainConfig(job.train ?? {}).seed; // checked before weights are loaded
    const restored = await recipe.restore(
      p.adapter,
      p.modules.map((m) => m.config),
      job.parent.modules,
    );
    try {
      stack = recipe.grow ? recipe.grow(restored, seed) : restored;
    } catch (e) {
      restored.dispose();
      throw e;
    }
    const grown = stack.depth - p.modules.length;
    // Growing trains the new modules (on the frozen parent) unless told to start lower.
    config = resolveTrainConfig({
      ...job.train,
      fromModule: job.train?.fromModule ?? (grown > 0 ? p.modules.length + 1 : 1),
    });
    log(
      grown > 0
        ? `growing ${p.name}@${p.version} by ${grown} module(s); training from module ${config.fromModule}`
        : `retraining ${p.name}@${p.version} from module ${config.fromModule}`,
    );
  } else {
    config = resolveTrainConfig(job.train ?? {});
    stack = await recipe.create(config.seed);
  }
  let trainer: GreedyTrainer | undefined;
  try {
    trainer = new GreedyTrainer(stack, config);
    if (checkpoint) await importTrainerState(trainer, checkpoint.trainer);
    const result = await runTraining(trainer, recipe.data(stack), {
      callbacks: job.callbacks,
      checkpointDir,
      resumeFrom: checkpoint?.state,
      signal: job.signal,
      data,
    });
    const parentLosses = job.parent?.manifest.modules.map((m) => m.finalLoss) ?? [];
    const layers = stack.layerShapes();
    const modules: ModuleManifest[] = stack.moduleConfigs.map((c, i) => ({
      index: i + 1,
      dir: `module-${i + 1}`,
      config: c,
      ...(layers[i] as (typeof layers)[number]),
      finalLoss: result.finalLosses[i] ?? parentLosses[i] ?? null,
    }));
    const draft: StackDraft = {
      manifest: {
        modality: recipe.modality,
        adapter: stack.adapter,
        modules,
        training: {
          schedule: config.schedule,
          config: { ...trainer.config, channels: stack.modules.map((m) => m.channels) },
          seed: config.seed,
          epochs: config.epochs,
          steps: result.steps,
          durationSeconds: Math.round(result.durationSeconds * 10) / 10,
          ...(untrained ? { untrained: true as const } : {}),
        },
        data,
        backend: job.backend,
        createdAt: new Date().toISOString(),
        parent: job.parent
          ? { version: job.parent.manifest.version, fromModule: config.fromModule }
          : null,
      },
      modules: await stack.artifacts(),
    };
    return { stack, result, draft };
  } catch (e) {
    stack.dispose();
    throw e;
  } finally {
    trainer?.dispose();
  }
}
