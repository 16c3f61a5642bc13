/**
 * The inference worker: a node:worker_threads entry that owns the tfjs backend and the loaded
 * encoder stacks, so that model compute never runs on the HTTP event loop. Started by
 * `InferenceClient`; speaks the messages of `protocol.ts`. Every request gets one response; an
 * error in a handler becomes an error response, never a crash of the worker.
 */
import { parentPort, type TransferListItem } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../gim/backend/index.js';
import { EncoderStack, gridShape } from '../gim/encoders/encoder-stack.js';
import { GimError, isGimError } from '../gim/errors.js';
import { layerDigests } from '../gim/store/embedding-space.js';
import type { StackManifest } from '../gim/store/manifest.js';
import { StackStore } from '../gim/store/stack-store.js';
import type {
  ErrorResponse,
  InferenceRequest,
  RequestOf,
  RequestType,
  ResultOf,
  WorkerMessage,
} from './protocol.js';

interface LoadedStack {
  manifest: StackManifest;
  stack: EncoderStack;
  spaceDigests: string[];
}

interface Reply<T extends RequestType> {
  result: ResultOf[T];
  transfer?: TransferListItem[];
}

type Handlers = { [T in RequestType]: (req: RequestOf<T>) => Promise<Reply<T>> };

const port = parentPort;
if (port === null) throw new Error('inference-worker.ts must be started as a worker thread');

let store: StackStore | null = null;
/** By `name@version`; a promise, so that two loads of one version build it once. */
const stacks = new Map<string, Promise<LoadedStack>>();

const log = (line: string): void => post({ type: 'log', line });

const handlers: Handlers = {
  async init({ modelsDir, backend }) {
    const info = await selectBackend({ force: backend, log });
    store = new StackStore(modelsDir);
    return { result: { backend: info } };
  },

  async load({ ref }) {
    const { name, version } = await openStore().resolve(ref);
    const key = `${name}@${version}`;
    let loading = stacks.get(key);
    if (loading === undefined) {
      loading = buildStack(key);
      stacks.set(key, loading);
      // A failed load is not cached: the next load tries again.
      loading.catch(() => stacks.get(key) === loading && stacks.delete(key));
    }
    const { manifest, spaceDigests } = await loading;
    return { result: { manifest, spaceDigests } };
  },

  async embed({ name, version, pixels, n, layers }) {
    const loaded = await stacks.get(`${name}@${version}`)?.catch(() => undefined);
    if (loaded === undefined) {
      throw new GimError('not_found', `stack ${name}@${version} is not loaded in the worker`);
    }
    const { stack } = loaded;
    const { height, width, channels } = stack.adapter;
    if (!Number.isInteger(n) || n < 1) {
      throw new GimError('invalid_argument', `n must be a positive integer, got ${n}`);
    }
    if (!(pixels instanceof Float32Array) || pixels.length !== n * height * width * channels) {
      const got = pixels instanceof Float32Array ? `${pixels.length} values` : 'no Float32Array';
      throw new GimError(
        'invalid_argument',
        `expected ${n} images of ${height}x${width}x${channels} (${n * height * width * channels} values), got ${got}`,
      );
    }
    const started = performance.now();
    const tensors = stack.embed(pixels, n, layers); // layer -> [n, rows, cols, C]
    try {
      const grids = [...new Set(layers)].map((layer) => {
        const t = tensors.get(layer) as tf.Tensor4D;
        // A copy: a backend may hand out its own storage, which must not be detached.
        const data = new Float32Array(t.dataSync() as Float32Array);
        return { layer, data, shape: gridShape(t) };
      });
      const computeMs = performance.now() - started;
      return { result: { grids, computeMs }, transfer: grids.map((g) => g.data.buffer) };
    } finally {
      tf.dispose([...tensors.values()]);
    }
  },

  async stats() {
    const { numTensors, numBytes } = tf.memory();
    return { result: { numTensors, numBytes } };
  },

  async unload({ name, version }) {
    const key = `${name}@${version}`;
    const loading = stacks.get(key);
    if (loading === undefined) return { result: { unloaded: false } };
    stacks.delete(key);
    const loaded = await loading.catch(() => undefined);
    loaded?.stack.dispose();
    return { result: { unloaded: loaded !== undefined } };
  },
};

/** Reads a version, rebuilds its stack and runs it once, so the first request pays no warm-up. */
async function buildStack(key: string): Promise<LoadedStack> {
  const { manifest, modules } = await openStore().load(key);
  const spaceDigests = layerDigests(manifest, modules);
  const stack = await EncoderStack.fromManifest(manifest, modules);
  try {
    const { height, width, channels } = stack.adapter;
    const all = stack.modules.map((_, i) => i + 1);
    tf.dispose([...stack.embed(new Float32Array(height * width * channels), 1, all).values()]);
  } catch (e) {
    stack.dispose();
    throw e;
  }
  log(`loaded ${key} (${manifest.modules.length} layers)`);
  return { manifest, stack, spaceDigests };
}

function openStore(): StackStore {
  if (store === null) throw new GimError('backend_unavailable', 'the worker is not initialised');
  return store;
}

async function handle(req: InferenceRequest): Promise<void> {
  try {
    const handler = handlers[req.type] as (r: InferenceRequest) => Promise<Reply<RequestType>>;
    if (typeof handler !== 'function') {
      throw new GimError('invalid_argument', `unknown request type '${String(req.type)}'`);
    }
    const { result, transfer } = await handler(req);
    post({ id: req.id, ok: true, ...result }, transfer);
  } catch (e) {
    post(errorResponse(req.id, e));
  }
}

function errorResponse(id: number, e: unknown): ErrorResponse {
  if (isGimError(e)) return { id, ok: false, error: { code: e.code, message: e.message } };
  const message = e instanceof Error ? e.message : String(e);
  return { id, ok: false, error: { code: 'backend_unavailable', message: `worker: ${message}` } };
}

function post(message: WorkerMessage, transfer: TransferListItem[] = []): void {
  port?.postMessage(message, transfer);
}

port.on('message', (req: unknown) => {
  if (typeof req !== 'object' || req === null || typeof (req as { id?: unknown }).id !== 'number') {
    log(`ignored a message without an id: ${String(req)}`);
    return;
  }
  void handle(req as InferenceRequest);
});
