import { Inject, Injectable } from '@nestjs/common';
import { type Pooling, l2Normalize, poolGrid, pooledDim } from '../../gim/encoders/pooling.js';
import { GimError } from '../../gim/errors.js';
import { embeddingSpaceId } from '../../gim/store/embedding-space.js';
import { StackStore } from '../../gim/store/stack-store.js';
import { APP_CONFIG, type AppConfig } from '../config.js';
import { InferenceService, type LoadedModel } from '../inference/inference.service.js';
import { parseEmbedOptions, resolveLayers } from './embedding-options.js';
import type { EncodedInputs } from './embedding-inputs.js';
import { decodeItems, decoderFor } from './input-decoders.js';

/** One layer's embeddings of every item of a request. */
export interface LayerEmbeddings {
  layer: number;
  dim: number;
  /** Per item: [D] pooled, [rows, cols, C] for pooling `none`. */
  shape: number[];
  embeddingSpaceId: string;
  /** One vector of `dim` values per item, in item order. */
  vectors: Float32Array[];
}

export interface EmbeddingsResponse {
  model: string;
  version: number;
  pooling: Pooling;
  normalize: boolean;
  items: number;
  results: {
    layer: number;
    dim: number;
    shape: number[];
    embedding_space_id: string;
    embeddings: number[][];
  }[];
}

/**
 * The embedding pipeline shared by the v1 API and the KServe v2 protocol: resolve the stack, decode
 * items on the main thread (sharp runs on libuv's pool), queue each item on the Batcher of its
 * (model, version), pool and normalise each item's grids on the main thread.
 */
@Injectable()
export class EmbeddingsService {
  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly store: StackStore,
    private readonly inference: InferenceService,
  ) {}

  /** `POST /v1/models/{name}/embeddings` */
  async embedEncoded(
    name: string,
    inputs: EncodedInputs,
    query: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<EmbeddingsResponse> {
    const options = parseEmbedOptions([
      { where: 'query string', values: query },
      { where: 'body', values: inputs.bodyOptions },
    ]);
    const model = await this.model(name, options.selector);
    const layers = this.checkLayers(
      model,
      resolveLayers(options.layers, model.manifest.modules.length),
      options.pooling,
    );
    const decoder = decoderFor(model.manifest);
    if (inputs.mediaType !== undefined && !decoder.mediaTypes.includes(inputs.mediaType)) {
      throw new GimError(
        'unsupported_media',
        `${model.name} is a ${model.manifest.modality} stack: send ${decoder.mediaTypes.join(', ')}`,
      );
    }
    if (inputs.items.length > this.config.maxItems) {
      throw new GimError(
        'too_large',
        `${inputs.items.length} items: at most ${this.config.maxItems} per request (MAX_ITEMS)`,
      );
    }
    const pixels = await decodeItems(decoder, inputs.items, model.manifest, {
      maxInputPixels: this.config.maxInputPixels,
    });
    const results = await this.embedPixels(
      model,
      pixels,
      layers,
      options.pooling,
      options.normalize,
      signal,
    );
    return {
      model: model.name,
      version: model.version,
      pooling: options.pooling,
      normalize: options.normalize,
      items: pixels.length,
      results: results.map((r) => ({
        layer: r.layer,
        dim: r.dim,
        shape: r.shape,
        embedding_space_id: r.embeddingSpaceId,
        embeddings: r.vectors.map((v) => Array.from(v)),
      })),
    };
  }

  /** A stack version loaded in the worker: `selector` is a version, a label, or the default. */
  async model(name: string, selector?: string): Promise<LoadedModel> {
    const ref = await this.store.resolve(selector === undefined ? name : `${name}@${selector}`);
    return this.inference.model(ref);
  }

  /** Checks that `pooling` applies to every layer's grid; returns the layers. */
  checkLayers(model: LoadedModel, layers: number[], pooling: Pooling): number[] {
    for (const layer of layers) {
      const m = model.manifest.modules[layer - 1];
      const [rows = 1, cols = 1] = m?.gridShape ?? [];
      if (m === undefined || pooledDim(pooling, rows, cols, m.embeddingDim) === 0) {
        throw new GimError(
          'invalid_argument',
          `pooling ${pooling} does not apply to layer ${layer}: its grid is ${rows}x${cols}`,
        );
      }
    }
    return layers;
  }

  /**
   * Embeds decoded items (each [h, w, c] for an image stack) through the model's Batcher. One
   * failing item cancels the others still queued, and so does the client going away (`signal`).
   */
  async embedPixels(
    model: LoadedModel,
    items: Float32Array[],
    layers: number[],
    pooling: Pooling,
    normalize: boolean,
    signal: AbortSignal,
  ): Promise<LayerEmbeddings[]> {
    const failed = new AbortController();
    const either = AbortSignal.any([signal, failed.signal]);
    let grids;
    try {
      grids = await Promise.all(
        items.map((pixels) => model.batcher.submit({ pixels, layers }, { signal: either })),
      );
    } catch (error) {
      failed.abort(error);
      throw error;
    }
    return layers.map((layer) => {
      const vectors = grids.map((own) => {
        const grid = own.get(layer);
        if (grid === undefined) {
          throw new GimError('backend_unavailable', `no grid for layer ${layer} came back`);
        }
        const pooled = poolGrid(grid.data, grid.shape, pooling); // [1, D]
        return normalize ? l2Normalize(pooled, 1, pooled.length) : pooled;
      });
      const first = grids[0]?.get(layer)?.shape;
      const dim = vectors[0]?.length ?? 0;
      const digest = model.spaceDigests[layer - 1];
      if (digest === undefined) {
        throw new GimError(
          'backend_unavailable',
          `the worker gave no space digest for layer ${layer}`,
        );
      }
      return {
        layer,
        dim,
        shape: pooling === 'none' && first ? [first.rows, first.cols, first.channels] : [dim],
        embeddingSpaceId: embeddingSpaceId(digest, pooling),
        vectors,
      };
    });
  }
}
