import assert from 'node:assert/strict';
import { GimError, type GimErrorCode } from '../../src/gim/errors.js';

/** An `assert.rejects`/`assert.throws` matcher: a GimError with `code` (and a message matching). */
export function gimError(code: GimErrorCode, pattern?: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof GimError, `expected a GimError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

/** Asserts that `p` rejects with a GimError of `code` (and a message matching). */
export async function rejectsWith(
  p: Promise<unknown>,
  code: GimErrorCode,
  pattern?: RegExp,
): Promise<void> {
  await assert.rejects(p, gimError(code, pattern));
}
