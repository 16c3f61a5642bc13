/**
 * The served OpenAPI document is a valid OpenAPI 3.0 document, with the servers and security
 * schemes its operations need; and the contract that bootApp holds every e2e answer to (see
 * test/helpers/openapi-contract.ts) refuses answers the document does not describe.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import request from 'supertest';
import { selectBackend } from '../../src/gim/backend/index.js';
import {
  type OpenApiDocument,
  OpenApiContract,
  type RecordedResponse,
} from '../helpers/openapi-contract.js';
import { bootApp, publishStack, type TestApp, tinyStack } from './serve-fixtures.js';

describe('the OpenAPI document and the answers (e2e)', () => {
  let dir: string;
  let t: TestApp;
  let document: OpenApiDocument;

  before(async () => {
    await selectBackend({ force: 'cpu' });
    dir = await mkdtemp(join(tmpdir(), 'gim-openapi-'));
    await publishStack(dir, 'tiny', tinyStack(3), ['stable']);
    t = await bootApp({ MODELS_DIR: dir, PRELOAD: 'none', ADMIN_TOKEN: 'openapi-admin-token' });
    document = (await request(t.server).get('/docs-json')).body as OpenApiDocument;
  });

  after(async () => {
    await t?.app.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('the document is valid OpenAPI 3.0 (the specification’s own JSON schema)', async () => {
    assert.match(document.openapi, /^3\.0\.\d$/);
    const result = await new Validator().validate(document);
    assert.deepEqual(result.errors ?? [], [], 'the document breaks the OpenAPI 3.0 schema');
    assert.equal(result.valid, true);
  });

  test('servers are given (relative), and every security requirement names a defined scheme', () => {
    const servers = document.servers as { url: string }[];
    assert.ok(servers.length > 0, 'servers is empty');
    assert.equal(servers[0]?.url, '/');
    const schemes = (document.components as { securitySchemes?: Record<string, unknown> })
      .securitySchemes;
    assert.deepEqual(schemes?.bearer, {
      type: 'http',
      scheme: 'bearer',
      bearerFormat: 'opaque',
      description: 'ADMIN_TOKEN',
    });
    let admin = 0;
    for (const [path, item] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(item)) {
        const security = (operation as { security?: Record<string, unknown>[] }).security ?? [];
        for (const requirement of security) {
          for (const name of Object.keys(requirement)) {
            assert.ok(schemes?.[name], `${method} ${path} needs undefined scheme ${name}`);
          }
        }
        // Every admin operation, and only those, needs the bearer token.
        const needsToken = security.some((r) => 'bearer' in r);
        assert.equal(needsToken, path.startsWith('/admin/'), `${method} ${path}`);
        if (path.startsWith('/admin/')) admin++;
      }
    }
    assert.ok(admin >= 2, `admin operations: ${admin}`);
  });

  test('GET /v1/models/{name} of a version without a parent answers what the schema admits', async () => {
    const res = await request(t.server).get('/v1/models/tiny');
    assert.equal(res.status, 200);
    assert.equal(res.body.parent, null);
    const contract = new OpenApiContract(document);
    const answer = (body: unknown): RecordedResponse => ({
      method: 'GET',
      route: '/v1/models/{name}',
      url: '/v1/models/tiny',
      status: 200,
      contentType: 'application/json; charset=utf-8',
      body: JSON.stringify(body),
    });
    assert.equal(contract.check(answer(res.body)), undefined);
    assert.equal(
      contract.check(answer({ ...res.body, parent: { version: 1, from_module: 2 } })),
      undefined,
    );
    assert.match(contract.check(answer({ ...res.body, parent: 3 })) ?? '', /parent/);
    assert.match(
      contract.check(answer({ ...res.body, parent: { version: 1 } })) ?? '',
      /from_module/,
    );
  });

  test('the contract refuses undocumented statuses, content types, fields and shapes', () => {
    const contract = new OpenApiContract(document);
    const models: RecordedResponse = {
      method: 'GET',
      route: '/v1/models',
      url: '/v1/models',
      status: 200,
      contentType: 'application/json; charset=utf-8',
      body: JSON.stringify({ models: [], unavailable: [] }),
    };
    assert.equal(contract.check(models), undefined);
    assert.match(contract.check({ ...models, status: 418 }) ?? '', /418 is not documented/);
    assert.match(
      contract.check({ ...models, contentType: 'text/html' }) ?? '',
      /text\/html is not documented/,
    );
    assert.match(
      contract.check({
        ...models,
        body: JSON.stringify({ models: [], unavailable: [], extra: 1 }),
      }) ?? '',
      /additional properties/,
    );
    assert.match(contract.check({ ...models, body: '{"models": 1}' }) ?? '', /must be array/);
    const error = { ...models, status: 500, body: JSON.stringify({ error: 'x' }) };
    assert.match(contract.check(error) ?? '', /error_type/);
    const nowhere = { ...models, route: undefined, url: '/nowhere', status: 404 };
    assert.match(contract.check({ ...nowhere, body: '{"error": "x"}' }) ?? '', /error_type/);
    const shaped = JSON.stringify({ error: 'no route', error_type: 'not_found' });
    assert.equal(contract.check({ ...nowhere, body: shaped }), undefined);
    assert.match(contract.check({ ...nowhere, status: 200, body: shaped }) ?? '', /no route/);
    assert.match(
      contract.check({ ...models, route: '/v1/nothing', url: '/v1/nothing' }) ?? '',
      /no operation/,
    );
  });
});
