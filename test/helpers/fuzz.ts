/**
 * Shared by the fuzz tests (test/unit/fuzz-*.test.ts, test/e2e/fuzz.e2e.test.ts): fast-check
 * settings and the checks every refusal must pass. Each property runs from a fixed seed with a
 * bounded number of runs, so the suite is deterministic and fast; on a failure fast-check prints
 * the seed, the path and the shrunk counterexample (`fc.assert(..., {seed, path})` replays it).
 * To explore further locally: FUZZ_SEED=<n> FUZZ_RUNS_SCALE=<k> npm run test:unit.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GimError, type GimErrorCode } from '../../src/gim/errors.js';

const SCALE = Number(process.env.FUZZ_RUNS_SCALE ?? '1');

/** fast-check parameters: a fixed seed per property, `runs` scaled by FUZZ_RUNS_SCALE. */
export function fuzzParams<T>(seed: number, runs: number): fc.Parameters<T> {
  return {
    seed: process.env.FUZZ_SEED === undefined ? seed : Number(process.env.FUZZ_SEED),
    numRuns: Math.max(1, Math.round(runs * SCALE)),
    // A hung decode fails the property (and is shrunk) rather than stalling the suite.
    timeout: 10_000,
  };
}

/** The longest error message a request may get back, whatever it sent. */
export const MAX_MESSAGE_CHARS = 400;

/**
 * A message fit to send back: bounded, no control characters (a raw echo of request bytes would
 * carry them; quoted values are escaped), and not containing `secret` (a long value from the
 * request that must not be echoed whole).
 */
export function assertCleanMessage(message: unknown, secrets: readonly string[] = []): void {
  assert.equal(typeof message, 'string', 'the message is a string');
  const text = message as string;
  assert.ok(text.length > 0, 'the message is not empty');
  assert.ok(
    text.length <= MAX_MESSAGE_CHARS,
    `the message is ${text.length} characters: ${text.slice(0, 120)}...`,
  );
  // eslint-disable-next-line no-control-regex
  assert.doesNotMatch(text, /[\u0000-\u001f\u007f]/, 'no control characters');
  assert.equal(Buffer.from(text).toString(), text, 'well-formed Unicode (no lone surrogates)');
  for (const secret of secrets) {
    if (secret.length >= 48) assert.ok(!text.includes(secret), 'a long input is not echoed');
  }
}

/** Asserts that `e` is a GimError of one of `codes` with a clean message. */
export function assertDocumentedError(
  e: unknown,
  codes: readonly GimErrorCode[],
  secrets: readonly string[] = [],
): void {
  if (!(e instanceof GimError)) {
    assert.fail(`expected a GimError, got ${e instanceof Error ? e.stack : String(e)}`);
  }
  assert.ok(codes.includes(e.code), `code ${e.code} (${e.message}) not in ${codes.join(', ')}`);
  assertCleanMessage(e.message, secrets);
}

/** Every string in a value (keys included), for `secrets`. */
export function stringsIn(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const v of value) stringsIn(v, out);
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      out.push(k);
      stringsIn(v, out);
    }
  }
  return out;
}
