import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HttpException } from '@nestjs/common';
import { toClientHttpError, toHttpError } from '../../src/app/errors/http-error.filter.js';
import { GimError } from '../../src/gim/errors.js';

test('a body cut off by the client is a 499 cancelled, not a 500', () => {
  // What Node's IncomingMessage emits when the connection closes mid-body.
  const aborted = Object.assign(new Error('aborted'), { code: 'ECONNRESET' });
  assert.deepEqual(toHttpError(aborted), {
    status: 499,
    body: { error: 'the client closed the connection', error_type: 'cancelled' },
  });
  assert.equal(toHttpError(new Error('boom')).status, 500);
});

test('Fastify errors, bare or wrapped by Nest, get their status and a message of ours', () => {
  const badUrl = Object.assign(new Error("'/v1/models/%zz' is not a valid url component"), {
    code: 'FST_ERR_BAD_URL',
    statusCode: 400,
  });
  for (const error of [badUrl, new HttpException(badUrl.message, 400, { cause: badUrl })]) {
    const { status, body } = toHttpError(error);
    assert.equal(status, 400);
    assert.equal(body.error_type, 'bad_request');
    assert.doesNotMatch(body.error, /%zz/);
  }
});

test('parser errors on the raw socket: known codes, and 400 for any other', () => {
  const overflow = Object.assign(new Error('Header overflow'), { code: 'HPE_HEADER_OVERFLOW' });
  assert.equal(toClientHttpError(overflow).status, 431);
  const timeout = Object.assign(new Error('timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' });
  assert.equal(toClientHttpError(timeout).body.error_type, 'request_timeout');
  const other = Object.assign(new Error('?'), { code: 'HPE_SOMETHING_NEW' });
  assert.deepEqual(
    [toClientHttpError(other).status, toClientHttpError(other).body.error_type],
    [400, 'bad_request'],
  );
});

test('messages leave with control characters escaped and at most 1000 characters', () => {
  const { body } = toHttpError(
    new GimError('invalid_argument', `bad \u0000\u001b[31m ${'x'.repeat(2000)}`),
  );
  assert.ok(body.error.startsWith('bad \\u0000\\u001b[31m xxx'), body.error.slice(0, 40));
  assert.ok(body.error.length <= 1003, String(body.error.length));
});
