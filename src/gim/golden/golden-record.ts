/**
 * The stored side of golden embeddings (see golden.ts): the record a manifest carries, its runtime
 * check, and the comparison. No tfjs here: the store and the manifest schema use it on threads
 * that never load tfjs.
 */
import { GimError } from '../errors.js';

export const GOLDEN_FORMAT = 'gim-golden/1';
export const GOLDEN_GENERATOR = 'gim-golden-inputs/1';
export const DEFAULT_GOLDEN_COUNT = 4;
export const MAX_GOLDEN_COUNT = 32;

/**
 * The default tolerance, as a relative error (see `compareGolden` for the measure): 5e-3.
 * Measured on the demo stack fashion-gim@1 (golden recorded on wasm, 4 inputs):
 *
 * - float32 backends agree far below it: tensorflow 3.9e-7, cpu 2.8e-7, wasm 0 (the parity tests
 *   see <= 4e-7 on embeddings).
 * - TF32 (Ampere+ GPUs, TensorFlow's default for convolutions and matmuls) rounds operands to a
 *   10-bit mantissa. Emulated here (conv inputs and kernels rounded, float32 accumulation) it
 *   moves the error to 9.7e-4 on the demo stack and 4.9e-4..1.1e-3 on four random test stacks:
 *   5e-3 leaves a factor ~4.5, so a GPU replica is not refused for its arithmetic.
 * - Tampering with module 1 (a 3x3x1x16 kernel): a sign flip of any of its 144 kernel weights
 *   gives 7.0e-3 (the smallest, |w| = 0.003) to 2.3 (median 0.50), of any bias 0.17..2.8; x1.01
 *   on its largest weight 1.1e-2 (x1.01 is caught on 48 of the 144 kernel weights). Deeper
 *   modules: a sign flip of module 2's or 3's largest weight 9.5e-2 / 1.1e-1, of their median
 *   weight 3.6e-2 / 1.8e-2; x1.01 of any single weight there stays below 5e-4 and is not caught.
 *
 * So this catches corrupted, swapped or edited weights and broken backends, not a 1% nudge of
 * one weight deep in the stack: it checks numbers, it is not a seal over the weight bytes.
 */
export const GOLDEN_TOLERANCE = 5e-3;

/**
 * Below this magnitude an expected output counts as zero: the error of an all-but-zero summary is
 * measured absolutely rather than blown up by dividing by a denormal.
 */
export const GOLDEN_TINY = 1e-6;

/**
 * How one input's layer output is summarised: `mean` over the whole patch grid (or all frames);
 * `regions`: means over a min(3, rows) x min(3, cols) partition of the grid (on the 6x6 grid of
 * 28x28 stacks these are exactly `grid2`'s 2x2 blocks), bounded whatever the image size; `frames`:
 * up to 4 frame vectors evenly spaced over the clip (first and last included).
 */
export type GoldenSummary = 'mean' | 'regions' | 'frames';

export interface GoldenValues {
  input: string;
  summary: GoldenSummary;
  shape: number[];
  /** The values rounded to float32, little-endian bytes in base64 (under half the size of decimal JSON). */
  data: string;
}

export interface GoldenLayer {
  layer: number;
  values: GoldenValues[];
}

export interface GoldenRecord {
  format: typeof GOLDEN_FORMAT;
  inputs: { generator: typeof GOLDEN_GENERATOR; count: number; ids?: string[] };
  /** The backend the values were computed on (a `BackendName`, or tfjs's name for it). */
  backend: string;
  tolerance: { maxRelError: number };
  layers: GoldenLayer[];
}

export interface GoldenLayerError {
  layer: number;
  maxRelError: number;
  /** The input with the largest error at this layer. */
  input: string;
}

export interface GoldenComparison {
  ok: boolean;
  /** The largest per-(layer, input) relative error (Infinity when the records do not line up). */
  maxRelError: number;
  tolerance: number;
  worst?: { layer: number; input: string };
  message: string;
  /** Per layer of the expected record, its largest error. */
  layers: GoldenLayerError[];
  expectedBackend: string;
  actualBackend: string;
}

// ---------------------------------------------------------------------------------------------
// Comparing

