import { setMaxListeners } from 'node:events';
import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { declaredSeconds } from '../../gim/data/decode-audio.js';
import {
  type Pooling,
  TIME_POOLINGS,
  l2Normalize,
  poolGrid,
  pooledDim,
} from '../../gim/encoders/pooling.js';
import { GimError, isGimError } from '../../gim/errors.js';
import { embeddingSpaceId as spaceId } from '../../gim/store/embedding-space.js';
import { APP_CONFIG, type AppConfig } from '../config.js';
import type { InFlightRequest } from '../http/in-flight.decorator.js';
import type { ItemGrid } from '../inference/embedding-batch.js';
import { InferenceService, type LoadedModel } from '../inference/inference.service.js';
import { AudioDecodePool } from './audio-decode-pool.js';
import { parseEmbedOptions, resolveLayers } from './embedding-options.js';
import type { EncodedInputs } from './embedding-inputs.js';
import { decodeItems, decoderFor, whatItTakes } from './input-decoders.js';

/** One layer's embeddings of every item of a request. */
export interface LayerEmbeddings {
  layer: number;
  /** Values per vector: per item when pooled; per frame for an audio stack's pooling `none`. */
  dim: number;
  /**
   * Per item: [D] pooled, [rows, cols, C] for an image stack's pooling `none`, [-1, C] for an
   * audio stack's (the frames differ by item: see `frames`).
   */
  shape: number[];
  embeddingSpaceId: string;
  /** One flat vector per item, in item order ([frames, C] row-major for audio `none`). */
  vectors: Float32Array[];
  /** Audio stacks: per item, its frames at this layer and their rate in Hz. */
  frames?: number[];
  frameRateHz?: number[];
}

export interface LayerEmbeddingsBody {
  layer: number;
  dim: number;
  shape: number[];
  embedding_space_id: string;
  /** Audio only: per item. */
  frames?: number[];
  frame_rate_hz?: number[];
  /** Audio `none` only: per item [frames, C]. */
  shapes?: number[][];
  /** Per item a vector; audio `none`: per item [frames][C]. */
  embeddings: number[][] | number[][][];
}

export interface EmbeddingsResponse {
  model: string;
  version: number;
  pooling: Pooling;
  normalize: boolean;
  items: number;
  results: LayerEmbeddingsBody[];
}

/**
 * The embedding pipeline shared by the v1 API and the KServe v2 protocol, for image and audio
 * stacks alike: resolve the stack, decode items with the decoder of its modality (sharp on
 * libuv's pool, small PNGs inline, audio in AudioDecodePool's threads), queue each item on the
 * Batcher of its (model, version),
 * pool and normalise each item's grids (audio: frame sequences) on the main thread.
 */
