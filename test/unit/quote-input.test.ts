import assert from 'node:assert/strict';
import { test } from 'node:test';
import { QUOTE_MAX_CHARS, quoteInput } from '../../src/gim/quote-input.js';

test('quoteInput escapes quotes, control and non-ASCII characters', () => {
  assert.equal(quoteInput('fashion-gim'), '"fashion-gim"');
  assert.equal(quoteInput('a"b\\c'), '"a\\"b\\\\c"');
  assert.equal(quoteInput('a\u0000\n\u00e9\u2603\ud83d'), '"a\\u0000\\u000a\\u00e9\\u2603\\ud83d"');
  assert.equal(quoteInput(42), '"42"');
  assert.equal(quoteInput([1, 'x']), '"[1,\\"x\\"]"');
});

test('quoteInput cuts long values and says how long they were', () => {
  const long = 'x'.repeat(101);
  const quoted = quoteInput(long);
  assert.equal(quoted, `"${'x'.repeat(QUOTE_MAX_CHARS)}..." (101 characters)`);
  assert.equal(quoteInput(long, 200), `"${long}"`);
  // Whatever it is given, the result is short printable ASCII.
  const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString('latin1');
  assert.match(quoteInput(binary), /^[\x20-\x7e]{1,300}$/);
});
