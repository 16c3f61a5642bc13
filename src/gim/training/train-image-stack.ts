import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import type { ImageDataset } from '../data/dataset.js';
import { channelStats, defaultImageAdapter, type ImageAdapterConfig } from '../modality/image.js';
import { EncoderStack, visionModuleConfigs } from '../encoders/encoder-stack.js';
import type { VisionModuleConfig } from '../encoders/vision-module.js';
import type { ModuleManifest, StackManifest } from '../store/manifest.js';
import type { StackDraft } from '../store/stack-store.js';
import { resolveTrainConfig, type TrainConfig } from './config.js';
import { GreedyTrainer, importTrainerState } from './greedy-trainer.js';
import { imageTrainingData } from './image-training.js';
import { loadCheckpoint } from './checkpoint.js';
import { runTraining, type TrainCallbacks, type TrainResult } from './run-training.js';

export interface ImageTrainJob {
  dataset: ImageDataset;
  /** Channels per module (GIM.md: 16/32/64; 8/16/32 for a fast run) and strides (1/2/2). */
  channels?: number[];
  strides?: number[];
  adapter?: Partial<Omit<ImageAdapterConfig, 'kind'>>;
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

export interface ImageTrainOutcome {
  stack: EncoderStack;
  result: TrainResult;
  /** Ready for `StackStore.publish`. */
  draft: StackDraft;
}

/** Items read to estimate the normalisation mean and std. */
const STATS_ITEMS = 2048;

/**
 * Trains (or resumes, or retrains from module k) an image encoder stack on a dataset and returns
 * it with a manifest draft. Publishing is the caller's: this function writes only checkpoints.
 */
export async function trainImageStack(job: ImageTrainJob): Promise<ImageTrainOutcome> {
  const log = job.callbacks?.onLog ?? (() => undefined);
  const info = job.dataset.info;
  const checkpoint =
    job.resume && job.checkpointDir ? await loadCheckpoint(job.checkpointDir) : null;
  let stack: EncoderStack;
  let config: TrainConfig;
  if (checkpoint) {
    config = checkpoint.state.config;
    const fingerprint = await job.dataset.fingerprint();
    if (fingerprint !== checkpoint.state.data.fingerprint)
      throw new GimError(
        'conflict',
        `the checkpoint in ${job.checkpointDir} was made on other data`,
      );
    const { adapter, modules } = checkpoint.state;
    if (adapter.kind !== 'image' || modules.some((m) => m.kind !== 'vision-conv'))
      throw new GimError('conflict', `the checkpoint in ${job.checkpointDir} is not an image run`);
    stack = await EncoderStack.fromArtifacts(
      adapter,
      modules as VisionModuleConfig[],
      checkpoint.modules,
    );
    log(
      `resuming from step ${checkpoint.state.step} (phase ${checkpoint.state.phase + 1}, ${checkpoint.state.epochsDone} epochs done)`,
    );
  } else if (job.parent) {
    config = resolveTrainConfig({ ...job.train, fromModule: job.train?.fromModule ?? 1 });
    const p = job.parent.manifest;
    stack = await EncoderStack.fromManifest(p, job.parent.modules);
    log(`retraining ${p.name}@${p.version} from module ${config.fromModule}`);
  } else {
    config = resolveTrainConfig(job.train ?? {});
    const n = Math.min(info.count, STATS_ITEMS);
    const sample = await job.dataset.read(Int32Array.from({ length: n }, (_, i) => i));
    const stats = channelStats(sample.images, info.channels);
    const adapter = defaultImageAdapter({
      height: info.height,
      width: info.width,
      channels: info.channels,
      ...job.adapter,
      mean: job.adapter?.mean ?? stats.mean,
      std: job.adapter?.std ?? stats.std,
    });
    stack = EncoderStack.create(
      adapter,
      visionModuleConfigs(adapter, job.channels, job.strides),
      config.seed,
    );
  }
  const trainer = new GreedyTrainer(stack, config);
  try {
    if (checkpoint) await importTrainerState(trainer, checkpoint.trainer);
    const fingerprint = await job.dataset.fingerprint();
    const data = { source: info.source, fingerprint, items: info.count };
    const result = await runTraining(trainer, imageTrainingData(job.dataset, stack.adapter), {
      callbacks: job.callbacks,
      checkpointDir: job.checkpointDir,
      resumeFrom: checkpoint?.state,
      signal: job.signal,
      data,
    });
    const { rows, cols } = stack.grid;
    const parentLosses = job.parent?.manifest.modules.map((m) => m.finalLoss) ?? [];
    const modules: ModuleManifest[] = stack.modules.map((m, i) => ({
      index: i + 1,
      dir: `module-${i + 1}`,
      config: m.config,
      outputShape: m.outputShape,
      gridShape: [rows, cols],
      embeddingDim: m.config.channels,
      finalLoss: result.finalLosses[i] ?? parentLosses[i] ?? null,
    }));
    const draft: StackDraft = {
      manifest: {
        modality: 'image',
        adapter: stack.adapter,
        modules,
        training: {
          schedule: config.schedule,
          config: { ...trainer.config, channels: stack.modules.map((m) => m.config.channels) },
          seed: config.seed,
          epochs: config.epochs,
          steps: result.steps,
          durationSeconds: Math.round(result.durationSeconds * 10) / 10,
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
    trainer.dispose();
  }
}