@Injectable()
export class EmbeddingsService implements OnApplicationShutdown {
  /** Audio clips are decoded off the HTTP thread. */
  readonly audioDecoding: AudioDecodePool;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly inference: InferenceService,
  ) {
    this.audioDecoding = new AudioDecodePool(config.audioDecodeThreads);
  }

  // After the HTTP server has closed and its in-flight requests are answered: an audio request
  // still decoding when SIGTERM came must finish (onModuleDestroy runs before that).
  async onApplicationShutdown(): Promise<void> {
    await this.audioDecoding.close();
  }

  /** `POST /v1/models/{name}/embeddings` */
  async embedEncoded(
    name: string,
    inputs: EncodedInputs,
    query: Record<string, unknown>,
    request: InFlightRequest,
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
    const decoded = await this.decodeInputs(model, inputs, request);
    const results = await this.embedItems(
      model,
      decoded,
      layers,
      options.pooling,
      options.normalize,
      request,
    );
    return {
      model: model.name,
      version: model.version,
      pooling: options.pooling,
      normalize: options.normalize,
      items: decoded.length,
      results: results.map((r) => layerBody(r, options.pooling)),
    };
  }

  /**
   * The model inputs of a request's encoded items, decoded on the main thread by the decoder of
   * the stack's modality: a raw body of another modality's media type is a 415, too many items a
   * 413, more audio than MAX_AUDIO_SECONDS_PER_REQUEST by the WAV and FLAC headers a 413, an
   * undecodable item a 422 naming it. Audio decoding stops when the client goes away or the
   * request's deadline passes (504). Shared by every route that takes encoded items.
   */
  async decodeInputs(
    model: LoadedModel,
    inputs: EncodedInputs,
    request?: InFlightRequest,
  ): Promise<Float32Array[]> {
    const decoder = decoderFor(model.manifest);
    if (inputs.mediaType !== undefined && !decoder.mediaTypes.includes(inputs.mediaType)) {
      throw new GimError(
        'unsupported_media',
        `Content-Type ${inputs.mediaType}: ${whatItTakes(decoder, model.manifest)} ` +
          `(${decoder.mediaTypes.join(', ')})`,
      );
    }
    if (inputs.items.length > this.config.maxItems) {
      throw new GimError(
        'too_large',
        `${inputs.items.length} items: at most ${this.config.maxItems} per request (MAX_ITEMS)`,
      );
    }
    const { adapter } = model.manifest;
    if (adapter.kind === 'audio') {
      // Before decoding: what the headers declare (MP3 and Ogg are counted once decoded). A clip
      // over the stack's own max_seconds is left to decoding, whose 413 names that clip.
      const declared = inputs.items.map((item) => declaredSeconds(item) ?? 0);
      if (declared.every((seconds) => seconds <= adapter.maxSeconds)) {
        const seconds = declared.reduce((sum, s) => sum + s, 0);
        this.checkAudioSeconds(seconds, 'declared by the WAV and FLAC headers');
      }
    }
    const stop = request ? this.untilAnswered(request) : undefined;
    try {
      return await decodeItems(decoder, inputs.items, model.manifest, {
        maxInputPixels: this.config.maxInputPixels,
        decodeAudio: (bytes, spec) => this.audioDecoding.decode(bytes, spec, stop?.signal),
      });
    } finally {
      stop?.clear();
    }
  }

  /** 413 when a request's clips hold more audio than MAX_AUDIO_SECONDS_PER_REQUEST. */
  private checkAudioSeconds(seconds: number, how: string): void {
    const limit = this.config.maxAudioSecondsPerRequest;
    if (seconds <= limit) return;
    throw new GimError(
      'too_large',
      `the request holds ${seconds.toFixed(1)} s of audio (${how}): at most ${limit} s per ` +
        'request (MAX_AUDIO_SECONDS_PER_REQUEST), so that it is answered within ' +
        `REQUEST_TIMEOUT_MS (${this.config.requestTimeoutMs} ms); send the clips in several ` +
        'requests, or raise both settings together',
      { details: { seconds, limit } },
    );
  }

  /**
   * A signal that aborts when the client goes away or the request's deadline passes (with a
   * timeout, 504), so that nothing is decoded for a request already answered; `clear` frees its
   * timer once decoding is over.
   */
  private untilAnswered(request: InFlightRequest): { signal: AbortSignal; clear(): void } {
    const timeoutMs = this.config.requestTimeoutMs;
    const expired = new AbortController();
    const timer = setTimeout(
      () =>
        expired.abort(
          new GimError('timeout', `timed out after ${timeoutMs} ms (decoding)`, {
            details: { timeoutMs, phase: 'decoding' },
          }),
        ),
      Math.max(0, this.deadlineOf(request) - performance.now()),
    );
    const signal = AbortSignal.any([request.signal, expired.signal]);
    setMaxListeners(0, signal); // one listener per clip of the request
    return { signal, clear: () => clearTimeout(timer) };
  }

  /** When the request's answer is due: its arrival + REQUEST_TIMEOUT_MS (performance.now()). */
  private deadlineOf(request: InFlightRequest): number {
    return request.arrivedAt + this.config.requestTimeoutMs;
  }

  /** A stack version loaded in the worker: `selector` is a version, a label, or the default. */
  async model(name: string, selector?: string): Promise<LoadedModel> {
    return this.inference.modelFor(selector === undefined ? name : `${name}@${selector}`);
  }

  /** Checks that `pooling` applies to every layer (image grid, or audio frames); returns them. */
  checkLayers(model: LoadedModel, layers: number[], pooling: Pooling): number[] {
    if (model.manifest.modality === 'audio') {
      if (!AUDIO_POOLINGS.includes(pooling)) {
        throw new GimError(
          'invalid_argument',
          `pooling ${pooling} does not apply to audio: ${model.name} pools its frames over time ` +
            `with ${AUDIO_POOLINGS.join(', ')} (none: the frame sequence)`,
        );
      }
      return layers;
    }
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
   * Embeds model inputs (each [h, w, c] pixels for an image stack, [T] normalised samples for an
   * audio stack) through the model's Batcher, due by the request's deadline. Refused before its
   * items queue: 413 when it holds more than MAX_AUDIO_SECONDS_PER_REQUEST of audio, 429 when
   * the work queued ahead would make it late. One failing item cancels the others still queued,
   * and so does the client going away.
   */
  async embedItems(
    model: LoadedModel,
    items: Float32Array[],
    layers: number[],
    pooling: Pooling,
    normalize: boolean,
    request: InFlightRequest,
  ): Promise<LayerEmbeddings[]> {
    const lengths = items.map((input) => input.length);
    const deadline = this.deadlineOf(request);
    const { adapter } = model.manifest;
    if (adapter.kind === 'audio') {
      const seconds = lengths.reduce((sum, n) => sum + n, 0) / adapter.sampleRate;
      this.checkAudioSeconds(seconds, 'decoded');
    }
    try {
      model.batcher.admit(
        items.map((input) => model.itemCost(input)),
        deadline,
      );
    } catch (error) {
      throw explainAdmission(error);
    }
    // One failing item cancels its siblings still queued (a single item has none).
    const failed = items.length > 1 ? new AbortController() : undefined;
    const either = failed ? AbortSignal.any([request.signal, failed.signal]) : request.signal;
    let grids;
    try {
      grids = await Promise.all(
        items.map((input) => model.batcher.submit({ input, layers }, { signal: either, deadline })),
      );
    } catch (error) {
      failed?.abort(error);
      throw error;
    }
    return layers.map((layer) => {
      const own = grids.map((g) => {
        const grid = g.get(layer);
        if (grid === undefined) {
          throw new GimError('backend_unavailable', `no grid for layer ${layer} came back`);
        }
        return grid;
      });
      const digest = model.spaceDigests[layer - 1];
      if (digest === undefined) {
        throw new GimError(
          'backend_unavailable',
          `the worker gave no space digest for layer ${layer}`,
        );
      }
      const embeddingSpaceId = spaceId(digest, pooling);
      if (adapter.kind === 'audio') {
        const channels = own[0]?.shape.channels ?? 0;
        const frames = own.map((grid) => grid.shape.cols);
        const dim = pooling === 'none' ? channels : pooledDim(pooling, 1, 1, channels);
        return {
          layer,
          dim,
          shape: pooling === 'none' ? [-1, channels] : [dim],
          embeddingSpaceId,
          vectors: own.map((grid) => poolFrames(grid, pooling, normalize)),
          frames,
          frameRateHz: frames.map((f, i) => (adapter.sampleRate * f) / (lengths[i] as number)),
        };
      }
      const vectors = own.map((grid) => {
        const pooled = poolGrid(grid.data, grid.shape, pooling); // [1, D]
        return normalize ? l2Normalize(pooled, 1, pooled.length) : pooled;
      });
      const first = own[0]?.shape;
      const dim = vectors[0]?.length ?? 0;
      return {
        layer,
        dim,
        shape: pooling === 'none' && first ? [first.rows, first.cols, first.channels] : [dim],
        embeddingSpaceId,
        vectors,
      };
    });
  }
}

