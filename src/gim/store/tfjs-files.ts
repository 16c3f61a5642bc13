import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import {
  DISK_WRITER,
  type FileWriter,
  isErrno,
  writeError,
  writeFileAtomic,
  writeJsonAtomic,
} from './atomic.js';

/**
 * A tf.io.ModelArtifacts on disk in the standard tfjs layout (`model.json` + `weights.bin`), the
 * layout `tfjs-node`'s `file://` handler and the browser's `http` handler read. This module has no
 * runtime dependency on tfjs: callers rebuild models with `tf.loadLayersModel`.
 */

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

/**
 * Writes `model.json` and `weights.bin` into `dir` (created if needed), each atomically. A failed
 * write is an `io_error` naming the file (see `writeError`).
 */
export async function saveModelArtifacts(
  dir: string,
  artifacts: tf.io.ModelArtifacts,
  writer: FileWriter = DISK_WRITER,
): Promise<tf.io.SaveResult> {
  const topology = artifacts.modelTopology;
  if (topology === undefined || topology instanceof ArrayBuffer) {
    throw new GimError('invalid_argument', 'only models with a JSON modelTopology can be saved');
  }
  const weightSpecs = artifacts.weightSpecs ?? [];
  if (weightSpecs.length > 0 && artifacts.weightData === undefined) {
    throw new GimError('invalid_argument', 'the artifacts have weight specs but no weightData');
  }
  const weights = weightBytes(artifacts.weightData);
  const expected = weightSpecsByteLength(weightSpecs, weights);
  if (expected !== weights.byteLength) {
    throw new GimError(
      'invalid_argument',
      `weightData has ${weights.byteLength} bytes but the weight specs describe ${expected}`,
    );
  }

  const modelJson: tf.io.ModelJSON = {
    modelTopology: topology,
    format: artifacts.format ?? 'layers-model',
    generatedBy: artifacts.generatedBy ?? 'gim-serve',
    convertedBy: artifacts.convertedBy ?? null,
    weightsManifest: [{ paths: [WEIGHTS_BIN], weights: weightSpecs }],
  };
  if (artifacts.trainingConfig !== undefined) modelJson.trainingConfig = artifacts.trainingConfig;
  if (artifacts.userDefinedMetadata !== undefined) {
    modelJson.userDefinedMetadata = artifacts.userDefinedMetadata;
  }
  if (artifacts.signature !== undefined) modelJson.signature = artifacts.signature;
  if (artifacts.modelInitializer !== undefined) {
    modelJson.modelInitializer = artifacts.modelInitializer;
  }
  if (artifacts.initializerSignature !== undefined) {
    modelJson.initializerSignature = artifacts.initializerSignature;
  }

  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    throw writeError(dir, e);
  }
  // Weights first: a model.json on disk always has its weights next to it.
  await writeFileAtomic(join(dir, WEIGHTS_BIN), weights, writer);
  await writeJsonAtomic(join(dir, MODEL_JSON), modelJson, writer);

  return {
    modelArtifactsInfo: {
      dateSaved: new Date(),
      modelTopologyType: 'JSON',
      modelTopologyBytes: Buffer.byteLength(JSON.stringify(topology), 'utf8'),
      weightSpecsBytes: Buffer.byteLength(JSON.stringify(weightSpecs), 'utf8'),
      weightDataBytes: weights.byteLength,
    },
  };
}

/**
 * Reads a tfjs model from `path`: a directory holding `model.json`, or the `model.json` file
 * itself. Every weight file of the manifest is read (paths are relative to model.json and may not
 * leave its directory) and concatenated into one `weightData` buffer, whose size must match the
 * weight specs. The result can be passed to `tf.loadLayersModel(tf.io.fromMemory(artifacts))`.
 */
export async function loadModelArtifacts(path: string): Promise<tf.io.ModelArtifacts> {
  const jsonPath = path.endsWith('.json') ? path : join(path, MODEL_JSON);
  const modelJson = parseModelJson(await readStoreFile(jsonPath, 'not_found'), jsonPath);

  const artifacts: tf.io.ModelArtifacts = {
    modelTopology: modelJson.modelTopology,
    format: modelJson.format,
    generatedBy: modelJson.generatedBy,
    convertedBy: modelJson.convertedBy,
  };
  if (modelJson.trainingConfig !== undefined) artifacts.trainingConfig = modelJson.trainingConfig;
  if (modelJson.userDefinedMetadata !== undefined) {
    artifacts.userDefinedMetadata = modelJson.userDefinedMetadata;
  }
  if (modelJson.signature !== undefined) artifacts.signature = modelJson.signature;
  if (modelJson.modelInitializer !== undefined) {
    artifacts.modelInitializer = modelJson.modelInitializer;
  }
  if (modelJson.initializerSignature !== undefined) {
    artifacts.initializerSignature = modelJson.initializerSignature;
  }

  const manifest = modelJson.weightsManifest;
  const weightSpecs = manifest.flatMap((group) => group.weights);
  const shards: Uint8Array[] = [];
  for (const file of shardFiles(modelJson, jsonPath)) {
    shards.push(await readStoreFile(file, 'invalid_data'));
  }
  const weights = concatBytes(shards);
  const expected = weightSpecsByteLength(weightSpecs, weights);
  if (expected !== weights.byteLength) {
    throw new GimError(
      'invalid_data',
      `${jsonPath}: the weight files hold ${weights.byteLength} bytes but the manifest describes ${expected}`,
    );
  }
  artifacts.weightSpecs = weightSpecs;
  // A fresh buffer of exactly this size: Buffers from readFile may share a larger pool.
  artifacts.weightData = weights.buffer as ArrayBuffer;
  return artifacts;
}

