/**
 * Every way the service can refuse a request answers in its error shape, `{"error": message,
 * "error_type": code}`, never echoing the request's bytes: the answers Fastify's router and Node's
 * HTTP parser would give on their own (sent here as raw bytes over a socket), unknown routes and
 * methods, and bodies of a media type a JSON route does not take.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { bootApp, type TestApp } from './serve-fixtures.js';

const TOKEN = 'error-shape-admin-token';
/** Request timeouts of the test server (Node checks them every CHECK_MS). */
const HEADERS_TIMEOUT_MS = 600;
const CHECK_MS = 50;

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Sends `bytes` on a new connection and reads one response, until the server closes or 3 s. */
async function exchange(port: number, bytes: Buffer | string): Promise<RawResponse> {
  const received = await new Promise<Buffer>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(), 3000);
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    socket.on('connect', () => socket.write(bytes));
    socket.on('timeout', () => reject(new Error('no answer')));
  });
  const end = received.indexOf('\r\n\r\n');
  assert.ok(end > 0, `no HTTP response: ${JSON.stringify(received.toString('latin1'))}`);
  const [statusLine, ...lines] = received.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine ?? '')?.[1]);
  const headers = Object.fromEntries(
    lines.map((line) => {
      const colon = line.indexOf(':');
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
    }),
  );
  const length = Number(headers['content-length']);
  assert.ok(Number.isInteger(length), `no Content-Length: ${statusLine}`);
  return { status, headers, body: received.subarray(end + 4, end + 4 + length) };
}

/** The body is exactly `{error, error_type}` with that type, and holds none of `echoes`. */
function assertErrorShape(
  res: RawResponse | request.Response,
  status: number,
  errorType: string,
  echoes: (string | Buffer)[] = [],
): { error: string; error_type: string } {
  // supertest's `text` is the body as received; its `body` is parsed.
  const raw = 'text' in res ? Buffer.from(res.text) : res.body;
  assert.equal(res.status, status, raw.toString());
  assert.match(res.headers['content-type'] ?? '', /^application\/json/);
  const body = JSON.parse(raw.toString('utf8')) as { error: string; error_type: string };
  assert.deepEqual(Object.keys(body).sort(), ['error', 'error_type']);
  assert.equal(body.error_type, errorType, body.error);
  assert.equal(typeof body.error, 'string');
  assert.ok(body.error.length > 10, body.error);
  for (const echo of echoes) {
    assert.equal(raw.includes(echo), false, `the answer echoes ${JSON.stringify(String(echo))}`);
  }
  return body;
}

