import { InvalidArgumentError, Option } from 'commander';
import { GimError } from '../gim/errors.js';
import {
  BACKEND_NAMES,
  selectBackend,
  type BackendInfo,
  type BackendName,
} from '../gim/backend/index.js';
import { StackStore } from '../gim/store/stack-store.js';
import { EncoderStack } from '../gim/encoders/encoder-stack.js';
import { AudioEncoderStack } from '../gim/encoders/audio-stack.js';
import { layerDigests } from '../gim/store/embedding-space.js';
import type { StackManifest } from '../gim/store/manifest.js';

/** Options every command that touches models or tfjs takes. */
export const modelsDirOption = () =>
  new Option('--models-dir <dir>', 'directory of versioned stacks')
    .env('MODELS_DIR')
    .default('models');

export const backendOption = () =>
  new Option('--backend <name>', 'force a tfjs backend (default: the best available)')
    .choices(BACKEND_NAMES as readonly string[] as string[])
    .env('GIM_BACKEND');

export async function startBackend(
  name: string | undefined,
  quiet = false,
  log: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): Promise<BackendInfo> {
  return selectBackend({
    force: name as BackendName | undefined,
    log: (line) => {
      if (!quiet) log(line);
    },
  });
}

export function int(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(
        `expected an integer in ${min}..${max === Number.MAX_SAFE_INTEGER ? '' : max}`,
      );
    return n;
  };
}

export function positiveNumber(value: string): number {
  const n = Number(value);
  if (!(Number.isFinite(n) && n > 0)) throw new InvalidArgumentError('expected a number > 0');
  return n;
}

export function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (!(Number.isFinite(n) && n >= 0)) throw new InvalidArgumentError('expected a number >= 0');
  return n;
}

export function intList(value: string): number[] {
  const parts = value.split(',').map((s) => Number(s.trim()));
  if (parts.length === 0 || parts.some((n) => !Number.isInteger(n) || n < 1))
    throw new InvalidArgumentError(
      'expected a comma-separated list of positive integers, e.g. 16,32,64',
    );
  return parts;
}

/** Loads a published stack (`name`, `name@3`, `name@stable`). */
export async function loadStack(
  modelsDir: string,
  ref: string,
): Promise<{ manifest: StackManifest; stack: EncoderStack }> {
  const store = new StackStore(modelsDir);
  const { manifest, modules } = await store.load(ref);
  if (manifest.modality !== 'image')
    throw new GimError(
      'invalid_argument',
      `${ref} is a ${manifest.modality} stack; this command handles images`,
    );
  const stack = await EncoderStack.fromManifest(manifest, modules);
  return { manifest, stack };
}

/** Loads a published stack of either modality, with its per-layer embedding-space digests. */
export async function loadAnyStack(
  modelsDir: string,
  ref: string,
): Promise<{
  manifest: StackManifest;
  stack: EncoderStack | AudioEncoderStack;
  spaceDigests: string[];
}> {
  const { manifest, modules } = await new StackStore(modelsDir).load(ref);
  const spaceDigests = layerDigests(manifest, modules);
  const stack =
    manifest.modality === 'audio'
      ? await AudioEncoderStack.fromManifest(manifest, modules)
      : await EncoderStack.fromManifest(manifest, modules);
  return { manifest, stack, spaceDigests };
}

/** Parses `--layers all|1,3|last` against a stack's depth. */
export function parseLayers(value: string, depth: number): number[] {
  if (value === 'all') return Array.from({ length: depth }, (_, i) => i + 1);
  const layers = value.split(',').map((s) => (s.trim() === 'last' ? depth : Number(s.trim())));
  const bad = layers.filter((l) => !Number.isInteger(l) || l < 1 || l > depth);
  if (bad.length > 0 || layers.length === 0)
    throw new GimError(
      'not_found',
      `layer "${value}" does not exist: use 1..${depth}, last or all`,
    );
  return [...new Set(layers)].sort((a, b) => a - b);
}
