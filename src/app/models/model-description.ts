import { POOLINGS, type Pooling, pooledDim } from '../../gim/encoders/pooling.js';
import type { StackManifest } from '../../gim/store/manifest.js';
import type { StackSummary } from '../../gim/store/stack-store.js';

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
  /** Output of the module for one input unit (one patch: [h, w, C]). */
  output_shape: number[];
  /** The layout of the units: image patch grid [rows, cols]. */
  grid_shape: number[];
  /** Channels C of the layer: the dimension of a mean- or max-pooled embedding. */
  embedding_dim: number;
  /** Embedding dimension per pooling; a pooling the grid is too small for is left out. */
  dims: Partial<Record<Pooling, number>>;
}

/** One version of a stack, as `GET /v1/models/{name}[/versions/{version}]` describes it. */
export interface VersionDescription extends ModelSummary {
  version: number;
  /** The labels pointing at this version. */
  version_labels: string[];
  /** What one item becomes before the first module. */
  input:
    | { kind: 'image'; height: number; width: number; channels: number }
    | { kind: 'audio'; sample_rate: number; window_samples: number; max_seconds: number };
  created_at: string;
  parent: { version: number; from_module: number } | null;
  layers: LayerDescription[];
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
  const { adapter } = manifest;
  return {
    ...summary,
    modality: manifest.modality,
    version: manifest.version,
    version_labels: Object.entries(summary.labels)
      .filter(([, version]) => version === manifest.version)
      .map(([label]) => label),
    input:
      adapter.kind === 'image'
        ? {
            kind: 'image',
            height: adapter.height,
            width: adapter.width,
            channels: adapter.channels,
          }
        : {
            kind: 'audio',
            sample_rate: adapter.sampleRate,
            window_samples: adapter.windowSamples,
            max_seconds: adapter.maxSeconds,
          },
    created_at: manifest.createdAt,
    parent: manifest.parent
      ? { version: manifest.parent.version, from_module: manifest.parent.fromModule }
      : null,
    layers: manifest.modules.map((m) => {
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
    }),
  };
}