describe('the error shape on every refusal (e2e)', () => {
  let dir: string;
  let t: TestApp;
  let port: number;
  const raw = (bytes: Buffer | string): Promise<RawResponse> => exchange(port, bytes);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-error-shape-'));
    t = await bootApp({ MODELS_DIR: dir, PRELOAD: 'none', ADMIN_TOKEN: TOKEN, GIM_BACKEND: 'cpu' });
    // Short request timeouts, read by Node when the server starts listening.
    t.server.headersTimeout = HEADERS_TIMEOUT_MS;
    t.server.requestTimeout = HEADERS_TIMEOUT_MS * 2;
    // Not in @types/node 20, but read by Node 20 when listening starts (setupConnectionsTracking).
    Object.assign(t.server, { connectionsCheckingInterval: CHECK_MS });
    await new Promise<void>((resolve) => t.server.listen(0, '127.0.0.1', resolve));
    port = (t.server.address() as AddressInfo).port;
  });

  after(async () => {
    await t?.app.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('a name, version or head over 100 characters reaches the name check (400), quoted and cut', async () => {
    const long = 'x'.repeat(101);
    for (const path of [
      `/v1/models/${long}`,
      `/v1/models/${long}/versions/1`,
      `/v1/models/${long}/classifiers/${long}`,
      `/v2/models/${long}/ready`,
    ]) {
      const res = await request(t.server).get(path);
      const body = assertErrorShape(res, 400, 'invalid_argument', [long.slice(0, 41)]);
      assert.match(body.error, /1-64 of a-z 0-9/);
      assert.match(body.error, /\(101 characters\)/);
    }
    const res = await request(t.server).get(`/v1/models/a/versions/${long}`);
    assertErrorShape(res, 400, 'invalid_argument', [long.slice(0, 41)]);
  });

  test('names with control or non-ASCII characters come back escaped', async () => {
    const res = await request(t.server).get('/v1/models/a%00%E2%98%83b');
    const body = assertErrorShape(res, 400, 'invalid_argument', ['\u2603', '\u0000']);
    assert.ok(body.error.includes('"a\\u0000\\u2603b"'), body.error);
  });

  test('raw bytes the HTTP parser refuses: 400 in the shape, Connection: close', async () => {
    const snowman = Buffer.from([0xe2, 0x98, 0x83]);
    const cases: [string, Buffer | string, RegExp][] = [
      [
        'non-ASCII bytes in the path',
        Buffer.concat([
          Buffer.from('GET /v1/models/'),
          snowman,
          Buffer.from(' HTTP/1.1\r\nHost: x\r\n\r\n'),
        ]),
        /percent-encoded/,
      ],
      ['a bare space in the path', 'GET /v1/models/a b HTTP/1.1\r\nHost: x\r\n\r\n', /HTTP\/1\.1/],
      ['an unknown method', 'FROB /v1/models HTTP/1.1\r\nHost: x\r\n\r\n', /GET, HEAD and POST/],
      ['a bad header name', 'GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n', /header/],
      [
        'a Content-Length that is not a number',
        'POST /v2/models/a/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n',
        /Content-Length/,
      ],
      [
        'Content-Length with Transfer-Encoding',
        'POST /v2/models/a/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n' +
          'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
        /Transfer-Encoding/,
      ],
      [
        'a malformed chunk',
        'POST /v2/models/a/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
          'Transfer-Encoding: chunked\r\n\r\nzz\r\n',
        /chunked/,
      ],
      ['HTTP/2 without TLS', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', /HTTP\/1\.1/],
    ];
    for (const [what, bytes, message] of cases) {
      const res = await raw(bytes);
      const body = assertErrorShape(res, 400, 'bad_request', [snowman, 'FROB', 'Bad Name']);
      assert.match(body.error, message, what);
      assert.equal(res.headers.connection, 'close', what);
    }
  });

  test('headers over the limit: 431; headers that never end: 408', async () => {
    const big = await raw(
      `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
    );
    assertErrorShape(big, 431, 'too_large', ['aaaaaaaa']);
    assert.equal(big.headers.connection, 'close');
    const long = await raw(`GET /v1/models?q=${'b'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assertErrorShape(long, 431, 'too_large', ['bbbbbbbb']);

    const slow = await raw('GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n');
    const body = assertErrorShape(slow, 408, 'request_timeout');
    assert.match(body.error, /in time/);
    assert.equal(slow.headers.connection, 'close');
  });

  test('the router: bad percent-encoding 400, unknown path 404, other method 405 with Allow', async () => {
    const bad = await request(t.server).get('/v1/models/%zz%E0%A4');
    assertErrorShape(bad, 400, 'bad_request', ['%zz']);

    const nowhere = `/nowhere/${'y'.repeat(300)}`;
    const missing = await request(t.server).get(nowhere);
    assertErrorShape(missing, 404, 'not_found', ['y'.repeat(81)]);

    const del = await request(t.server).delete('/v1/models');
    assertErrorShape(del, 405, 'method_not_allowed');
    assert.equal(del.headers.allow, 'GET, HEAD');
    const put = await request(t.server).put('/v2/models/a/infer').send({});
    assertErrorShape(put, 405, 'method_not_allowed');
    assert.equal(put.headers.allow, 'POST');
  });

  test('Node’s own answers: no Host, an Expect it cannot meet, CONNECT', async () => {
    assertErrorShape(await raw('GET /v1/models HTTP/1.1\r\n\r\n'), 400, 'bad_request');
    const expect = await raw('GET /v1/models HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n');
    assertErrorShape(expect, 417, 'expectation_failed', ['tea']);
    const proxy = await raw('CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n');
    assertErrorShape(proxy, 405, 'method_not_allowed', ['example.org']);
    assert.equal(proxy.headers.connection, 'close');
  });

  test('bodies the parsers refuse: malformed Content-Type 415, empty or invalid JSON 400', async () => {
    const post = (type: string, body: string) =>
      request(t.server).post('/v2/models/a/infer').set('Content-Type', type).send(body);
    assertErrorShape(await post(';;;', '{}'), 415, 'unsupported_media');
    assertErrorShape(await post('application/json', ''), 400, 'bad_request');
    const invalid = await post('application/json', '{"inputs": \u00ff');
    assertErrorShape(invalid, 400, 'bad_request', ['\u00ff']);
  });

  test('a route that takes JSON answers 415 to any other type', async () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0x00]);
    const infer = (type: string, body: string | Buffer) =>
      request(t.server).post('/v2/models/a/infer').set('Content-Type', type).send(body);
    for (const res of [
      await infer('application/x-www-form-urlencoded', 'a=1&b=2'),
      await infer('application/octet-stream', png),
      await infer('text/plain', 'hello'),
      await request(t.server)
        .post('/v2/models/a/versions/1/infer')
        .set('Content-Type', 'image/png')
        .send(png),
    ]) {
      const body = assertErrorShape(res, 415, 'unsupported_media', [png.subarray(0, 4), 'a=1']);
      assert.match(body.error, /application\/json/);
    }
    // Without a Content-Type too, and JSON still passes (to the model lookup: no stack `a`).
    const none = await request(t.server).post('/v2/models/a/infer');
    assertErrorShape(none, 415, 'unsupported_media');
    assertErrorShape(await infer('application/json', '{}'), 404, 'not_found');

    const admin = (path: string) =>
      request(t.server)
        .post(`/admin/v1/models/a/${path}`)
        .set('Authorization', `Bearer ${TOKEN}`)
        .set('Content-Type', 'image/png')
        .send(png);
    for (const path of ['classifiers', 'probe']) {
      const body = assertErrorShape(await admin(path), 415, 'unsupported_media', [
        png.subarray(0, 4),
      ]);
      assert.match(body.error, /application\/json/);
    }
    // The token is checked first: without it, a 401 whatever the body.
    const anonymous = await request(t.server)
      .post('/admin/v1/models/a/probe')
      .set('Content-Type', 'image/png')
      .send(png);
    assertErrorShape(anonymous, 401, 'unauthorized');
  });

  test('unknown field names in a JSON body come back escaped and cut', async () => {
    const key = `\u0001\u00e9${'k'.repeat(100)}`;
    const res = await request(t.server)
      .post('/admin/v1/models/a/probe')
      .set('Authorization', `Bearer ${TOKEN}`)
      .send({ [key]: 1, data: 'x' });
    const body = assertErrorShape(res, 400, 'invalid_argument', [
      '\u0001',
      '\u00e9',
      'k'.repeat(41),
    ]);
    // The route's body is the probe job's spec: the field is named as such.
    assert.ok(body.error.includes('"spec.\\u0001\\u00e9kkk'), body.error);
  });
});