/** A refusal of `Batcher.admit`, saying when to retry. */
function explainAdmission(error: unknown): unknown {
  if (!isGimError(error) || error.code !== 'overloaded') return error;
  const hint = `retry after ${String(error.details.retryAfterSeconds)} s`;
  return new GimError(error.code, `${error.message} (${hint})`, {
    cause: error,
    details: { ...error.details },
  });
}

/** The poolings of an audio layer's frames: over time, or none (the frame sequence). */
export const AUDIO_POOLINGS: readonly Pooling[] = [...TIME_POOLINGS, 'none'];

/**
 * An audio item's frames [frames, C] -> [C] pooled over time, or the frames themselves for
 * `none`, whose `normalize` scales each frame (as `gim embed` does).
 */
function poolFrames(grid: ItemGrid, pooling: Pooling, normalize: boolean): Float32Array {
  const { cols: frames, channels } = grid.shape;
  if (pooling === 'none') {
    const values = grid.data.slice(); // [frames, C]
    return normalize ? l2Normalize(values, frames, channels) : values;
  }
  const pooled = poolGrid(grid.data, { n: 1, rows: 1, cols: frames, channels }, pooling); // [1, D]
  return normalize ? l2Normalize(pooled, 1, pooled.length) : pooled;
}

/** The JSON of one layer's results; audio `none` nests each item's frames as [frames][C]. */
function layerBody(r: LayerEmbeddings, pooling: Pooling): LayerEmbeddingsBody {
  const head = {
    layer: r.layer,
    dim: r.dim,
    shape: r.shape,
    embedding_space_id: r.embeddingSpaceId,
  };
  const { frames, frameRateHz } = r;
  if (frames === undefined || frameRateHz === undefined) {
    return { ...head, embeddings: r.vectors.map((v) => Array.from(v)) };
  }
  const audio = { ...head, frames, frame_rate_hz: frameRateHz };
  if (pooling !== 'none') return { ...audio, embeddings: r.vectors.map((v) => Array.from(v)) };
  return {
    ...audio,
    shapes: frames.map((f) => [f, r.dim]),
    embeddings: r.vectors.map((v, i) =>
      Array.from({ length: frames[i] as number }, (_, t) =>
        Array.from(v.subarray(t * r.dim, (t + 1) * r.dim)),
      ),
    ),
  };
}
