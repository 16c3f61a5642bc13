import { GimError } from '../errors.js';
import type { ImageDataset } from '../data/dataset.js';
import { channelStats, defaultImageAdapter, type ImageAdapterConfig } from '../modality/image.js';
import { EncoderStack, defaultStrides, visionModuleConfigs } from '../encoders/encoder-stack.js';
import { residualKernel, type VisionModuleConfig } from '../encoders/vision-module.js';
import { imageTrainingData } from './image-training.js';
import {
  trainStack,
  type StackRecipe,
  type TrainJobOptions,
  type TrainOutcome,
} from './train-stack.js';

export interface ImageTrainJob extends TrainJobOptions {
  dataset: ImageDataset;
  /**
   * Channels per module (GIM.md: 16/32/64; 8/16/32 for a fast run) and strides (default 1, then
   * 2; with a parent, its own for its modules).
   */
  channels?: number[];
  strides?: number[];
  /** Residual conv kernel per module, 1 or 3 (default 1; with a parent, its own for its modules). */
  residualKernels?: number[];
  adapter?: Partial<Omit<ImageAdapterConfig, 'kind'>>;
}

export type ImageTrainOutcome = TrainOutcome<EncoderStack>;

/** Items read to estimate the normalisation mean and std. */
const STATS_ITEMS = 2048;

/** The image side of a training job: adapter from the data, patch-grid modules. */
export function imageRecipe(job: ImageTrainJob): StackRecipe<EncoderStack> {
  const { dataset } = job;
  const info = dataset.info;
  return {
    modality: 'image',
    async create(seed) {
      const n = Math.min(info.count, STATS_ITEMS);
      const sample = await dataset.read(Int32Array.from({ length: n }, (_, i) => i));
      const stats = channelStats(sample.images, info.channels);
      const adapter = defaultImageAdapter({
        height: info.height,
        width: info.width,
        channels: info.channels,
        ...job.adapter,
        mean: job.adapter?.mean ?? stats.mean,
        std: job.adapter?.std ?? stats.std,
      });
      return EncoderStack.create(
        adapter,
        visionModuleConfigs(adapter, job.channels, job.strides, job.residualKernels),
        seed,
      );
    },
    restore(adapter, configs, artifacts) {
      if (adapter.kind !== 'image' || configs.some((c) => c.kind !== 'vision-conv'))
        throw new GimError('conflict', 'the saved weights are not an image stack');
      return EncoderStack.fromArtifacts(adapter, configs as VisionModuleConfig[], artifacts);
    },
    grow(parent, seed) {
      if (!job.channels) return parent;
      // The parent's own strides and residual kernels for its modules unless given: only new
      // modules take the defaults.
      const n = job.channels.length;
      const own = parent.moduleConfigs;
      const ownOr = (of: (c: VisionModuleConfig) => number, defaults: number[]) =>
        defaults.map((d, i) => (own[i] ? of(own[i]) : d));
      const strides = job.strides ?? ownOr((c) => c.stride, defaultStrides(n));
      const residual = job.residualKernels ?? ownOr(residualKernel, Array<number>(n).fill(1));
      return parent.grow(
        visionModuleConfigs(parent.adapter, job.channels, strides, residual),
        seed,
      );
    },
    data: (stack) => imageTrainingData(dataset, stack.adapter),
    describeData: async () => ({
      source: info.source,
      fingerprint: await dataset.fingerprint(),
      items: info.count,
    }),
  };
}

/**
 * Trains (or resumes, or retrains from module k) an image encoder stack on a dataset and returns
 * it with a manifest draft. Publishing is the caller's: this function writes only checkpoints.
 */
export function trainImageStack(job: ImageTrainJob): Promise<ImageTrainOutcome> {
  return trainStack(imageRecipe(job), job);
}
