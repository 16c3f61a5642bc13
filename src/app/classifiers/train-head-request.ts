import { GimError } from '../../gim/errors.js';
import { quoteInput } from '../../gim/quote-input.js';

/**
 * Bodies of the admin routes that run a `gim` command, checked for shape and turned into its
 * arguments. Ranges and meanings (a layer the stack lacks, a data spec that does not open) are the
 * CLI's to check: it answers them as it does on a terminal.
 */
type Kind = 'string' | 'list' | 'number' | 'flag';
interface CommandBody {
  fields: Record<string, { flag: string; kind: Kind }>;
  required: string[];
  /** `labels`: publish labels (`--label ...`), for commands that publish. */
  labels: boolean;
}

/** `POST /admin/v1/models/{name}/classifiers` → `gim classifier train`. */
export const TRAIN_HEAD_BODY: CommandBody = {
  required: ['name', 'data', 'layer'],
  labels: true,
  fields: {
    name: { flag: '--name', kind: 'string' },
    data: { flag: '--data', kind: 'string' },
    test_data: { flag: '--test-data', kind: 'string' },
    layer: { flag: '--layer', kind: 'list' },
    pooling: { flag: '--pooling', kind: 'list' },
    normalize: { flag: '--normalize', kind: 'flag' },
    epochs: { flag: '--epochs', kind: 'number' },
    batch_size: { flag: '--batch-size', kind: 'number' },
    lr: { flag: '--lr', kind: 'number' },
    l2: { flag: '--l2', kind: 'number' },
    class_weights: { flag: '--class-weights', kind: 'list' },
    val_fraction: { flag: '--val-fraction', kind: 'number' },
    patience: { flag: '--patience', kind: 'number' },
    seed: { flag: '--seed', kind: 'number' },
  },
};

/** `POST /admin/v1/models/{name}/probe` → `gim probe` (the layer sweep). */
export const PROBE_BODY: CommandBody = {
  required: ['data'],
  labels: false,
  fields: {
    data: { flag: '--data', kind: 'string' },
    test_data: { flag: '--test-data', kind: 'string' },
    layers: { flag: '--layers', kind: 'list' },
    pooling: { flag: '--pooling', kind: 'list' },
    epochs: { flag: '--epochs', kind: 'number' },
    limit: { flag: '--limit', kind: 'number' },
    test_fraction: { flag: '--test-fraction', kind: 'number' },
    seed: { flag: '--seed', kind: 'number' },
  },
};

const ENCODER = ['version', 'label'];
const SELECTOR_RE = /^([1-9][0-9]{0,8}|[a-z][a-z0-9_-]{0,31})$/;
const LABEL_RE = /^[a-z][a-z0-9_-]{0,31}$/;

/** The command's arguments (without --models-dir, --backend, --json) for a body. */
export function commandArgs(spec: CommandBody, model: string, body: unknown): string[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new GimError(
      'invalid_argument',
      `the body must be a JSON object with ${spec.required.map((k) => `"${k}"`).join(', ')}, ...`,
    );
  const fields = body as Record<string, unknown>;
  const allowed = [...Object.keys(spec.fields), ...ENCODER, ...(spec.labels ? ['labels'] : [])];
  for (const key of Object.keys(fields))
    if (!allowed.includes(key))
      throw new GimError(
        'invalid_argument',
        `unknown field ${quoteInput(key)}: use ${allowed.join(', ')}`,
      );
  for (const key of spec.required)
    if (fields[key] === undefined) throw new GimError('invalid_argument', `"${key}" is required`);
  if (fields.version !== undefined && fields.label !== undefined)
    throw new GimError('invalid_argument', 'give either version or label, not both');
  const encoder = fields.version ?? fields.label;
  if (encoder !== undefined && !SELECTOR_RE.test(String(encoder)))
    throw new GimError('invalid_argument', `bad stack version or label ${quoteInput(encoder)}`);

  // `--flag=value`: a value starting with '-' stays a value.
  const args = [`--model=${encoder === undefined ? model : `${model}@${String(encoder)}`}`];
  for (const [key, { flag, kind }] of Object.entries(spec.fields)) {
    const value = fields[key];
    if (value === undefined) continue;
    const bad = (what: string): never => {
      throw new GimError('invalid_argument', `"${key}" must be ${what}`);
    };
    if (kind === 'flag') {
      if (typeof value !== 'boolean') bad('true or false');
      if (value) args.push(flag);
    } else if (kind === 'number') {
      if (typeof value !== 'number' || !Number.isFinite(value)) bad('a number');
      args.push(`${flag}=${String(value)}`);
    } else if (kind === 'list') {
      const items = Array.isArray(value) ? value : [value];
      if (items.length === 0 || !items.every((v) => typeof v === 'string' || typeof v === 'number'))
        bad('a string, a number or a list of them');
      args.push(`${flag}=${items.map(String).join(',')}`);
    } else {
      if (typeof value !== 'string' || value === '') bad('a non-empty string');
      args.push(`${flag}=${String(value)}`);
    }
  }
  const labels = fields.labels;
  if (labels !== undefined) {
    if (
      !Array.isArray(labels) ||
      labels.length === 0 ||
      !labels.every((l) => typeof l === 'string' && LABEL_RE.test(l))
    )
      throw new GimError('invalid_argument', '"labels" must be a non-empty list of labels');
    args.push('--label', ...(labels as string[]));
  }
  return args;
}
