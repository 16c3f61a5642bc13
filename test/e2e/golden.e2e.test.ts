import 'reflect-metadata';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { INestApplication } from '@nestjs/common';
import request from 'supertest';
import { useBackend, testBackends } from '../helpers/backends.js';
import { gim } from '../helpers/cli.js';
import { tamperWeight } from '../helpers/tamper.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { untrainedDraft } from '../helpers/stack-draft.js';
import { bootApp, fixturePngs, publishStack, tinyStack, until } from './serve-fixtures.js';

await testBackends();

describe('golden embeddings (e2e): a tampered PRELOAD stack keeps the service unready', () => {
  let modelsDir: string;
  let app: INestApplication;
  let server: Server;
  let png: Buffer;

  before(async () => {
    modelsDir = await mkdtemp(join(tmpdir(), 'gim-golden-e2e-'));
    await useBackend('wasm'); // published (golden recorded) on wasm
    const stack = tinyStack(9);
    await publishStack(modelsDir, 'good', stack, ['latest']);
    await publishStack(modelsDir, 'bad', stack, ['latest']);
    stack.dispose();
    await tamperWeight(join(modelsDir, 'bad', '1', 'module-1'));
    png = (await fixturePngs(1))[0]!;
    ({ app, server } = await bootApp({ MODELS_DIR: modelsDir, PRELOAD: 'bad' }));
  });

  after(async () => {
    await app?.close();
    if (modelsDir) await rm(modelsDir, { recursive: true, force: true });
  });

  test('/health/ready is 503 naming the stack, layer, error, tolerance and backends', async () => {
    let res!: request.Response;
    await until('the warm-up to fail', async () => {
      res = await request(server).get('/health/ready');
      return !/worker is starting|warming up/.test(res.body.error as string);
    });
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.equal(res.body.error_type, 'not_ready');
    assert.match(
      res.body.error,
      /^warm-up failed: refusing to serve bad@1: golden embeddings differ: max relative error \S+ at layer \d, input \S+ > tolerance 5\.00e-3; recorded on wasm, computed on wasm/,
    );
  });

  test('a request to that stack answers golden_mismatch (503); another stack is served', async () => {
    const bad = await request(server)
      .post('/v1/models/bad/embeddings')
      .set('content-type', 'image/png')
      .send(png);
    assert.equal(bad.status, 503, JSON.stringify(bad.body));
    assert.equal(bad.body.error_type, 'golden_mismatch');
    assert.match(bad.body.error, /refusing to serve bad@1: .*tolerance 5\.00e-3/);

    const good = await request(server)
      .post('/v1/models/good/embeddings')
      .set('content-type', 'image/png')
      .send(png);
    assert.equal(good.status, 200, JSON.stringify(good.body));
    assert.equal(good.body.results[0].dim, 8);
  });
});

describe('gim golden (CLI)', () => {
  let modelsDir: string;

  before(async () => {
    modelsDir = await mkdtemp(join(tmpdir(), 'gim-golden-cli-'));
    await useBackend('wasm');
    const stack = tinyStack(4);
    const store = new StackStore(modelsDir);
    await store.publish('old', await untrainedDraft(stack), { golden: false });
    await store.publish('bad', await untrainedDraft(stack));
    stack.dispose();
    await tamperWeight(join(modelsDir, 'bad', '1', 'module-1'));
  });

  after(() => rm(modelsDir, { recursive: true, force: true }));

  /** `gim golden ...` in the test's models directory: exit code and output. */
  async function golden(...args: string[]) {
    try {
      const { stdout, stderr } = await gim(['golden', ...args, '--models-dir', modelsDir]);
      return { code: 0, stdout, stderr };
    } catch (e) {
      const { code, stdout, stderr } = e as { code: number; stdout: string; stderr: string };
      return { code, stdout, stderr };
    }
  }

  test('--record adds them to an old version, once; --check passes, and fails on a tampered one', async () => {
    const manifestFile = join(modelsDir, 'old', '1', 'manifest.json');
    const [recorded, tampered] = await Promise.all([
      golden('old@1', '--record'),
      golden('bad', '--check'),
    ]);
    assert.equal(recorded.code, 0, recorded.stderr);
    assert.match(
      recorded.stdout,
      /recorded golden embeddings of old@1 on wasm: 4 inputs x 3 layers/,
    );
    assert.equal(JSON.parse(await readFile(manifestFile, 'utf8')).golden.backend, 'wasm');

    assert.equal(tampered.code, 1, tampered.stdout + tampered.stderr);
    assert.match(tampered.stdout, /^layer\s+dim\s+max rel error\s+worst input$/m);
    assert.match(tampered.stdout, /MISMATCH/);
    assert.match(tampered.stderr, /gim: bad@1: golden embeddings differ: .* \(golden_mismatch\)/);

    const [again, checked] = await Promise.all([
      golden('old@1', '--record'),
      golden('old', '--check'),
    ]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /old@1 has golden embeddings already .*--force \(conflict\)/);
    assert.equal(checked.code, 0, checked.stderr);
    assert.match(checked.stdout, /^3\s+8\s+0\.00e\+0\s+\S+\s+ok$/m);
    assert.match(checked.stdout, /^ok: golden embeddings match/m);
  });
});
