/**
 * The numeric part of the GPU smoke test (`gim smoke-gpu`, the smoke bundle): a stack's golden
 * embeddings on the backend under test against a CPU reference in the same process (and against
 * the record stored in its manifest, if any), then its throughput at the deepest layer over a
 * batch-size sweep. Which backends, and whether they are on a GPU, is the caller's business.
 */
import * as tf from '@tensorflow/tfjs';
import { AudioEncoderStack } from '../encoders/audio-stack.js';
import { EncoderStack } from '../encoders/encoder-stack.js';
import { GimError } from '../errors.js';
import {
  compareGolden,
  computeGolden,
  DEFAULT_GOLDEN_COUNT,
  goldenInputs,
  goldenUnsupported,
  MAX_GOLDEN_COUNT,
  type GoldenComparison,
  type GoldenRecord,
} from '../golden/golden.js';
import type { StackManifest } from '../store/manifest.js';

/** A backend the smoke test switches tfjs to. */
export interface SmokeBackend {
  /** As reported: a BackendName, or 'webgpu'. */
  name: string;
  /** `tf.getBackend()` once it is in use (checked before each pass). */
  tfjsBackend: string;
  /** Makes it tfjs's current backend. */
  use(): Promise<void>;
}

export interface SmokeOptions {
  manifest: StackManifest;
  modules: tf.io.ModelArtifacts[];
  target: SmokeBackend;
  reference: SmokeBackend;
  batchSizes: number[];
  /** Timed batches per batch size, at most (default 10). */
  reps?: number;
  /** Time budget per batch size after its warm-up batch; at least one batch is timed (default 3). */
  maxSecondsPerSize?: number;
  /** Sweep the reference too (slow on `cpu`: ~20 ms per item of the demo stack). */
  referenceThroughput?: boolean;
  log?: (line: string) => void;
}

export interface ThroughputRow {
  backend: string;
  batchSize: number;
  layer: number;
  /** Timed batches. */
  reps: number;
  /** Median of the timed batches: input patches, upload, forward pass, readback of the layer. */
  msPerBatch: number;
  msPerBatchMin: number;
  itemsPerSecond: number;
  /** The first batch of this size, untimed above: shader compilation, kernel selection. */
  warmupMs: number;
}

export interface SmokeGolden {
  inputs: number;
  /** The backend under test against the reference computed here. */
  vsReference: GoldenComparison;
  /** Against the record published in the manifest, or why not checked. */
  vsManifest: GoldenComparison | { skipped: string };
  /** Wall time of each golden pass (first use of the backend: includes its warm-up). */
  referenceMs: number;
  targetMs: number;
}

export interface SmokeResult {
  golden: SmokeGolden;
  throughput: ThroughputRow[];
}

/** Runs the comparison and the sweep; every tensor and stack it makes is disposed. */
export async function runSmoke(o: SmokeOptions): Promise<SmokeResult> {
  const log = o.log ?? (() => {});
  checkBatchSizes(o.batchSizes);
  const stored = o.manifest.golden;
  const storedProblem = stored === undefined ? null : goldenUnsupported(stored);
  // The stored record's input count when it can be checked, so one pass serves both comparisons.
  const count =
    stored !== undefined && storedProblem === null ? stored.inputs.count : DEFAULT_GOLDEN_COUNT;

  log(`golden embeddings of ${count} inputs on ${o.reference.name} (reference)`);
  await use(o.reference);
  const ref = await timedGolden(o, o.reference.name, count);
  log(`golden embeddings on ${o.target.name}`);
  await use(o.target);
  const got = await timedGolden(o, o.target.name, count);

  const vsReference = compareGolden(ref.record, got.record);
  let vsManifest: SmokeGolden['vsManifest'];
  if (stored === undefined) vsManifest = { skipped: 'the manifest has no golden record' };
  else if (storedProblem !== null) vsManifest = { skipped: storedProblem };
  else vsManifest = compareGolden(stored, got.record);

  const throughput: ThroughputRow[] = [];
  const backends = o.referenceThroughput ? [o.target, o.reference] : [o.target];
  for (const backend of backends) {
    await use(backend);
    const stack = await buildStack(o.manifest, o.modules);
    try {
      for (const batchSize of o.batchSizes) {
        const row = await timeBatches(stack, o, backend.name, batchSize);
        log(
          `${backend.name} batch ${batchSize}: ${row.msPerBatch.toFixed(2)} ms/batch, ` +
            `${row.itemsPerSecond.toFixed(0)} items/s`,
        );
        throughput.push(row);
      }
    } finally {
      stack.dispose();
    }
  }
  // Leave tfjs on the backend under test, as the caller selected it.
  if (o.referenceThroughput) await use(o.target);
  return {
    golden: {
      inputs: count,
      vsReference,
      vsManifest,
      referenceMs: ref.ms,
      targetMs: got.ms,
    },
    throughput,
  };
}

