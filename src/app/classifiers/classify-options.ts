import { GimError } from '../../gim/errors.js';
import { type OptionSource, parseEmbedOptions } from '../embeddings/embedding-options.js';
import { quoteInput } from '../../gim/quote-input.js';

/** The options of a classify request, from the query string, JSON fields or multipart fields. */
export const CLASSIFY_OPTION_NAMES = ['version', 'label', 'head_version', 'top_k'] as const;

export interface ClassifyOptions {
  /** Encoder version or label; undefined: the version the head was trained on. */
  selector?: string;
  /** Head version or label; undefined: the head's label stable, else latest. */
  headSelector?: string;
  /** Classes per item, most probable first; undefined: 5 (both capped at the class count). */
  topK?: number;
}

export const DEFAULT_TOP_K = 5;

const HEAD_SELECTOR_RE = /^([1-9][0-9]{0,8}|[a-z][a-z0-9_-]{0,31})$/;

/**
 * Parses classify options given in any of `sources`. `version`/`label` go through the embedding
 * options parser (same rules and messages); an unknown option, or one given in two sources, is
 * refused.
 */
export function parseClassifyOptions(sources: OptionSource[]): ClassifyOptions {
  const own = new Map<string, { where: string; value: unknown }>();
  const encoderSources = sources.map(({ where, values }) => {
    const rest: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(values)) {
      if (value === undefined) continue;
      if (key === 'head_version' || key === 'top_k') {
        const before = own.get(key);
        if (before !== undefined) {
          throw new GimError(
            'invalid_argument',
            `option ${quoteInput(key)} is given in both the ${before.where} and the ${where}: give it once`,
          );
        }
        own.set(key, { where, value });
      } else if (!(CLASSIFY_OPTION_NAMES as readonly string[]).includes(key)) {
        throw new GimError(
          'invalid_argument',
          `unknown option ${quoteInput(key)} in the ${where}: use ${CLASSIFY_OPTION_NAMES.join(', ')}`,
        );
      } else {
        rest[key] = value;
      }
    }
    return { where, values: rest };
  });
  const { selector } = parseEmbedOptions(encoderSources, ['version', 'label']);
  const headVersion = own.get('head_version')?.value;
  const topK = own.get('top_k')?.value;
  return {
    selector,
    headSelector: headVersion === undefined ? undefined : parseHeadSelector(headVersion),
    topK: topK === undefined ? undefined : parseTopK(topK),
  };
}

function parseHeadSelector(value: unknown): string {
  const text = typeof value === 'number' ? String(value) : value;
  if (typeof text !== 'string' || !HEAD_SELECTOR_RE.test(text)) {
    throw new GimError(
      'invalid_argument',
      `bad head_version ${quoteInput(value)}: a version number or a label (such as stable)`,
    );
  }
  return text;
}

function parseTopK(value: unknown): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : NaN;
  const ok = typeof value === 'number' || (typeof value === 'string' && /^\d+$/.test(value));
  if (!ok || !Number.isSafeInteger(n) || n < 1) {
    throw new GimError(
      'invalid_argument',
      `bad top_k ${quoteInput(value)}: a positive integer (capped at the class count)`,
    );
  }
  return n;
}
