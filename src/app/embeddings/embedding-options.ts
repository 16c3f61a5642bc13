import { type Pooling, parsePooling } from '../../gim/encoders/pooling.js';
import { GimError } from '../../gim/errors.js';
import { quoteInput } from '../../gim/quote-input.js';

/**
 * The options of an embedding request, from the query string, JSON body fields, multipart text
 * fields or KServe `parameters`. Unknown options and bad values are refused (400) rather than
 * ignored: a typo must not silently give the default.
 */
export const EMBED_OPTION_NAMES = ['version', 'label', 'layer', 'pooling', 'normalize'] as const;
export type EmbedOptionName = (typeof EMBED_OPTION_NAMES)[number];

/** A layer as asked for: a 1-based index, or the stack's last layer. */
export type LayerSelector = number | 'last';

export interface EmbedOptions {
  /** A version number or label; undefined: the default version (label stable, else latest). */
  selector?: string;
  layers: LayerSelector[] | 'all';
  pooling: Pooling;
  normalize: boolean;
}

export interface OptionSource {
  /** Where the values came from, for messages: `query string`, `body`, `parameters`. */
  where: string;
  values: Record<string, unknown>;
}

const LABEL_RE = /^[a-z][a-z0-9_-]{0,31}$/;
const LAYER_HELP = 'use 1..K, last, all, or a comma-separated list such as 1,last';

/** Parses options given in any of `sources`; an option given in two sources is refused. */
export function parseEmbedOptions(
  sources: OptionSource[],
  allowed: readonly EmbedOptionName[] = EMBED_OPTION_NAMES,
): EmbedOptions {
  const raw = new Map<string, unknown>();
  const seen = new Map<string, string>();
  for (const { where, values } of sources) {
    for (const [key, value] of Object.entries(values)) {
      if (value === undefined) continue;
      if (!(allowed as readonly string[]).includes(key)) {
        throw new GimError(
          'invalid_argument',
          `unknown option ${quoteInput(key)} in the ${where}: use ${allowed.join(', ')}`,
        );
      }
      const before = seen.get(key);
      if (before !== undefined) {
        throw new GimError(
          'invalid_argument',
          `option ${quoteInput(key)} is given in both the ${before} and the ${where}: give it once`,
        );
      }
      seen.set(key, where);
      raw.set(key, value);
    }
  }

  const version = raw.get('version');
  const label = raw.get('label');
  if (version !== undefined && label !== undefined) {
    throw new GimError('invalid_argument', 'give either version or label, not both');
  }
  return {
    selector:
      version !== undefined
        ? parseVersion(version)
        : label !== undefined
          ? parseLabel(label)
          : undefined,
    layers: raw.has('layer') ? parseLayerOption(raw.get('layer')) : ['last'],
    pooling: raw.has('pooling') ? parsePooling(single('pooling', raw.get('pooling'))) : 'mean',
    normalize: raw.has('normalize') ? parseBoolean('normalize', raw.get('normalize')) : false,
  };
}

/** 1-based layer numbers, ascending and unique; a layer the stack lacks is `not_found`. */
export function resolveLayers(layers: EmbedOptions['layers'], depth: number): number[] {
  if (layers === 'all') return Array.from({ length: depth }, (_, i) => i + 1);
  const resolved = layers.map((l) => (l === 'last' ? depth : l));
  const missing = resolved.filter((l) => l > depth);
  if (missing.length > 0) {
    throw new GimError(
      'not_found',
      `layer ${missing.join(', ')} does not exist: this stack has layers 1..${depth}`,
    );
  }
  return [...new Set(resolved)].sort((a, b) => a - b);
}

/** `3`, `"1,last"`, `["1", "last"]` (a repeated query parameter), `[1, 3]`, `"all"`. */
export function parseLayerOption(value: unknown): LayerSelector[] | 'all' {
  const parts: unknown[] = Array.isArray(value)
    ? value.flatMap((v) => (typeof v === 'string' ? v.split(',') : [v]))
    : typeof value === 'string'
      ? value.split(',')
      : [value];
  if (parts.length === 1 && typeof parts[0] === 'string' && parts[0].trim() === 'all') {
    return 'all';
  }
  if (parts.length === 0) throw new GimError('invalid_argument', `no layer given: ${LAYER_HELP}`);
  return parts.map((part) => {
    const text = typeof part === 'string' ? part.trim() : part;
    if (text === 'last') return 'last';
    const n = typeof text === 'number' ? text : typeof text === 'string' ? Number(text) : NaN;
    const ok =
      Number.isSafeInteger(n) && n >= 1 && (typeof text === 'number' || /^\d+$/.test(String(text)));
    if (!ok) throw new GimError('invalid_argument', `bad layer ${quoteInput(part)}: ${LAYER_HELP}`);
    return n;
  });
}

function parseVersion(value: unknown): string {
  const text = typeof value === 'number' ? String(value) : single('version', value);
  if (!/^[1-9][0-9]{0,8}$/.test(text)) {
    throw new GimError(
      'invalid_argument',
      `bad version ${quoteInput(value)}: a version is a positive integer (use label for a label)`,
    );
  }
  return text;
}

function parseLabel(value: unknown): string {
  const text = single('label', value);
  if (!LABEL_RE.test(text)) {
    throw new GimError(
      'invalid_argument',
      `bad label ${quoteInput(value)}: 1-32 of a-z 0-9 _ - starting with a letter`,
    );
  }
  return text;
}

function parseBoolean(name: string, value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new GimError('invalid_argument', `bad ${name} ${quoteInput(value)}: use true or false`);
}

function single(name: string, value: unknown): string {
  if (typeof value !== 'string') {
    throw new GimError('invalid_argument', `${name} must be given once, as a string`);
  }
  return value;
}