/** Switches tfjs to `b`, and checks it did: a silent fallback would compare a backend with itself. */
async function use(b: SmokeBackend): Promise<void> {
  await b.use();
  if (tf.getBackend() !== b.tfjsBackend)
    throw new GimError(
      'backend_unavailable',
      `switching to ${b.name} left tfjs on '${tf.getBackend()}', not '${b.tfjsBackend}'`,
    );
}

export function buildStack(
  manifest: StackManifest,
  modules: tf.io.ModelArtifacts[],
): Promise<EncoderStack | AudioEncoderStack> {
  return manifest.modality === 'audio'
    ? AudioEncoderStack.fromManifest(manifest, modules)
    : EncoderStack.fromManifest(manifest, modules);
}

async function timedGolden(
  o: SmokeOptions,
  backend: string,
  count: number,
): Promise<{ record: GoldenRecord; ms: number }> {
  const t0 = performance.now();
  const stack = await buildStack(o.manifest, o.modules);
  try {
    const record = await computeGolden(stack, o.manifest, { count, backend });
    return { record, ms: performance.now() - t0 };
  } finally {
    stack.dispose();
  }
}

/** `batchSize` items: the golden inputs, cycled (distinct data, and the same in every process). */
export function sweepBatch(manifest: StackManifest, batchSize: number): Float32Array {
  const inputs = goldenInputs(manifest, Math.min(batchSize, MAX_GOLDEN_COUNT));
  const item = inputs[0]?.data.length ?? 0;
  const out = new Float32Array(batchSize * item);
  for (let i = 0; i < batchSize; i++)
    out.set((inputs[i % inputs.length] as { data: Float32Array }).data, i * item);
  return out;
}

async function timeBatches(
  stack: EncoderStack | AudioEncoderStack,
  o: SmokeOptions,
  backend: string,
  batchSize: number,
): Promise<ThroughputRow> {
  const layer = stack.depth;
  const batch = sweepBatch(o.manifest, batchSize);
  const once = async (): Promise<number> => {
    const t0 = performance.now();
    const out = stack.embed(batch, batchSize, [layer]) as Map<number, tf.Tensor>;
    try {
      // Reading the values back waits for the device: the time is the work's, not its queueing.
      await (out.get(layer) as tf.Tensor).data();
    } finally {
      tf.dispose([...out.values()]);
    }
    return performance.now() - t0;
  };
  const warmupMs = await once();
  const reps = o.reps ?? 10;
  const deadline = performance.now() + (o.maxSecondsPerSize ?? 3) * 1000;
  const times: number[] = [];
  while (times.length < reps && (times.length === 0 || performance.now() < deadline))
    times.push(await once());
  const sorted = [...times].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median =
    sorted.length % 2 === 1
      ? (sorted[mid] as number)
      : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return {
    backend,
    batchSize,
    layer,
    reps: times.length,
    msPerBatch: median,
    msPerBatchMin: sorted[0] as number,
    itemsPerSecond: (batchSize * 1000) / median,
    warmupMs,
  };
}

function checkBatchSizes(sizes: number[]): void {
  if (sizes.length === 0 || sizes.some((n) => !Number.isInteger(n) || n < 1 || n > 4096))
    throw new GimError(
      'invalid_argument',
      `batch sizes must be integers in 1..4096, got ${sizes.join(',') || '(none)'}`,
    );
}