/**
 * Checks a tfjs model at `path` as `loadModelArtifacts` would, without reading its weights:
 * `model.json` parses and its weight files exist with the size the weight specs describe (for
 * string weights, whose size depends on the data, only that they exist). Cheap enough for a
 * listing: a `stat` per weight file.
 */
export async function checkModelFiles(path: string): Promise<void> {
  const jsonPath = path.endsWith('.json') ? path : join(path, MODEL_JSON);
  const modelJson = parseModelJson(await readStoreFile(jsonPath, 'not_found'), jsonPath);
  let size = 0;
  for (const file of shardFiles(modelJson, jsonPath)) {
    try {
      size += (await stat(file)).size;
    } catch (e) {
      if (isErrno(e, 'ENOENT'))
        throw new GimError('invalid_data', `${file} does not exist`, { cause: e });
      throw new GimError('io_error', `cannot read ${file}: ${String(e)}`, { cause: e });
    }
  }
  const specs = modelJson.weightsManifest.flatMap((group) => group.weights);
  if (specs.some((spec) => spec.dtype === 'string' && spec.quantization === undefined)) return;
  const expected = weightSpecsByteLength(specs, new Uint8Array(0));
  if (expected !== size) {
    throw new GimError(
      'invalid_data',
      `${jsonPath}: the weight files hold ${size} bytes but the manifest describes ${expected}`,
    );
  }
}

/** The weight files of a model.json, in order; none may leave its directory. */
function shardFiles(modelJson: tf.io.ModelJSON, jsonPath: string): string[] {
  const baseDir = dirname(jsonPath);
  return modelJson.weightsManifest.flatMap((group) =>
    group.paths.map((shardPath) => {
      const file = resolve(baseDir, shardPath);
      const rel = relative(resolve(baseDir), file);
      if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
        throw new GimError(
          'invalid_data',
          `${jsonPath}: weight path '${shardPath}' leaves ${baseDir}`,
        );
      }
      return file;
    }),
  );
}

/** An IOHandler over a directory, for `model.save(handler)` and `tf.loadLayersModel(handler)`. */
export function fileSystemHandler(dir: string): tf.io.IOHandler {
  return {
    save: (artifacts) => saveModelArtifacts(dir, artifacts),
    load: () => loadModelArtifacts(dir),
  };
}

/** The bytes of a tfjs `WeightData` (one buffer or a list of shards), as one contiguous array. */
export function weightBytes(data: tf.io.WeightData | undefined): Uint8Array {
  if (data === undefined) return new Uint8Array(0);
  if (Array.isArray(data)) return concatBytes(data.map((b) => new Uint8Array(b)));
  return new Uint8Array(data);
}

/**
 * The number of bytes `specs` occupy. String weights are variable-length (each string is a uint32
 * little-endian byte count followed by its bytes), so they are measured in `data`; a string
 * header past the end of `data` makes the result exceed `data.byteLength`.
 */
export function weightSpecsByteLength(
  specs: readonly tf.io.WeightsManifestEntry[],
  data: Uint8Array,
): number {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let offset = 0;
  for (const spec of specs) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    if (spec.dtype === 'string' && spec.quantization === undefined) {
      for (let i = 0; i < size; i++) {
        if (offset + 4 > data.byteLength) return offset + 4;
        offset += 4 + view.getUint32(offset, true);
      }
    } else {
      offset += size * bytesPerElement(spec);
    }
  }
  return offset;
}

function bytesPerElement(spec: tf.io.WeightsManifestEntry): number {
  const dtype = spec.quantization?.dtype ?? spec.dtype;
  const bytes = BYTES_PER_ELEMENT[dtype];
  if (bytes === undefined) {
    throw new GimError('invalid_data', `weight '${spec.name}' has an unknown dtype '${dtype}'`);
  }
  return bytes;
}

const BYTES_PER_ELEMENT: Partial<Record<string, number>> = {
  float32: 4,
  int32: 4,
  bool: 1,
  complex64: 8,
  uint8: 1,
  uint16: 2,
  float16: 2,
};

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

async function readStoreFile(
  file: string,
  missingCode: 'not_found' | 'invalid_data',
): Promise<Uint8Array> {
  try {
    return await readFile(file);
  } catch (e) {
    if (isErrno(e, 'ENOENT'))
      throw new GimError(missingCode, `${file} does not exist`, { cause: e });
    throw new GimError('io_error', `cannot read ${file}: ${String(e)}`, { cause: e });
  }
}

function parseModelJson(bytes: Uint8Array, file: string): tf.io.ModelJSON {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new GimError('invalid_data', `${file} is not valid JSON`, { cause: e });
  }
  if (!isObject(value) || !isObject(value.modelTopology)) {
    throw new GimError('invalid_data', `${file} has no modelTopology object`);
  }
  const manifest = value.weightsManifest ?? [];
  const groupsOk =
    Array.isArray(manifest) &&
    manifest.every(
      (g: unknown) =>
        isObject(g) &&
        Array.isArray(g.paths) &&
        g.paths.every((p: unknown) => typeof p === 'string') &&
        Array.isArray(g.weights) &&
        g.weights.every(
          (w: unknown) =>
            isObject(w) &&
            typeof w.name === 'string' &&
            typeof w.dtype === 'string' &&
            Array.isArray(w.shape) &&
            w.shape.every((d: unknown) => Number.isInteger(d) && (d as number) >= 0),
        ),
    );
  if (!groupsOk) throw new GimError('invalid_data', `${file} has a malformed weightsManifest`);
  return { ...value, weightsManifest: manifest } as unknown as tf.io.ModelJSON;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
