import type { ImageAdapterConfig } from '../modality/image.js';
import type { VisionModuleConfig } from '../encoders/vision-module.js';

/** The format tag written in every manifest; bump it when the layout changes incompatibly. */
export const STACK_FORMAT = 'gim-stack/1';

export type Modality = 'image' | 'audio';
export type AdapterConfig = ImageAdapterConfig;
export type ModuleConfig = VisionModuleConfig;

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
}

export interface DataRecord {
  /** Where the data came from: `fashion-mnist:<dir>`, a folder path, ... */
  source: string;
  /** sha256 over the bytes (or file list and sizes) the training data was read from. */
  fingerprint: string;
  items: number;
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
}
