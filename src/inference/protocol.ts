/**
 * Messages between the API's main thread and the inference worker (node:worker_threads), which
 * owns the tfjs backend and the loaded stacks. Every request carries an `id`; the worker answers
 * each with exactly one response of the same `id`. Input and grid buffers are transferred, not
 * copied.
 */
import type { BackendInfo, BackendName } from '../gim/backend/index.js';
import type { GridShape } from '../gim/encoders/pooling.js';
import type { GimErrorCode } from '../gim/errors.js';
import type { StackManifest } from '../gim/store/manifest.js';

/** Selects the tfjs backend and opens the model store. Sent once, first. */
export interface InitRequest {
  type: 'init';
  modelsDir: string;
  backend?: BackendName;
}

/** Loads (or finds already loaded) a stack: `name`, `name@3` or `name@stable`. */
export interface LoadRequest {
  type: 'load';
  ref: string;
}

/**
 * Embeddings of `n` items of equal size for each of `layers`, in the stack's modality: images
 * [n, h, w, c] in [0, 1] give patch grids; audio clips [n, T] (normalised as the stack's adapter
 * says) give frame sequences.
 */
export interface EmbedRequest {
  type: 'embed';
  name: string;
  version: number;
  /** Transferred: the sender's buffer is detached. */
  input: Float32Array;
  n: number;
  layers: number[];
  /**
   * Ms since the epoch (`performance.timeOrigin + performance.now()`) after which nobody waits
   * for the result: the worker refuses with `timeout` instead of computing it.
   */
  deadline?: number;
}

export interface StatsRequest {
  type: 'stats';
}

export interface UnloadRequest {
  type: 'unload';
  name: string;
  version: number;
}

export type RequestBody = InitRequest | LoadRequest | EmbedRequest | StatsRequest | UnloadRequest;
export type RequestType = RequestBody['type'];
export type InferenceRequest = RequestBody & { id: number };
export type RequestOf<T extends RequestType> = Extract<RequestBody, { type: T }>;

/**
 * One layer's grid [n, rows, cols, C], row-major; `data` is transferred. An audio layer's frames
 * are a grid of one row: rows 1, cols = frames.
 */
export interface LayerGrid {
  layer: number;
  data: Float32Array;
  shape: GridShape;
}

/**
 * What the golden check of a load found: the version's golden embeddings matched on this backend,
 * or it has none this code can check (it loads anyway). A mismatch is no result: the load fails
 * with `golden_mismatch`.
 */
export type GoldenCheck =
  | {
      status: 'ok';
      maxRelError: number;
      tolerance: number;
      /** Backend the golden embeddings were recorded on, and the one that checked them. */
      recordedOn: string;
      checkedOn: string;
      /** Time of the check: the forward pass of the golden inputs and the comparison. */
      ms: number;
    }
  | { status: 'unchecked'; reason: string };

/** What a successful response carries besides `id` and `ok`, by request type. */
export interface ResultOf {
  init: { backend: BackendInfo };
  load: {
    manifest: StackManifest;
    /** Per layer: the embedding-space digest (see `layerDigests`). */
    spaceDigests: string[];
    golden: GoldenCheck;
  };
  embed: {
    grids: LayerGrid[];
    /** Time in the worker: forward pass and read-back, without queueing or messaging. */
    computeMs: number;
  };
  stats: { numTensors: number; numBytes: number };
  unload: { unloaded: boolean };
}

export interface WireError {
  code: GimErrorCode;
  message: string;
}

export type SuccessResponse<T extends RequestType = RequestType> = {
  id: number;
  ok: true;
} & ResultOf[T];
export interface ErrorResponse {
  id: number;
  ok: false;
  error: WireError;
}
export type InferenceResponse<T extends RequestType = RequestType> =
  SuccessResponse<T> | ErrorResponse;

/** A log line of the worker (backend selection, ...), passed on to the client's `log`. */
export interface WorkerLog {
  type: 'log';
  line: string;
}

export type WorkerMessage = InferenceResponse | WorkerLog;
