import { GimError, type GimErrorCode } from '../errors.js';
import { checkGoldenRecord } from '../golden/golden-record.js';
import { STACK_FORMAT, type StackManifest } from './manifest.js';

/**
 * Runtime check of a `StackManifest` read from disk (or handed to `publish`). It checks the format
 * tag and the fields the store and the loaders rely on; adapter and module configs are checked
 * only for being objects with a `kind`, their owners validate the rest. Unknown extra fields are
 * kept, so a newer writer's additions do not break an older reader.
 */
export function checkStackManifest(
  value: unknown,
  source: string,
  code: GimErrorCode = 'invalid_data',
): StackManifest {
  const fail = (what: string): never => {
    throw new GimError(code, `${source}: ${what}`);
  };
  if (!isObject(value)) return fail('the manifest is not a JSON object');
  if (value.format !== STACK_FORMAT) {
    fail(`format is ${JSON.stringify(value.format)}, expected '${STACK_FORMAT}'`);
  }
  requireString(value, 'name', fail);
  requirePositiveInt(value, 'version', fail);
  if (value.modality !== 'image' && value.modality !== 'audio') {
    fail(`modality must be 'image' or 'audio'`);
  }
  requireKind(value, 'adapter', fail);
  requireString(value, 'backend', fail);
  requireString(value, 'createdAt', fail);

  if (!Array.isArray(value.modules) || value.modules.length === 0) {
    fail('modules must be a non-empty array');
  }
  (value.modules as unknown[]).forEach((m, i) => {
    const at = `modules[${i}]`;
    if (!isObject(m)) return fail(`${at} is not an object`);
    const sub = (what: string): never => fail(`${at}.${what}`);
    if (m.index !== i + 1) fail(`${at}.index must be ${i + 1}`);
    if (m.dir !== `module-${i + 1}`) fail(`${at}.dir must be 'module-${i + 1}'`);
    requireKind(m, 'config', sub);
    requireIntArray(m, 'outputShape', sub);
    requireIntArray(m, 'gridShape', sub);
    requirePositiveInt(m, 'embeddingDim', sub);
    if (m.finalLoss !== null && !Number.isFinite(m.finalLoss)) {
      fail(`${at}.finalLoss must be a finite number or null`);
    }
  });

  const training = value.training;
  if (!isObject(training)) return fail('training must be an object');
  if (!['parallel', 'sequential', 'end-to-end'].includes(training.schedule as string)) {
    fail(`training.schedule must be 'parallel', 'sequential' or 'end-to-end'`);
  }
  if (!isObject(training.config)) fail('training.config must be an object');
  const trainingField = (what: string): never => fail(`training.${what}`);
  for (const key of ['seed', 'epochs', 'steps', 'durationSeconds']) {
    if (!Number.isFinite(training[key])) trainingField(`${key} must be a number`);
  }
  // Optional: absent on trained versions (and on every version published before it existed).
  if (training.untrained !== undefined) {
    if (training.untrained !== true) trainingField('untrained must be true when present');
    if (training.epochs !== 0 || training.steps !== 0)
      trainingField('epochs and steps must be 0 on an untrained version');
    if ((value.modules as { finalLoss: unknown }[]).some((m) => m.finalLoss !== null))
      fail('every module of an untrained version must have finalLoss null');
    if (value.parent !== null) fail('an untrained version has no parent');
  }

  const data = value.data;
  if (!isObject(data)) return fail('data must be an object');
  requireString(data, 'source', (what) => fail(`data.${what}`));
  requireString(data, 'fingerprint', (what) => fail(`data.${what}`));
  if (!Number.isInteger(data.items)) fail('data.items must be an integer');

  const parent = value.parent;
  if (parent !== null) {
    if (!isObject(parent)) return fail('parent must be an object or null');
    requirePositiveInt(parent, 'version', (what) => fail(`parent.${what}`));
    requirePositiveInt(parent, 'fromModule', (what) => fail(`parent.${what}`));
  }
  // Optional: versions published before golden embeddings have none.
  if (value.golden !== undefined) {
    checkGoldenRecord(value.golden, (value.modules as unknown[]).length, (what) =>
      fail(`golden ${what}`),
    );
  }
  return value as unknown as StackManifest;
}

type Fail = (what: string) => never;

function requireString(obj: Record<string, unknown>, key: string, fail: Fail): void {
  if (typeof obj[key] !== 'string' || obj[key] === '') fail(`${key} must be a non-empty string`);
}

function requirePositiveInt(obj: Record<string, unknown>, key: string, fail: Fail): void {
  const v = obj[key];
  if (!Number.isInteger(v) || (v as number) < 1) fail(`${key} must be a positive integer`);
}

function requireIntArray(obj: Record<string, unknown>, key: string, fail: Fail): void {
  const v = obj[key];
  if (!Array.isArray(v) || !v.every((d) => Number.isInteger(d) && d >= 0)) {
    fail(`${key} must be an array of non-negative integers`);
  }
}

function requireKind(obj: Record<string, unknown>, key: string, fail: Fail): void {
  const v = obj[key];
  if (!isObject(v) || typeof v.kind !== 'string') fail(`${key} must be an object with a kind`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