/**
 * Compares a record computed here (`actual`) with the stored one (`expected`), within the stored
 * tolerance. The error of one (layer, input) is max|a - e| / max(max|e|, GOLDEN_TINY) over all of
 * that input's summaries at that layer: relative to the largest expected magnitude, not element by
 * element, because ReLU outputs and their means are often near zero, where a backend's rounding
 * is an absolute error of the order of ulp(max|e|) and an element-wise ratio would explode; and
 * relative, so one tolerance fits every layer whatever its activation scale. Records that do not
 * line up (other layers, inputs, shapes) fail with an Infinity error.
 */
export function compareGolden(expected: GoldenRecord, actual: GoldenRecord): GoldenComparison {
  const tolerance = expected.tolerance.maxRelError;
  const base = {
    tolerance,
    expectedBackend: expected.backend,
    actualBackend: actual.backend,
  };
  const mismatch = (what: string): GoldenComparison => ({
    ...base,
    ok: false,
    maxRelError: Infinity,
    layers: [],
    message: `golden records do not line up: ${what}`,
  });
  if (expected.format !== actual.format) return mismatch(`format ${actual.format}`);
  if (
    expected.inputs.generator !== actual.inputs.generator ||
    expected.inputs.count !== actual.inputs.count
  )
    return mismatch(
      `inputs ${actual.inputs.generator} x${actual.inputs.count}, ` +
        `expected ${expected.inputs.generator} x${expected.inputs.count}`,
    );
  const layers: GoldenLayerError[] = [];
  let worst: { layer: number; input: string } | undefined;
  let maxRelError = 0;
  for (const e of expected.layers) {
    const a = actual.layers.find((l) => l.layer === e.layer);
    if (a === undefined) return mismatch(`no layer ${e.layer}`);
    if (a.values.length !== e.values.length)
      return mismatch(
        `layer ${e.layer} has ${a.values.length} values, expected ${e.values.length}`,
      );
    // Per input: the largest difference and the largest expected magnitude over its summaries.
    const perInput = new Map<string, { diff: number; scale: number }>();
    for (const ev of e.values) {
      const av = a.values.find((v) => v.input === ev.input && v.summary === ev.summary);
      if (av === undefined || av.shape.join('x') !== ev.shape.join('x'))
        return mismatch(
          `layer ${e.layer}: no ${ev.summary} [${ev.shape.join('x')}] of ${ev.input}`,
        );
      const want = fromBase64(ev.data);
      const got = fromBase64(av.data);
      if (want.length !== got.length || want.length !== product(ev.shape))
        return mismatch(`layer ${e.layer}: ${ev.summary} of ${ev.input} has the wrong length`);
      const acc = perInput.get(ev.input) ?? { diff: 0, scale: 0 };
      for (let i = 0; i < want.length; i++) {
        const w = want[i] as number;
        const g = got[i] as number;
        // NaN is an error, except where the record has NaN too (then nothing to compare).
        const d = w === g || (Number.isNaN(w) && Number.isNaN(g)) ? 0 : Math.abs(g - w);
        acc.diff = Math.max(acc.diff, Number.isNaN(d) ? Infinity : d);
        if (Number.isFinite(w)) acc.scale = Math.max(acc.scale, Math.abs(w));
      }
      perInput.set(ev.input, acc);
    }
    let layerError: GoldenLayerError = { layer: e.layer, maxRelError: 0, input: '' };
    for (const [input, { diff, scale }] of perInput) {
      const rel = diff / Math.max(scale, GOLDEN_TINY);
      if (rel > layerError.maxRelError || layerError.input === '')
        layerError = { layer: e.layer, maxRelError: rel, input };
    }
    layers.push(layerError);
    if (layerError.maxRelError > maxRelError || worst === undefined) {
      maxRelError = layerError.maxRelError;
      worst = { layer: e.layer, input: layerError.input };
    }
  }
  if (layers.length === 0) return mismatch('the expected record has no layers');
  const ok = maxRelError <= tolerance;
  const where = worst ? `layer ${worst.layer}, input ${worst.input}` : '';
  const backends = `recorded on ${expected.backend}, computed on ${actual.backend}`;
  const message = ok
    ? `golden embeddings match: max relative error ${fmt(maxRelError)} (${where}) <= tolerance ${fmt(tolerance)}; ${backends}`
    : `golden embeddings differ: max relative error ${fmt(maxRelError)} at ${where} > tolerance ${fmt(tolerance)}; ${backends}`;
  return { ...base, ok, maxRelError, worst, message, layers };
}

/**
 * Why a stored golden record cannot be checked by this code (another format or generator, from a
 * newer writer), or null when it can. Such a version loads unchecked rather than not at all.
 */
