import { GimError } from '../errors.js';
import type { AudioDataset } from '../data/audio-folder.js';
import { defaultAudioAdapter, type AudioAdapterConfig } from '../modality/audio.js';
import { AudioEncoderStack } from '../encoders/audio-stack.js';
import { audioModuleConfigs, type AudioModuleConfig } from '../encoders/audio-modules.js';
import { audioTrainingData } from './audio-training.js';
import {
  trainStack,
  type StackRecipe,
  type TrainJobOptions,
  type TrainOutcome,
} from './train-stack.js';

export interface AudioTrainJob extends TrainJobOptions {
  dataset: AudioDataset;
  /** Utterances to train on (e.g. the train side of a split); default all. */
  subset?: ArrayLike<number>;
  /** Conv channels and GRU units (GIM.md scaled-down: 32 and 32; the paper: 512 and 256). */
  channels?: number;
  gruUnits?: number;
  adapter?: Partial<Omit<AudioAdapterConfig, 'kind'>>;
}

/** The audio side of a training job: raw 16 kHz windows, five strided convs and a GRU. */
export function audioRecipe(job: AudioTrainJob): StackRecipe<AudioEncoderStack> {
  const { dataset } = job;
  return {
    modality: 'audio',
    async create(seed) {
      const adapter = defaultAudioAdapter(job.adapter);
      return AudioEncoderStack.create(
        adapter,
        audioModuleConfigs(job.channels, job.gruUnits),
        seed,
      );
    },
    restore(adapter, configs, artifacts) {
      if (adapter.kind !== 'audio' || configs.some((c) => c.kind === 'vision-conv'))
        throw new GimError('conflict', 'the saved weights are not an audio stack');
      return AudioEncoderStack.fromArtifacts(adapter, configs as AudioModuleConfig[], artifacts);
    },
    data: (stack) => audioTrainingData(dataset, stack.adapter, job.subset),
    describeData: async () => ({
      source: dataset.info.source,
      fingerprint: await dataset.fingerprint(),
      items: job.subset?.length ?? dataset.info.count,
      ...(dataset.info.corpus ? { corpus: dataset.info.corpus } : {}),
    }),
  };
}

/** Trains (or resumes, or retrains from module k) an audio stack; see `trainStack`. */
export function trainAudioStack(job: AudioTrainJob): Promise<TrainOutcome<AudioEncoderStack>> {
  // GIM.md's scaled-down speech defaults: batch 8, 10 negatives.
  return trainStack(audioRecipe(job), {
    ...job,
    train: { negatives: 10, batchSize: 8, ...job.train },
  });
}
