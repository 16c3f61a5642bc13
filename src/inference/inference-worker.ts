/**
 * The inference worker: a node:worker_threads entry that owns the tfjs backend and the loaded
 * encoder stacks (image or audio: see served-stack.ts), so that model compute never runs on the
 * HTTP event loop. Started by
 * `InferenceClient`; speaks the messages of `protocol.ts`. Every request gets one response; an
 * error in a handler becomes an error response, never a crash of the worker.
 */
import { parentPort, type TransferListItem } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../gim/backend/index.js';
import { GimError, isGimError } from '../gim/errors.js';
import { compareGolden, computeGolden, fmt, goldenUnsupported } from '../gim/golden/golden.js';
import { layerDigests } from '../gim/store/embedding-space.js';
import type { StackManifest } from '../gim/store/manifest.js';
import { StackStore } from '../gim/store/stack-store.js';
import type {
  ErrorResponse,
  GoldenCheck,
  InferenceRequest,
  RequestOf,
  RequestType,
  ResultOf,
  WorkerMessage,
} from './protocol.js';
import { type ServedStack, serveStack } from './served-stack.js';

interface LoadedStack {
  manifest: StackManifest;
  stack: ServedStack;
  spaceDigests: string[];
  golden: GoldenCheck;
}

interface Reply<T extends RequestType> {
  result: ResultOf[T];
  transfer?: TransferListItem[];
}

type Handlers = { [T in RequestType]: (req: RequestOf<T>) => Promise<Reply<T>> };

const port = parentPort;
if (port === null) throw new Error('inference-worker.ts must be started as a worker thread');

let store: StackStore | null = null;
/** The backend `init` selected, as golden checks name it. */
let backendName = '';
/** By `name@version`; a promise, so that two loads of one version build it once. */
const stacks = new Map<string, Promise<LoadedStack>>();

const log = (line: string): void => post({ type: 'log', line });

const handlers: Handlers = {
  async init({ modelsDir, backend }) {
    const info = await selectBackend({ force: backend, log });
    backendName = info.name;
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
    const { manifest, spaceDigests, golden } = await loading;
    return { result: { manifest, spaceDigests, golden } };
  },

  async embed({ name, version, input, n, layers, deadline }) {
    // The request may have waited in this thread's queue behind other work (another stack's
    // batch, a load and its golden check): nobody waits for it past its deadline.
    if (typeof deadline === 'number' && performance.timeOrigin + performance.now() >= deadline) {
      throw new GimError('timeout', 'the request was past its deadline when the worker got to it');
    }
    const loaded = await stacks.get(`${name}@${version}`)?.catch(() => undefined);
    if (loaded === undefined) {
      throw new GimError('not_found', `stack ${name}@${version} is not loaded in the worker`);
    }
    if (!(input instanceof Float32Array)) {
      throw new GimError('invalid_argument', 'the embed input must be a Float32Array');
    }
    const started = performance.now();
    const grids = loaded.stack.embed(input, n, layers);
    const computeMs = performance.now() - started;
    return {
      result: { grids, computeMs },
      transfer: grids.map((g) => g.data.buffer as ArrayBuffer),
    };
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

/**
 * Reads a version, rebuilds its stack, runs it once (so the first request pays no warm-up) and
 * checks its golden embeddings on this backend: a version that fails is never served.
 */
async function buildStack(key: string): Promise<LoadedStack> {
  const { manifest, modules } = await openStore().load(key);
  const spaceDigests = layerDigests(manifest, modules);
  const stack = await serveStack(manifest, modules);
  let golden: GoldenCheck;
  try {
    const all = Array.from({ length: stack.depth }, (_, i) => i + 1);
    stack.embed(stack.warmUpInput(), 1, all);
    golden = await checkGolden(key, manifest, stack);
  } catch (e) {
    stack.dispose();
    throw e;
  }
  const checked =
    golden.status === 'ok'
      ? `golden check ok on ${golden.checkedOn}: ${fmt(golden.maxRelError)} <= ${fmt(golden.tolerance)} ` +
        `vs ${golden.recordedOn}, ${golden.ms.toFixed(1)} ms`
      : `golden check: UNCHECKED, ${golden.reason}`;
  log(`loaded ${key} (${manifest.modality}, ${manifest.modules.length} layers; ${checked})`);
  return { manifest, stack, spaceDigests, golden };
}

/** Compares the version's golden embeddings with this backend's; golden_mismatch if they differ. */
async function checkGolden(
  key: string,
  manifest: StackManifest,
  stack: ServedStack,
): Promise<GoldenCheck> {
  const expected = manifest.golden;
  if (expected === undefined) {
    return {
      status: 'unchecked',
      reason: `${key} has no golden embeddings (published before them; add them with \`gim golden ${key} --record\`)`,
    };
  }
  const unsupported = goldenUnsupported(expected);
  if (unsupported !== null)
    return { status: 'unchecked', reason: `${unsupported} (a newer writer's)` };
  const started = performance.now();
  const actual = await computeGolden(stack.encoder, manifest, {
    count: expected.inputs.count,
    backend: backendName,
  });
  const result = compareGolden(expected, actual);
  const ms = performance.now() - started;
  if (!result.ok) {
    const message =
      `refusing to serve ${key}: ${result.message}. Its weights are not the ones it was published ` +
      `with, or backend ${actual.backend} computes it wrongly`;
    log(`GOLDEN MISMATCH: ${message}`);
    throw new GimError('golden_mismatch', message, {
      details: {
        maxRelError: result.maxRelError,
        tolerance: result.tolerance,
        worst: result.worst,
      },
    });
  }
  return {
    status: 'ok',
    maxRelError: result.maxRelError,
    tolerance: result.tolerance,
    recordedOn: expected.backend,
    checkedOn: actual.backend,
    ms,
  };
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