export function goldenUnsupported(record: { format?: unknown; inputs?: unknown }): string | null {
  if (record.format !== GOLDEN_FORMAT)
    return `golden format ${JSON.stringify(record.format)} is not ${GOLDEN_FORMAT}`;
  const generator = (record.inputs as { generator?: unknown } | undefined)?.generator;
  if (generator !== GOLDEN_GENERATOR)
    return `golden inputs ${JSON.stringify(generator)} are not ${GOLDEN_GENERATOR}`;
  return null;
}

/** A relative error for messages: 3 significant digits, exponent form. */
export function fmt(x: number): string {
  return Number.isFinite(x) ? x.toExponential(2) : String(x);
}

function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** float32 little-endian bytes in base64, whatever the platform's byte order. */
export function toBase64(values: Float32Array): string {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return Buffer.from(bytes).toString('base64');
}

export function fromBase64(text: string): Float32Array {
  const bytes = Buffer.from(text, 'base64');
  if (bytes.length % 4 !== 0)
    throw new GimError('invalid_data', `golden values of ${bytes.length} bytes are not float32s`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

const SUMMARIES: readonly string[] = ['mean', 'regions', 'frames'] satisfies GoldenSummary[];

/**
 * Runtime check of a manifest's `golden` field: `fail` gets what is wrong (its caller adds where).
 * A record of another format (a newer writer's) is only checked for being an object with a
 * format: it is kept, and the version loads unchecked (see `goldenUnsupported`).
 */
export function checkGoldenRecord(
  value: unknown,
  layerCount: number,
  fail: (what: string) => never,
): void {
  if (!isObject(value)) fail('must be an object');
  const g = value as Record<string, unknown>;
  if (typeof g.format !== 'string' || g.format === '') fail('format must be a non-empty string');
  if (g.format !== GOLDEN_FORMAT) return;
  const inputs = g.inputs;
  if (!isObject(inputs)) return fail('inputs must be an object');
  if (typeof inputs.generator !== 'string' || inputs.generator === '')
    fail('inputs.generator must be a non-empty string');
  const count = inputs.count;
  if (!Number.isInteger(count) || (count as number) < 1 || (count as number) > MAX_GOLDEN_COUNT)
    fail(`inputs.count must be an integer in 1..${MAX_GOLDEN_COUNT}`);
  if (typeof g.backend !== 'string' || g.backend === '') fail('backend must be a non-empty string');
  const tol = isObject(g.tolerance) ? g.tolerance.maxRelError : undefined;
  if (typeof tol !== 'number' || !(tol > 0 && Number.isFinite(tol)))
    fail('tolerance.maxRelError must be a number > 0');
  if (!Array.isArray(g.layers) || g.layers.length === 0) fail('layers must be a non-empty array');
  const seen = new Set<number>();
  (g.layers as unknown[]).forEach((l, i) => {
    const at = `layers[${i}]`;
    if (!isObject(l)) return fail(`${at} must be an object`);
    const layer = l.layer;
    if (!Number.isInteger(layer) || (layer as number) < 1 || (layer as number) > layerCount)
      fail(`${at}.layer must be an integer in 1..${layerCount}`);
    if (seen.has(layer as number)) fail(`${at}.layer ${String(layer)} appears twice`);
    seen.add(layer as number);
    if (!Array.isArray(l.values) || l.values.length === 0)
      fail(`${at}.values must be a non-empty array`);
    (l.values as unknown[]).forEach((v, j) => {
      const vat = `${at}.values[${j}]`;
      if (!isObject(v)) return fail(`${vat} must be an object`);
      if (typeof v.input !== 'string' || v.input === '') fail(`${vat}.input must be a string`);
      if (!SUMMARIES.includes(v.summary as string))
        fail(`${vat}.summary must be one of ${SUMMARIES.join(', ')}`);
      const shape = v.shape;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d > 0))
        fail(`${vat}.shape must be an array of positive integers`);
      if (typeof v.data !== 'string' || !BASE64_RE.test(v.data)) fail(`${vat}.data must be base64`);
      // base64 of n float32s: ceil(4n / 3) * 4 characters, padded.
      const bytes =
        ((v.data as string).length / 4) * 3 - ((v.data as string).match(/=+$/)?.[0].length ?? 0);
      if (bytes !== 4 * product(shape as number[]))
        fail(
          `${vat}.data holds ${bytes} bytes, shape [${(shape as number[]).join(', ')}] needs ${4 * product(shape as number[])}`,
        );
    });
  });
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
