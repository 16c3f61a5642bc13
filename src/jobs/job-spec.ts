/**
 * A submitted training job's body, checked for shape and turned into the `gim` CLI arguments it
 * stands for: the HTTP API and the CLI stay one code path (the CLI checks ranges and meanings,
 * e.g. a layer the stack lacks, and answers them with exit 2 = a failed job with reason
 * `bad_input`). Dataset paths are confined to the data root. Pure apart from `stat` calls on
 * dataset paths.
 */
import { realpath, stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { EARLY_STOPPING_RULES } from '../gim/classify/early-stopping.js';
import { LOSS_NORMS, LR_SCHEDULES, NEGATIVE_SOURCES } from '../gim/training/config.js';
import { GimError } from '../gim/errors.js';
import { quoteInput } from '../gim/quote-input.js';
import { NAME_RE } from '../gim/store/versioned-dir.js';
import { JOB_KINDS, type JobKind } from './job-record.js';

type FieldKind = 'string' | 'list' | 'number' | 'flag' | 'data';
interface Field {
  flag: string;
  kind: FieldKind;
  /** Allowed values of a string field. */
  choices?: readonly string[];
}
interface CommandShape {
  /** The CLI command words (`train image`). */
  command: readonly string[];
  fields: Record<string, Field>;
  required: readonly string[];
  /** Publishes labels (`--label ...`). */
  labels: boolean;
  /** How the stack is named on the command line: the stack trained, or the stack used. */
  modelFlag: '--name' | '--model';
  /** Accepts `version` / `label` of the stack used (heads, probes). */
  encoderRef: boolean;
}

const TRAIN_COMMON: Record<string, Field> = {
  data: { flag: '--data', kind: 'data' },
  schedule: {
    flag: '--schedule',
    kind: 'string',
    choices: ['parallel', 'sequential', 'end-to-end'],
  },
  epochs: { flag: '--epochs', kind: 'number' },
  batch_size: { flag: '--batch-size', kind: 'number' },
  lr: { flag: '--lr', kind: 'number' },
  lr_schedule: { flag: '--lr-schedule', kind: 'string', choices: LR_SCHEDULES },
  seed: { flag: '--seed', kind: 'number' },
  negatives: { flag: '--negatives', kind: 'number' },
  negatives_from: { flag: '--negatives-from', kind: 'string', choices: NEGATIVE_SOURCES },
  loss_norm: { flag: '--loss-norm', kind: 'string', choices: LOSS_NORMS },
  max_steps_per_epoch: { flag: '--max-steps-per-epoch', kind: 'number' },
  parent: { flag: '--parent', kind: 'string' },
  from_module: { flag: '--from-module', kind: 'number' },
};

const SHAPES: Record<string, CommandShape> = {
  'encoder:image': {
    command: ['train', 'image'],
    required: ['data'],
    labels: true,
    modelFlag: '--name',
    encoderRef: false,
    fields: {
      ...TRAIN_COMMON,
      channels: { flag: '--channels', kind: 'list' },
      strides: { flag: '--strides', kind: 'list' },
      residual_kernels: { flag: '--residual-kernels', kind: 'list' },
      modules: { flag: '--modules', kind: 'number' },
      conv_route: { flag: '--conv-route', kind: 'string', choices: ['conv', 'im2col', 'auto'] },
      height: { flag: '--height', kind: 'number' },
      width: { flag: '--width', kind: 'number' },
      image_channels: { flag: '--image-channels', kind: 'string', choices: ['1', '3'] },
      // The recipe options of `gim train image` (fashion-gim@2: channels; loss_norm is common).
      patch_stride: { flag: '--patch-stride', kind: 'number' },
      offsets: { flag: '--offsets', kind: 'list' },
      directions: { flag: '--directions', kind: 'list' },
      patch_jitter: { flag: '--patch-jitter', kind: 'number' },
      patch_flip: { flag: '--patch-flip', kind: 'flag' },
      patch_brightness: { flag: '--patch-brightness', kind: 'number' },
      patch_contrast: { flag: '--patch-contrast', kind: 'number' },
    },
  },
  'encoder:audio': {
    command: ['train', 'audio'],
    required: ['data'],
    labels: true,
    modelFlag: '--name',
    encoderRef: false,
    fields: {
      ...TRAIN_COMMON,
      channels: { flag: '--channels', kind: 'number' },
      gru_units: { flag: '--gru-units', kind: 'number' },
      window: { flag: '--window', kind: 'number' },
      normalize: { flag: '--normalize', kind: 'string', choices: ['rms', 'none'] },
      hold_out: { flag: '--hold-out', kind: 'number' },
    },
  },
  head: {
    command: ['classifier', 'train'],
    required: ['name', 'data', 'layer'],
    labels: true,
    modelFlag: '--model',
    encoderRef: true,
    fields: {
      name: { flag: '--name', kind: 'string' },
      data: { flag: '--data', kind: 'data' },
      test_data: { flag: '--test-data', kind: 'data' },
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
      early_stopping: {
        flag: '--early-stopping',
        kind: 'string',
        choices: EARLY_STOPPING_RULES,
      },
      seed: { flag: '--seed', kind: 'number' },
    },
  },
  probe: {
    command: ['probe'],
    required: ['data'],
    labels: false,
    modelFlag: '--model',
    encoderRef: true,
    fields: {
      data: { flag: '--data', kind: 'data' },
      test_data: { flag: '--test-data', kind: 'data' },
      layers: { flag: '--layers', kind: 'list' },
      pooling: { flag: '--pooling', kind: 'list' },
      epochs: { flag: '--epochs', kind: 'number' },
      limit: { flag: '--limit', kind: 'number' },
      test_fraction: { flag: '--test-fraction', kind: 'number' },
      seed: { flag: '--seed', kind: 'number' },
      record: { flag: '--record', kind: 'flag' },
    },
  },
};

/** Dataset names that are not paths: the Debian Fashion-MNIST install (open-dataset.ts). */
const NAMED_DATASETS = [
  'fashion-mnist',
  'fashion-mnist-test',
  'fashion-mnist:train',
  'fashion-mnist:test',
];
const SELECTOR_RE = /^([1-9][0-9]{0,8}|[a-z][a-z0-9_-]{0,31})$/;
const LABEL_RE = /^[a-z][a-z0-9_-]{0,31}$/;
const TOP_LEVEL = ['kind', 'model', 'spec', 'timeout_seconds', 'max_resumes'];
const MAX_TIMEOUT_SECONDS = 7 * 86_400;
const MAX_RESUMES = 10;

export interface JobPlanOptions {
  /** Absolute; dataset paths in specs resolve under it. */
  dataRoot: string;
  defaultTimeoutSeconds: number;
  defaultMaxResumes: number;
}

/** A checked job body: what the job will run. */
export interface JobPlan {
  kind: JobKind;
  model: string;
  /** The spec as submitted (fields checked), with `modality` filled in for encoders. */
  spec: Record<string, unknown>;
  /** `gim` arguments, without the runner's (--progress-json, --checkpoint-dir, --resume). */
  args: string[];
  /** An encoder job's promotion: `gim promote` arguments without `--model` (see JobRecord). */
  promoteArgs?: string[];
  timeoutSeconds: number;
  maxResumes: number;
}

const bad = (message: string): never => {
  throw new GimError('invalid_argument', message);
};

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Checks a submitted job body and plans its command. Throws `invalid_argument` (400). */
export async function planJob(body: unknown, opts: JobPlanOptions): Promise<JobPlan> {
  if (!isObject(body)) bad('the body must be a JSON object: {"kind", "model", "spec": {...}}');
  const top = body as Record<string, unknown>;
  for (const key of Object.keys(top))
    if (!TOP_LEVEL.includes(key))
      bad(`unknown field ${quoteInput(key)}: use ${TOP_LEVEL.join(', ')}`);
  const kind = top.kind;
  if (typeof kind !== 'string' || !(JOB_KINDS as readonly string[]).includes(kind))
    bad(`"kind" must be one of ${JOB_KINDS.join(', ')}`);
  const model = top.model;
  if (typeof model !== 'string' || !NAME_RE.test(model))
    bad('"model" must be a stack name: lowercase letters, digits, ".", "_" or "-", at most 64');
  const spec = top.spec ?? {};
  if (!isObject(spec)) bad('"spec" must be a JSON object');
  const fields = { ...(spec as Record<string, unknown>) };

  let args: string[];
  let promoteArgs: string[] | undefined;
  if (kind === 'promote') {
    const version = fields.version;
    if (version === undefined) bad('"spec.version" is required: the version to promote');
    if (!SELECTOR_RE.test(String(version)))
      bad('"spec.version": a version number (or a label) of the stack');
    args = [
      'promote',
      `--model=${model as string}@${String(version)}`,
      ...(await promoteFlags(model as string, fields, 'spec', opts)),
    ];
  } else {
    let shapeKey: string = kind as string;
    if (kind === 'encoder') {
      const modality = fields.modality ?? 'image';
      if (modality !== 'image' && modality !== 'audio')
        bad('"spec.modality" must be image or audio');
      fields.modality = modality;
      shapeKey = `encoder:${String(modality)}`;
      const { promote, ...rest } = fields;
      if (promote !== undefined)
        promoteArgs = await promoteFlags(model as string, promote, 'spec.promote', opts);
      args = [
        ...(SHAPES[shapeKey] as CommandShape).command,
        ...(await commandArgs(SHAPES[shapeKey] as CommandShape, model as string, rest, opts)),
      ];
    } else {
      const shape = SHAPES[shapeKey] as CommandShape;
      args = [...shape.command, ...(await commandArgs(shape, model as string, fields, opts))];
    }
  }
  return {
    kind: kind as JobKind,
    model: model as string,
    spec: fields,
    args,
    ...(promoteArgs ? { promoteArgs } : {}),
    timeoutSeconds: integerField(
      top,
      'timeout_seconds',
      1,
      MAX_TIMEOUT_SECONDS,
      opts.defaultTimeoutSeconds,
    ),
    maxResumes: integerField(top, 'max_resumes', 0, MAX_RESUMES, opts.defaultMaxResumes),
  };
}

function integerField(
  top: Record<string, unknown>,
  key: string,
  min: number,
  max: number,
  fallback: number,
): number {
  const value = top[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
    bad(`"${key}" must be an integer from ${min} to ${max}`);
  return value as number;
}

async function commandArgs(
  shape: CommandShape,
  model: string,
  fields: Record<string, unknown>,
  opts: JobPlanOptions,
): Promise<string[]> {
  const allowed = [
    ...Object.keys(shape.fields),
    ...(shape.encoderRef ? ['version', 'label'] : []),
    ...(shape.labels ? ['labels'] : []),
    ...(shape.modelFlag === '--name' ? ['modality'] : []),
  ];
  for (const key of Object.keys(fields))
    if (!allowed.includes(key))
      bad(`unknown field ${quoteInput(`spec.${key}`)}: use ${allowed.join(', ')}`);
  for (const key of shape.required) if (fields[key] === undefined) bad(`"spec.${key}" is required`);

  let modelArg = model;
  if (shape.encoderRef) {
    if (fields.version !== undefined && fields.label !== undefined)
      bad('give either spec.version or spec.label, not both');
    const ref = fields.version ?? fields.label;
    if (ref !== undefined) {
      if (!SELECTOR_RE.test(String(ref)))
        bad('"spec.version" / "spec.label": a version number or a label');
      modelArg = `${model}@${String(ref)}`;
    }
  }
  // `--flag=value`: a value starting with '-' stays a value.
  const args = [
    `${shape.modelFlag}=${modelArg}`,
    ...(await flagArgs(model, fields, shape.fields, 'spec', opts)),
  ];
  const labels = fields.labels;
  if (labels !== undefined) {
    if (
      !Array.isArray(labels) ||
      labels.length === 0 ||
      !labels.every((l) => typeof l === 'string' && LABEL_RE.test(l))
    )
      bad('"spec.labels" must be a non-empty list of labels (lowercase, at most 32 characters)');
    args.push('--label', ...(labels as string[]));
  }
  return args;
}

/** The `--flag=value` arguments of the `defs` fields present in `fields` (`where`: for messages). */
async function flagArgs(
  model: string,
  fields: Record<string, unknown>,
  defs: Record<string, Field>,
  where: string,
  opts: JobPlanOptions,
): Promise<string[]> {
  const args: string[] = [];
  for (const [key, field] of Object.entries(defs)) {
    const value = fields[key];
    if (value === undefined) continue;
    const must = (what: string): never => bad(`"${where}.${key}" must be ${what}`);
    switch (field.kind) {
      case 'flag':
        if (typeof value !== 'boolean') must('true or false');
        if (value) args.push(field.flag);
        break;
      case 'number':
        if (typeof value !== 'number' || !Number.isFinite(value)) must('a number');
        args.push(`${field.flag}=${String(value)}`);
        break;
      case 'list': {
        const items = Array.isArray(value) ? value : [value];
        if (
          items.length === 0 ||
          !items.every((v) => typeof v === 'string' || typeof v === 'number')
        )
          must('a string, a number or a list of them');
        if (items.some((v) => /[\0,]/.test(String(v)))) must('items without commas');
        args.push(`${field.flag}=${items.map(String).join(',')}`);
        break;
      }
      case 'data':
        if (typeof value !== 'string' || value === '') must('a non-empty string');
        args.push(
          `${field.flag}=${await confineDataPath(value as string, `${where}.${key}`, opts.dataRoot)}`,
        );
        break;
      default:
        if (typeof value !== 'string' || value === '' || value.includes('\0'))
          must('a non-empty string');
        if (field.choices && !field.choices.includes(value as string))
          must(`one of ${field.choices.join(', ')}`);
        if (key === 'parent') {
          // The parent is a version of the same stack (its modules are kept below from_module).
          if (!SELECTOR_RE.test(value as string))
            must('a version number or a label of the same stack');
          args.push(`${field.flag}=${model}@${String(value)}`);
        } else args.push(`${field.flag}=${String(value)}`);
    }
  }
  return args;
}

/** What a promotion may say (a `promote` job's spec; an encoder job's `spec.promote`). */
const PROMOTE_FIELDS = ['label', 'gate', 'retrain_heads', 'dry_run', 'reason'];
const GATE_FIELDS: Record<string, Field> = {
  data: { flag: '--gate-data', kind: 'data' },
  test_data: { flag: '--gate-test-data', kind: 'data' },
  layers: { flag: '--gate-layers', kind: 'list' },
  pooling: { flag: '--gate-pooling', kind: 'list' },
  epochs: { flag: '--gate-epochs', kind: 'number' },
  limit: { flag: '--gate-limit', kind: 'number' },
  seed: { flag: '--gate-seed', kind: 'number' },
  test_fraction: { flag: '--gate-test-fraction', kind: 'number' },
  margin: { flag: '--margin', kind: 'number' },
};
const PROMOTE_FLAGS: Record<string, Field> = {
  label: { flag: '--label', kind: 'string' },
  retrain_heads: { flag: '--retrain-heads', kind: 'flag' },
  dry_run: { flag: '--dry-run', kind: 'flag' },
  reason: { flag: '--reason', kind: 'string' },
};

/** The `gim promote` arguments (without `--model`) of a promotion spec at `where`. */
async function promoteFlags(
  model: string,
  promote: unknown,
  where: string,
  opts: JobPlanOptions,
): Promise<string[]> {
  if (!isObject(promote)) return bad(`"${where}" must be a JSON object`);
  checkKeys(promote, where === 'spec' ? ['version', ...PROMOTE_FIELDS] : PROMOTE_FIELDS, where);
  if (
    promote.label !== undefined &&
    (typeof promote.label !== 'string' || !LABEL_RE.test(promote.label))
  )
    bad(`"${where}.label" must be a label (lowercase, at most 32 characters)`);
  if (typeof promote.reason === 'string' && promote.reason.length > 500)
    bad(`"${where}.reason": at most 500 characters`);
  const args = await flagArgs(model, promote, PROMOTE_FLAGS, where, opts);
  const gate = promote.gate;
  if (gate !== undefined) {
    if (!isObject(gate)) bad(`"${where}.gate" must be a JSON object`);
    checkKeys(gate as Record<string, unknown>, Object.keys(GATE_FIELDS), `${where}.gate`);
    if ((gate as Record<string, unknown>).data === undefined)
      bad(`"${where}.gate.data" is required: the labelled set both versions are probed on`);
    args.push(
      ...(await flagArgs(
        model,
        gate as Record<string, unknown>,
        GATE_FIELDS,
        `${where}.gate`,
        opts,
      )),
    );
  }
  return args;
}

function checkKeys(fields: Record<string, unknown>, allowed: string[], where: string): void {
  for (const key of Object.keys(fields))
    if (!allowed.includes(key))
      bad(`unknown field ${quoteInput(`${where}.${key}`)}: use ${allowed.join(', ')}`);
}

/**
 * A dataset path of a spec, resolved under `dataRoot`. Absolute paths, paths that leave the root
 * (`..`, or a symlink inside it pointing out) and missing paths are refused with a message that
 * repeats only what the caller sent: nothing about the server's filesystem. IDX specs may end in
 * `:train` / `:test`; the Debian Fashion-MNIST names pass as they are.
 */
export async function confineDataPath(
  value: string,
  field: string,
  dataRoot: string,
): Promise<string> {
  if (NAMED_DATASETS.includes(value)) return value;
  const split = /^(.*?)(:train|:test)?$/.exec(value);
  const path = split?.[1] ?? value;
  const suffix = split?.[2] ?? '';
  const refuse = (why: string): never =>
    bad(`"${field}" ${why}: give a path relative to the data root (DATA_ROOT), inside it`);
  if (path.includes('\0')) refuse('is not a path');
  if (isAbsolute(path)) refuse('is an absolute path');
  const root = resolve(dataRoot);
  const full = resolve(root, path);
  if (!inside(root, full)) refuse('leaves the data root');
  let real: string;
  try {
    await stat(full);
    real = await realpath(full);
  } catch {
    return bad(`"${field}": no dataset ${quoteInput(value)} under the data root`);
  }
  let realRoot = root;
  try {
    realRoot = await realpath(root);
  } catch {
    // The root itself is missing: every path under it was refused above.
  }
  if (!inside(realRoot, real)) refuse('leaves the data root');
  return `${full}${suffix}`;
}

function inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}
