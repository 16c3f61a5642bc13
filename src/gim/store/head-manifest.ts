import { GimError, type GimErrorCode } from '../errors.js';
import { POOLINGS, type Pooling } from '../encoders/pooling.js';
import type { HeadReport, HeadTrainingRecord } from '../classify/fit-head.js';
import type { LayerCandidate } from '../classify/train-head.js';
import { embeddingSpaceId } from './embedding-space.js';
import type { Modality, StackManifest } from './manifest.js';

/** The format tag of every head manifest; bump it when the layout changes incompatibly. */
export const HEAD_FORMAT = 'gim-head/1';

/** The embeddings a head was trained on, and so the only ones it can be applied to. */
export interface HeadEncoder {
  /** The stack and version the training embeddings came from. */
  name: string;
  version: number;
  modality: Modality;
  layer: number;
  pooling: Pooling;
  /** Whether each pooled vector was L2-normalised before the head. */
  normalize: boolean;
  /** `embeddingSpaceId(layerDigest, pooling)`: any stack version giving this id fits the head. */
  embeddingSpaceId: string;
}

export interface HeadDataSource {
  /** Where the data came from: a dataset spec, `files:<manifest path>`, ... */
  source: string;
  /** sha256 of the data as its reader defines it (file bytes, or paths, sizes and times). */
  fingerprint: string;
  items: number;
}

export interface HeadManifest {
  format: typeof HEAD_FORMAT;
  /** Head name and version (under `<models>/<encoder.name>/classifiers/<name>/<version>/`). */
  name: string;
  version: number;
  encoder: HeadEncoder;
  /** Class names: output `i` of the head is `classes[i]`. */
  classes: string[];
  /** Length of the feature vectors the head takes. */
  featureDim: number;
  training: HeadTrainingRecord;
  metrics: HeadReport;
  /** The (layer, pooling) candidates scored on validation when the layer was chosen; else null. */
  layerSearch: LayerCandidate[] | null;
  data: HeadDataSource & { test: HeadDataSource | null };
  /** The tfjs backend the head was fitted on. */
  backend: string;
  /** ISO-8601 creation time. */
  createdAt: string;
}

/** How a head is applied to a stack's embeddings, once `bindHead` has accepted the pair. */
export interface HeadBinding {
  layer: number;
  pooling: Pooling;
  normalize: boolean;
}

/**
 * Accepts a head for a stack version only when that version's `layer` under `pooling` is the
 * embedding space the head was trained in (the same function up to that layer, whatever the
 * version number); otherwise a `conflict` saying which space the head needs and which the stack
 * gives.
 */
export function bindHead(
  head: HeadManifest,
  stack: StackManifest,
  spaceDigests: readonly string[],
): HeadBinding {
  const { layer, pooling, normalize } = head.encoder;
  const needs = head.encoder.embeddingSpaceId;
  const headRef = `head '${head.name}@${head.version}'`;
  const trained = `${head.encoder.name}@${head.encoder.version} layer ${layer}, pooling ${pooling}`;
  const stackRef = `${stack.name}@${stack.version}`;
  const refuse = (gives: string, given: string | null): never => {
    throw new GimError(
      'conflict',
      `${headRef} needs embedding space ${needs} (${trained}); ${stackRef} ${gives}: ` +
        `use ${head.encoder.name}@${head.encoder.version} or retrain the head on ${stackRef}`,
      { details: { requiredEmbeddingSpaceId: needs, givenEmbeddingSpaceId: given } },
    );
  };
  if (stack.modality !== head.encoder.modality)
    refuse(`is an ${stack.modality} stack, the head takes ${head.encoder.modality}`, null);
  const digest = spaceDigests[layer - 1];
  if (digest === undefined || layer > stack.modules.length)
    refuse(`has ${stack.modules.length} layers, no layer ${layer}`, null);
  const given = embeddingSpaceId(digest as string, pooling);
  if (given !== needs)
    refuse(`gives embedding space ${given} at layer ${layer}, pooling ${pooling}`, given);
  return { layer, pooling, normalize };
}

/**
 * Runtime check of a head manifest read from disk (or handed to `publish`): the fields the store,
 * `bindHead` and the loaders rely on. Unknown extra fields are kept.
 */
export function checkHeadManifest(
  value: unknown,
  source: string,
  code: GimErrorCode = 'invalid_data',
): HeadManifest {
  const fail = (what: string): never => {
    throw new GimError(code, `${source}: ${what}`);
  };
  if (!isObject(value)) return fail('the manifest is not a JSON object');
  if (value.format !== HEAD_FORMAT)
    fail(`format is ${JSON.stringify(value.format)}, expected '${HEAD_FORMAT}'`);
  nonEmptyString(value, 'name', fail);
  positiveInt(value, 'version', fail);
  const encoder = value.encoder;
  if (!isObject(encoder)) return fail('encoder must be an object');
  const sub = (what: string): never => fail(`encoder.${what}`);
  nonEmptyString(encoder, 'name', sub);
  positiveInt(encoder, 'version', sub);
  positiveInt(encoder, 'layer', sub);
  nonEmptyString(encoder, 'embeddingSpaceId', sub);
  if (encoder.modality !== 'image' && encoder.modality !== 'audio')
    sub(`modality must be 'image' or 'audio'`);
  if (!(POOLINGS as readonly unknown[]).includes(encoder.pooling))
    sub(`pooling must be one of ${POOLINGS.join(', ')}`);
  if (typeof encoder.normalize !== 'boolean') sub('normalize must be a boolean');
  const classes = value.classes;
  if (
    !Array.isArray(classes) ||
    classes.length < 2 ||
    !classes.every((c) => typeof c === 'string' && c !== '') ||
    new Set(classes).size !== classes.length
  )
    fail('classes must be at least 2 distinct non-empty strings');
  positiveInt(value, 'featureDim', fail);
  for (const key of ['training', 'metrics'])
    if (!isObject(value[key])) fail(`${key} must be an object`);
  const data = value.data;
  if (!isObject(data)) return fail('data must be an object');
  nonEmptyString(data, 'source', (what) => fail(`data.${what}`));
  nonEmptyString(data, 'fingerprint', (what) => fail(`data.${what}`));
  nonEmptyString(value, 'backend', fail);
  nonEmptyString(value, 'createdAt', fail);
  return value as unknown as HeadManifest;
}

type Fail = (what: string) => never;

function nonEmptyString(obj: Record<string, unknown>, key: string, fail: Fail): void {
  if (typeof obj[key] !== 'string' || obj[key] === '') fail(`${key} must be a non-empty string`);
}

function positiveInt(obj: Record<string, unknown>, key: string, fail: Fail): void {
  const v = obj[key];
  if (!Number.isInteger(v) || (v as number) < 1) fail(`${key} must be a positive integer`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
