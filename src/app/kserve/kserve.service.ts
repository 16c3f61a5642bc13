import { Inject, Injectable } from '@nestjs/common';
import { GimError } from '../../gim/errors.js';
import type { StackManifest } from '../../gim/store/manifest.js';
import { StackStore } from '../../gim/store/stack-store.js';
import { APP_CONFIG, type AppConfig } from '../config.js';
import { resolveLayers } from '../embeddings/embedding-options.js';
import { EmbeddingsService } from '../embeddings/embeddings.service.js';
import { decoderFor } from '../embeddings/input-decoders.js';
import { HealthService } from '../health/health.service.js';
import type { InFlightRequest } from '../http/in-flight.decorator.js';
import { InferenceService } from '../inference/inference.service.js';
import { INPUT_NAME, outputName, parseInferRequest } from './infer-request.js';

export interface TensorMetadata {
  name: string;
  datatype: 'FP32';
  shape: number[];
}

export interface ModelMetadata {
  name: string;
  versions: string[];
  platform: 'gim-serve';
  inputs: TensorMetadata[];
  outputs: TensorMetadata[];
}

export interface InferOutput extends TensorMetadata {
  data: number[];
  parameters: {
    embedding_space_id: string;
    pooling: string;
    normalize: boolean;
    /** Audio stacks: frames per second of this layer for the tensor's length. */
    frame_rate_hz?: number;
  };
}

export interface InferResponse {
  model_name: string;
  model_version: string;
  id?: string;
  outputs: InferOutput[];
}

/** The KServe Open Inference Protocol (v2) over the same stacks and Batchers as the v1 API. */
@Injectable()
export class KserveService {
  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly store: StackStore,
    private readonly health: HealthService,
    private readonly inference: InferenceService,
    private readonly embeddings: EmbeddingsService,
  ) {}

  serverReady(): { ready: true } {
    this.health.ready(); // throws the 503 while not ready
    return { ready: true };
  }

  async metadata(name: string, version?: string): Promise<ModelMetadata> {
    const manifest = await this.store.loadManifest(ref(name, version));
    const versions = await this.store.listVersions(name);
    const { itemShape } = decoderFor(manifest).tensorInput(manifest);
    return {
      name,
      versions: versions.map(String),
      platform: 'gim-serve',
      inputs: [{ name: INPUT_NAME, datatype: 'FP32', shape: [-1, ...itemShape] }],
      outputs: manifest.modules.map((m) => ({
        name: outputName(m.index),
        datatype: 'FP32',
        shape: [-1, m.embeddingDim],
      })),
    };
  }

  /** 200 once the version is loaded and warmed up in the worker; 503 before. */
  async modelReady(name: string, version?: string): Promise<{ name: string; ready: true }> {
    const resolved = await this.store.resolve(ref(name, version));
    if ((await this.inference.loaded(resolved)) === undefined) {
      // A version whose files are damaged will never load: say so (model_unavailable).
      await this.store.check(`${resolved.name}@${resolved.version}`);
      throw new GimError(
        'backend_unavailable',
        `${resolved.name}@${resolved.version} is not loaded yet (the first request loads it)`,
      );
    }
    return { name, ready: true };
  }

  async infer(
    name: string,
    version: string | undefined,
    body: unknown,
    inFlight: InFlightRequest,
  ): Promise<InferResponse> {
    const manifest: StackManifest = await this.store.loadManifest(ref(name, version));
    const decoder = decoderFor(manifest);
    const request = parseInferRequest(body, decoder.tensorInput(manifest), this.config.maxItems);
    const { options } = request;
    const model = await this.inference.model({ name: manifest.name, version: manifest.version });
    const layers = this.embeddings.checkLayers(
      model,
      resolveLayers(options.layers, manifest.modules.length),
      options.pooling,
    );
    // Audio: the length limits of decoded uploads, then the adapter's normalisation.
    const items = request.items.map((values) => decoder.prepare(values, manifest));
    const results = await this.embeddings.embedItems(
      model,
      items,
      layers,
      options.pooling,
      options.normalize,
      inFlight,
    );
    const n = items.length;
    return {
      model_name: model.name,
      model_version: String(model.version),
      ...(request.id !== undefined ? { id: request.id } : {}),
      outputs: results.map((r) => {
        const size = r.vectors[0]?.length ?? 0;
        const data = new Array<number>(n * size);
        r.vectors.forEach((v, i) => v.forEach((x, j) => (data[i * size + j] = x)));
        // Every item of one tensor has the same length, hence the same frames.
        const frames = r.frames?.[0];
        const rate = r.frameRateHz?.[0];
        return {
          name: outputName(r.layer),
          datatype: 'FP32',
          shape:
            frames !== undefined && options.pooling === 'none'
              ? [n, frames, r.dim]
              : [n, ...r.shape],
          data,
          parameters: {
            embedding_space_id: r.embeddingSpaceId,
            pooling: options.pooling,
            normalize: options.normalize,
            ...(rate !== undefined ? { frame_rate_hz: rate } : {}),
          },
        };
      }),
    };
  }
}

function ref(name: string, version?: string): string {
  return version === undefined ? name : `${name}@${version}`;
}
