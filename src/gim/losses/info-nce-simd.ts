import { GimError } from '../errors.js';
import type { PositivePairs } from './info-nce.js';
import { INFO_NCE_WASM_BASE64 } from './wasm/info-nce-wasm.js';

/**
 * InfoNCE's host loop (`infoNceArrays`) as a WebAssembly SIMD kernel (wasm/info-nce.c).
 *
 * The loop is ~11 M multiply-adds per training step at 16/32/64 (N + 1 dot products of length C
 * and as many rank-1 gradient updates per positive pair): about 22 ms in JavaScript, the largest
 * single cost of a step on the native backend. Four float32 lanes bring it to a few ms. The
 * arrays are copied into the module's memory and the gradients copied back (~1 ms at C = 64).
 * Scores and updates are float32 (JavaScript computes them in float64): agreement within ~1e-6,
 * tested in test/unit/info-nce-simd.test.ts.
 */

/** The part of the WebAssembly JS API used here (TypeScript's ES libs do not declare it). */
interface WasmMemory {
  buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
const { WebAssembly } = globalThis as unknown as { WebAssembly: WasmApi };

interface Kernel {
  memory: WasmMemory;
  heapBase: number;
  step: (...args: number[]) => number;
}

/** The instantiated kernel, compiled once per thread (it holds no state between calls). */
let kernel: Kernel | null | undefined;

function load(): Kernel | null {
  if (kernel !== undefined) return kernel;
  try {
    const bytes = Uint8Array.from(atob(INFO_NCE_WASM_BASE64), (c) => c.charCodeAt(0));
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {
      env: { exp: Math.exp, log: Math.log },
    });
    const { memory, info_nce_step, __heap_base } = instance.exports as {
      memory: WasmMemory;
      info_nce_step: Kernel['step'];
      __heap_base: { value: number };
    };
    kernel = { memory, heapBase: Number(__heap_base.value), step: info_nce_step };
  } catch {
    kernel = null; // no WebAssembly SIMD here: infoNce uses the JavaScript loop
  }
  return kernel;
}

/** Whether the SIMD kernel loads in this runtime. */
export function infoNceSimdAvailable(): boolean {
  return load() !== null;
}

const align = (n: number) => Math.ceil(n / 16) * 16;

/**
 * Same contract as `infoNceArrays`: accumulates the gradient into dP and dZ, returns the loss.
 * Null when the kernel is unavailable (the caller falls back to the JavaScript loop).
 */
export function infoNceSimd(
  P: Float32Array,
  Z: Float32Array,
  C: number,
  K: number,
  pairs: PositivePairs,
  negatives: Int32Array[],
  dP: Float32Array,
  dZ: Float32Array,
): number | null {
  const k = load();
  if (k === null) return null;
  // Layout: P, Z, dP, dZ, then each step's context, target and negatives (16-byte aligned).
  let offset = align(k.heapBase);
  const place = (bytes: number) => {
    const at = offset;
    offset = align(offset + bytes);
    return at;
  };
  const pAt = place(P.byteLength);
  const zAt = place(Z.byteLength);
  const dpAt = place(dP.byteLength);
  const dzAt = place(dZ.byteLength);
  const steps = pairs.steps.map(({ context, target }, s) => ({
    n: context.length,
    ctxAt: place(context.byteLength),
    tgtAt: place(target.byteLength),
    negAt: place((negatives[s] as Int32Array).byteLength),
  }));
  const missing = offset - k.memory.buffer.byteLength;
  if (missing > 0) k.memory.grow(Math.ceil(missing / 65536));
  const buffer = k.memory.buffer;
  new Float32Array(buffer, pAt, P.length).set(P);
  new Float32Array(buffer, zAt, Z.length).set(Z);
  const dPm = new Float32Array(buffer, dpAt, dP.length);
  const dZm = new Float32Array(buffer, dzAt, dZ.length);
  dPm.set(dP);
  dZm.set(dZ);
  let total = 0;
  pairs.steps.forEach(({ context, target }, s) => {
    const at = steps[s] as (typeof steps)[number];
    if (at.n === 0) return;
    const neg = negatives[s] as Int32Array;
    new Int32Array(buffer, at.ctxAt, at.n).set(context);
    new Int32Array(buffer, at.tgtAt, at.n).set(target);
    new Int32Array(buffer, at.negAt, neg.length).set(neg);
    const N = neg.length / at.n;
    if (!Number.isInteger(N))
      throw new GimError('invalid_argument', `infoNce: ${neg.length} negatives for ${at.n} pairs`);
    const loss = k.step(pAt, zAt, C, K, s, at.n, N, at.ctxAt, at.tgtAt, at.negAt, dpAt, dzAt);
    if (loss < 0)
      throw new GimError('invalid_argument', `infoNce: ${N} negatives per pair (at most 4096)`);
    total += loss;
  });
  dP.set(dPm);
  dZ.set(dZm);
  return total;
}
