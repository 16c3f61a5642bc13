import { GimError } from '../errors.js';
import type { ImageAdapterConfig } from '../modality/image.js';
import type { AudioAdapterConfig } from '../modality/audio.js';
import type { VisionModuleConfig } from '../encoders/vision-module.js';
import type { AudioModuleConfig } from '../encoders/audio-modules.js';
import type { GoldenRecord } from '../golden/golden-record.js';

/** The format tag written in every manifest; bump it when the layout changes incompatibly. */
export const STACK_FORMAT = 'gim-stack/1';

export type Modality = 'image' | 'audio';
export type AdapterConfig = ImageAdapterConfig | AudioAdapterConfig;
export type ModuleConfig = VisionModuleConfig | AudioModuleConfig;

/** One module of a published stack: a standard tfjs LayersModel in `<version>/<dir>/`. */
export interface ModuleManifest {
  /** 1-based layer index. */
  index: number;
  /** Directory of the module inside the version directory, e.g. `module-1`. */
  dir: string;
  config: ModuleConfig;
  /** Output shape of one input unit (one patch: [h, w, c]; one audio clip: [frames, c]). */
  outputShape: number[];
  /** Shape of the unit layout (image patch grid [rows, cols]; audio: [] ). */
  gridShape: number[];
  /** Channels of the pooled embedding of this layer. */
  embeddingDim: number;
  /** Mean InfoNCE loss of the module's last training epoch (null if never trained). */
  finalLoss: number | null;
}

export interface TrainingRecord {
  schedule: 'parallel' | 'sequential' | 'end-to-end';
  /** The full training configuration, as resolved with defaults. */
  config: Record<string, unknown>;
  seed: number;
  epochs: number;
  steps: number;
  durationSeconds: number;
  /**
   * True when the version holds its initial weights (`gim train --epochs 0`: the random-init
   * twin of a stack trained with the same settings and seed); epochs and steps are then 0 and
   * every module's finalLoss null. Absent on trained versions.
   */
  untrained?: true;
}

export interface DataRecord {
  /** Where the data came from: `fashion-mnist:<dir>`, a folder path, ... */
  source: string;
  /** sha256 over the bytes (or file list and sizes) the training data was read from. */
  fingerprint: string;
  items: number;
  /** A generated corpus's recipe (audio: `npm run data:speech`), to make the data again. */
  corpus?: {
    generator: string;
    settings: Record<string, unknown>;
    tools: Record<string, string>;
    command: string;
  };
}

export interface StackManifest {
  format: typeof STACK_FORMAT;
  name: string;
  version: number;
  modality: Modality;
  adapter: AdapterConfig;
  modules: ModuleManifest[];
  training: TrainingRecord;
  data: DataRecord;
  /** The tfjs backend the stack was trained on. */
  backend: string;
  /** ISO-8601 creation time. */
  createdAt: string;
  /** The version this one was retrained from, and the first module that was retrained. */
  parent: { version: number; fromModule: number } | null;
  /**
   * Embeddings of fixed generated inputs at every layer, recorded at publish (see golden.ts): a
   * loader compares its own before serving the version. Absent in versions published before.
   */
  golden?: GoldenRecord;
  /**
   * Evaluations run on this version, oldest first: promotion gates (`gim promote`) and recorded
   * probes (`gim probe --record`); the one part of a manifest added after publishing, with
   * golden. Absent when none ran.
   */
  evaluations?: StackEvaluation[];
}

/** A linear probe's score of one stack version on a labelled set. */
export interface ProbeScore {
  version: number;
  /** The best test accuracy over the (layer, pooling) rows. */
  accuracy: number;
  best: { layer: number; pooling: string };
  rows: { layer: number; pooling: string; dim: number; testAccuracy: number }[];
}

/** How a probe sweep was run (`gim probe`'s options, as recorded). */
export interface ProbeSettings {
  layers: string;
  pooling: string | null;
  epochs: number;
  limit: number | null;
  seed: number;
  /** Share held out of `data` when no test set is given (absent in older gate records). */
  testFraction?: number | null;
}

/**
 * A promotion gate's verdict: the candidate's probe accuracy against the label's current
 * target's on the same labelled set and settings, in the same run.
 */
export interface PromotionEvaluation {
  kind: 'promotion-gate';
  at: string;
  by: string;
  label: string;
  /** The dataset specs probed (training and, if given, test). */
  data: string;
  testData: string | null;
  settings: ProbeSettings;
  margin: number;
  candidate: ProbeScore;
  /** The label's target when the gate ran; null when it had none (the gate passes). */
  baseline: ProbeScore | null;
  passed: boolean;
  dryRun: boolean;
}

/** A linear probe's layer sweep of this version, recorded by `gim probe --record`. */
export interface ProbeEvaluation {
  kind: 'probe';
  at: string;
  /** The dataset specs probed (training and, if given, test). */
  data: string;
  testData: string | null;
  settings: ProbeSettings;
  score: ProbeScore;
}

export type StackEvaluation = PromotionEvaluation | ProbeEvaluation;

/**
 * The newest probe of this version recorded in its manifest, or null: a `gim probe --record`
 * sweep, or the probe a promotion gate ran on it as the candidate (the same sweep, same record).
 */
export function latestProbe(m: Pick<StackManifest, 'evaluations'>): ProbeEvaluation | null {
  const probes = (m.evaluations ?? []).map((e): ProbeEvaluation =>
    e.kind === 'probe'
      ? e
      : {
          kind: 'probe',
          at: e.at,
          data: e.data,
          testData: e.testData,
          settings: e.settings,
          score: e.candidate,
        },
  );
  return probes.at(-1) ?? null;
}

/** Whether a version holds its initial, untrained weights (see `TrainingRecord.untrained`). */
export function isUntrained(m: Pick<StackManifest, 'training'>): boolean {
  return m.training.untrained === true;
}

/** A manifest narrowed to one modality. */
export type ManifestOf<A extends AdapterConfig, C extends ModuleConfig> = Omit<
  StackManifest,
  'adapter' | 'modules'
> & {
  adapter: A;
  modules: (Omit<ModuleManifest, 'config'> & { config: C })[];
};
export type ImageStackManifest = ManifestOf<ImageAdapterConfig, VisionModuleConfig>;
export type AudioStackManifest = ManifestOf<AudioAdapterConfig, AudioModuleConfig>;

export function isImageManifest(m: StackManifest): m is StackManifest & ImageStackManifest {
  return m.adapter.kind === 'image' && m.modules.every((x) => x.config.kind === 'vision-conv');
}

export function isAudioManifest(m: StackManifest): m is StackManifest & AudioStackManifest {
  return m.adapter.kind === 'audio' && m.modules.every((x) => x.config.kind !== 'vision-conv');
}

/** The manifest as an image stack's, or a GimError saying what the stack is instead. */
export function imageManifest(m: StackManifest): ImageStackManifest {
  if (!isImageManifest(m))
    throw new GimError(
      'invalid_argument',
      `${m.name}@${m.version} is an ${m.modality} stack; this needs an image stack`,
    );
  return m;
}

export function audioManifest(m: StackManifest): AudioStackManifest {
  if (!isAudioManifest(m))
    throw new GimError(
      'invalid_argument',
      `${m.name}@${m.version} is an ${m.modality} stack; this needs an audio stack`,
    );
  return m;
}
