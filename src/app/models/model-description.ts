import { basename } from 'node:path';
import { POOLINGS, type Pooling, pooledDim } from '../../gim/encoders/pooling.js';
import {
  isUntrained,
  latestProbe,
  type StackManifest,
} from '../../gim/store/manifest.js';
import type { StackSummary } from '../../gim/store/stack-store.js';
import { audioInputSpec, nominalFrameRates } from '../embeddings/audio-geometry.js';

/** A stack as `GET /v1/models` lists it. */
export interface ModelSummary {
  name: string;
  modality: string;
  versions: number[];
  /** label -> version */
  labels: Record<string, number>;
  /** The version a request without `version` or `label` gets: label stable, else latest. */
  default_version: number;
}

export interface LayerDescription {
  layer: number;
  /** Output of the module for one input unit (one patch: [h, w, C]; one training window: [frames, C]). */
  output_shape: number[];
  /** The layout of the units: image patch grid [rows, cols]; audio: []. */
  grid_shape: number[];
  /** Channels C of the layer: the dimension of a mean- or max-pooled embedding (meanstd: 2C). */
  embedding_dim: number;
  /**
   * Embedding dimension per pooling; a pooling the grid is too small for is left out. Audio: mean
   * and max (C), meanstd (2C); `none` gives [frames, C] per clip, frames growing with its duration.
   */
  dims: Partial<Record<Pooling, number>>;
  /** Audio: C, the values of one frame. */
  channels?: number;
  /** Audio: nominal frames per second (sample rate over the strides up to this layer). */
  frame_rate_hz?: number;
}

/** A stack that cannot be served: its labels or default version's files are damaged. */
export interface UnavailableModel {
  name: string;
  /** What is damaged, naming the file relative to the models directory. */
  error: string;
  error_type: 'model_unavailable';
}

/** `GET /v1/models` */
export interface ModelList {
  models: ModelSummary[];
  unavailable: UnavailableModel[];
}

/** One version of a stack, as `GET /v1/models/{name}[/versions/{version}]` describes it. */
export interface VersionDescription extends ModelSummary {
  version: number;
  /** The labels pointing at this version. */
  version_labels: string[];
  /** What one item becomes before the first module. */
  input:
    | { kind: 'image'; height: number; width: number; channels: number }
    | {
        kind: 'audio';
        sample_rate: number;
        window_samples: number;
        normalize: string;
        max_seconds: number;
        min_samples: number;
      };
  created_at: string;
  parent: { version: number; from_module: number } | null;
  /** Published with its initial weights (`gim train --epochs 0`): a random-init baseline. */
  untrained: boolean;
  /** The newest probe recorded in the manifest (`gim probe --record`), or null. */
  probe: ProbeDescription | null;
  layers: LayerDescription[];
}

/** A recorded linear-probe sweep: how good each layer's embeddings are on a labelled set. */
export interface ProbeDescription {
  at: string;
  /** The labelled sets probed: a dataset name, or the last part of a path (no server paths). */
  data: string;
  test_data: string | null;
  best: { layer: number; pooling: string; test_accuracy: number };
  rows: { layer: number; pooling: string; dim: number; test_accuracy: number }[];
}

export function describeSummary(
  summary: StackSummary,
  defaultVersion: number,
  modality: string,
): ModelSummary {
  return {
    name: summary.name,
    modality,
    versions: summary.versions,
    labels: summary.labels,
    default_version: defaultVersion,
  };
}

export function describeVersion(summary: ModelSummary, manifest: StackManifest): VersionDescription {
  return {
    ...summary,
    modality: manifest.modality,
    version: manifest.version,
    version_labels: Object.entries(summary.labels)
      .filter(([, version]) => version === manifest.version)
      .map(([label]) => label),
    input: describeInput(manifest),
    created_at: manifest.createdAt,
    parent: manifest.parent
      ? { version: manifest.parent.version, from_module: manifest.parent.fromModule }
      : null,
    untrained: isUntrained(manifest),
    probe: describeProbe(manifest),
    layers: manifest.modality === 'audio' ? audioLayers(manifest) : imageLayers(manifest),
  };
}

function describeProbe(manifest: StackManifest): ProbeDescription | null {
  const probe = latestProbe(manifest);
  if (probe === null) return null;
  const { score } = probe;
  return {
    at: probe.at,
    data: datasetName(probe.data),
    test_data: probe.testData === null ? null : datasetName(probe.testData),
    best: { ...score.best, test_accuracy: score.accuracy },
    rows: score.rows.map(({ testAccuracy, ...r }) => ({ ...r, test_accuracy: testAccuracy })),
  };
}

/** A dataset spec without the server's directories: a named dataset, or a path's last part. */
function datasetName(spec: string): string {
  return spec.includes('/') ? basename(spec.replace(/\/+$/, '')) : spec;
}

function describeInput(manifest: StackManifest): VersionDescription['input'] {
  const { adapter } = manifest;
  if (adapter.kind === 'image') {
    return {
      kind: 'image',
      height: adapter.height,
      width: adapter.width,
      channels: adapter.channels,
    };
  }
  const spec = audioInputSpec(manifest);
  return {
    kind: 'audio',
    sample_rate: spec.sampleRate,
    window_samples: spec.windowSamples,
    normalize: spec.normalize,
    max_seconds: spec.maxSeconds,
    min_samples: spec.minSamples,
  };
}

function imageLayers(manifest: StackManifest): LayerDescription[] {
  return manifest.modules.map((m) => {
    const [rows = 1, cols = 1] = m.gridShape;
    const dims: Partial<Record<Pooling, number>> = {};
    for (const pooling of POOLINGS) {
      const dim = pooledDim(pooling, rows, cols, m.embeddingDim);
      if (dim > 0) dims[pooling] = dim;
    }
    return {
      layer: m.index,
      output_shape: m.outputShape,
      grid_shape: m.gridShape,
      embedding_dim: m.embeddingDim,
      dims,
    };
  });
}

function audioLayers(manifest: StackManifest): LayerDescription[] {
  const rates = nominalFrameRates(manifest);
  return manifest.modules.map((m, i) => ({
    layer: m.index,
    output_shape: m.outputShape,
    grid_shape: m.gridShape,
    embedding_dim: m.embeddingDim,
    dims: { mean: m.embeddingDim, max: m.embeddingDim, meanstd: 2 * m.embeddingDim },
    channels: m.embeddingDim,
    frame_rate_hz: rates[i] as number,
  }));
}
