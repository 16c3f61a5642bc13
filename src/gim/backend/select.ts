/**
 * Chooses the tfjs backend for the process. The only module that imports a tfjs backend package:
 * the native ones (`@tensorflow/tfjs-node-gpu`, `@tensorflow/tfjs-node`) are optional and often
 * absent or broken (their install script downloads libtensorflow), so they are imported
 * dynamically and a failure is a reason to fall back, not a crash.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { GimError } from '../errors.js';
import { registerNativeTrainingKernels } from './native-kernels.js';
import { registerWasmTrainingKernels } from './wasm-kernels.js';

/** User-facing backend names, best first. */
export type BackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';

export const BACKEND_NAMES: readonly BackendName[] = [
  'tensorflow-gpu',
  'tensorflow',
  'wasm',
  'cpu',
];

export interface BackendInfo {
  name: BackendName;
  /** `tf.getBackend()` after selection. */
  tfjsBackend: string;
  devices: string[];
  /** Kernels this project registered on the backend (its training kernels for wasm or tensorflow). */
  kernels: string[];
  /** Why each better backend was skipped, as `name: reason`. */
  fallbackReasons: string[];
}

export interface SelectBackendOptions {
  /** Use exactly this backend or throw `backend_unavailable`. */
  force?: BackendName;
  log?: (line: string) => void;
}

type Attempt =
  | { ok: true; tfjsBackend: string; devices: string[]; kernels: string[]; label: string }
  | { ok: false; reason: string; cause?: unknown };

let selected: BackendInfo | null = null;

export async function selectBackend(opts: SelectBackendOptions = {}): Promise<BackendInfo> {
  if (opts.force !== undefined && !BACKEND_NAMES.includes(opts.force)) {
    throw new GimError(
      'invalid_argument',
      `unknown backend '${String(opts.force)}': expected one of ${BACKEND_NAMES.join(', ')}`,
    );
  }
  const candidates = opts.force !== undefined ? [opts.force] : BACKEND_NAMES;
  const fallbackReasons: string[] = [];
  for (const name of candidates) {
    const attempt = await tryBackend(name);
    if (!attempt.ok) {
      if (opts.force !== undefined) {
        throw new GimError(
          'backend_unavailable',
          `tfjs backend '${name}' is unavailable: ${attempt.reason}`,
          { cause: attempt.cause },
        );
      }
      fallbackReasons.push(`${name}: ${attempt.reason}`);
      continue;
    }
    const { tfjsBackend, devices, kernels, label } = attempt;
    selected = { name, tfjsBackend, devices, kernels, fallbackReasons };
    const skipped = fallbackReasons.length > 0 ? ` — skipped ${fallbackReasons.join('; ')}` : '';
    opts.log?.(`tfjs backend: ${name} (${label})${skipped}`);
    return selected;
  }
  throw new GimError('backend_unavailable', `no tfjs backend: ${fallbackReasons.join('; ')}`);
}

/** What `selectBackend` chose, or null if it has not run or tfjs was switched away since. */
export function currentBackend(): BackendInfo | null {
  if (selected === null || tf.getBackend() !== selected.tfjsBackend) return null;
  return selected;
}

async function tryBackend(name: BackendName): Promise<Attempt> {
  try {
    switch (name) {
      case 'tensorflow-gpu':
        return await tryNative('@tensorflow/tfjs-node-gpu', 'GPU');
      case 'tensorflow':
        return await tryNative('@tensorflow/tfjs-node', 'CPU');
      case 'wasm':
        return await tryWasm();
      case 'cpu':
        return await tryCpu();
    }
  } catch (e) {
    return { ok: false, reason: describe(e), cause: e };
  }
}

/** tfjs-node(-gpu) registers the backend 'tensorflow' into @tensorflow/tfjs-core on import. */
async function tryNative(pkg: string, device: 'GPU' | 'CPU'): Promise<Attempt> {
  const installed = nativeBinding(pkg);
  if (installed === 'absent') return { ok: false, reason: 'not installed' };
  if (installed === 'unbuilt')
    // Importing it anyway would register its kernels and then throw, half-loaded.
    return {
      ok: false,
      reason:
        'installed without its native binding (its install script could not download ' +
        'libtensorflow): build it offline with `npm run native:install`',
    };
  // A variable specifier keeps TypeScript from resolving an optional, usually absent, package.
  const specifier: string = pkg;
  try {
    await import(specifier);
  } catch (e) {
    if (isMissing(e, pkg)) return { ok: false, reason: 'not installed', cause: e };
    throw e;
  }
  if (tf.findBackendFactory('tensorflow') === null) {
    return { ok: false, reason: `${pkg} loaded but registered no 'tensorflow' backend here` };
  }
  if (!(await tf.setBackend('tensorflow'))) {
    return { ok: false, reason: `${pkg}: backend 'tensorflow' failed to initialize` };
  }
  // tfjs-node exposes no device list; libtensorflow places ops on the first visible GPU.
  const binding = (tf.backend() as { binding?: { TF_Version?: unknown } }).binding;
  const version = typeof binding?.TF_Version === 'string' ? ` ${binding.TF_Version}` : '';
  const devices = device === 'GPU' ? ['GPU (CUDA)', 'CPU'] : ['CPU'];
  return {
    ok: true,
    tfjsBackend: tf.getBackend(),
    devices,
    kernels: registerNativeTrainingKernels(),
    label: `libtensorflow${version}, ${device}`,
  };
}

/** Whether a native package and its compiled binding (lib/napi-v<N>/tfjs_binding.node) exist. */
function nativeBinding(pkg: string): 'absent' | 'unbuilt' | 'built' {
  let root: string;
  try {
    root = dirname(createRequire(import.meta.url).resolve(`${pkg}/package.json`));
  } catch {
    return 'absent';
  }
  const lib = join(root, 'lib');
  const built =
    existsSync(lib) && readdirSync(lib).some((d) => existsSync(join(lib, d, 'tfjs_binding.node')));
  return built ? 'built' : 'unbuilt';
}

async function tryWasm(): Promise<Attempt> {
  // In Node the package locates its .wasm binaries next to its own bundle (no setWasmPaths).
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  if (!(await tf.setBackend('wasm'))) {
    return { ok: false, reason: 'wasm backend failed to initialize (see the warning above)' };
  }
  const kernels = registerWasmTrainingKernels();
  const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) === true;
  const threads = wasm.getThreadsCount();
  return {
    ok: true,
    tfjsBackend: tf.getBackend(),
    devices: [`wasm (simd: ${simd ? 'yes' : 'no'}, threads: ${threads})`],
    kernels,
    label: simd ? 'wasm simd' : 'wasm',
  };
}

async function tryCpu(): Promise<Attempt> {
  if (!(await tf.setBackend('cpu'))) {
    return { ok: false, reason: 'cpu backend failed to initialize' };
  }
  return {
    ok: true,
    tfjsBackend: tf.getBackend(),
    devices: ['cpu (pure JS)'],
    kernels: [],
    label: 'pure JS',
  };
}

/** The package itself is absent (not one of its dependencies, nor its native binding). */
function isMissing(e: unknown, pkg: string): boolean {
  const { code, message } = (e ?? {}) as { code?: unknown; message?: unknown };
  if (typeof message !== 'string' || !message.includes(`'${pkg}'`)) return false;
  // Node says ERR_MODULE_NOT_FOUND; loader hooks (swc-node) throw a plain "Cannot find module".
  return code === 'ERR_MODULE_NOT_FOUND' || /cannot find (module|package)/i.test(message);
}

function describe(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return message.split('\n')[0] ?? message;
}
