/**
 * Stacks damaged on disk (labels.json not JSON, a manifest of the wrong schema, a missing weights
 * file, a missing module directory) beside a good one, all PRELOADed: the replica gets ready and
 * serves the good stack, lists and answers the damaged ones as 503 `model_unavailable` naming the
 * file (relative to the models directory), and logs each once at warm-up.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { INestApplication } from '@nestjs/common';
import request from 'supertest';
import { useBackend } from '../helpers/backends.js';
import { gim } from '../helpers/cli.js';
import { bootApp, fixturePngs, publishStack, tinyStack, waitReady } from './serve-fixtures.js';

const DAMAGED: Record<string, RegExp> = {
  badlabels:
    /^stack 'badlabels' is unavailable: badlabels\/labels\.json is not valid JSON; fix or remove that file \(without it, the highest version is the default\)$/,
  badmanifest:
    /^badmanifest@1 is unavailable: badmanifest\/1\/manifest\.json: format is "gim-stack\/0", expected 'gim-stack\/1'$/,
  nomodule: /^nomodule@1 is unavailable: nomodule\/1\/module-3\/model\.json does not exist$/,
  noweights: /^noweights@1 is unavailable: noweights\/1\/module-2\/weights\.bin does not exist$/,
};

describe('stacks damaged on disk (e2e)', () => {
  let modelsDir: string;
  let app: INestApplication;
  let server: Server;
  let png: Buffer;
  const logged: string[] = [];
  const write = process.stderr.write.bind(process.stderr);

  before(async () => {
    modelsDir = await mkdtemp(join(tmpdir(), 'gim-damaged-'));
    await useBackend('wasm');
    const stack = tinyStack(5);
    for (const name of ['good', ...Object.keys(DAMAGED)]) {
      await publishStack(modelsDir, name, stack, ['latest']);
    }
    stack.dispose();
    await writeFile(join(modelsDir, 'badlabels', 'labels.json'), '{"latest": ');
    const manifestFile = join(modelsDir, 'badmanifest', '1', 'manifest.json');
    const manifest = JSON.parse(await readFile(manifestFile, 'utf8'));
    await writeFile(manifestFile, JSON.stringify({ ...manifest, format: 'gim-stack/0' }));
    await rm(join(modelsDir, 'noweights', '1', 'module-2', 'weights.bin'));
    await rm(join(modelsDir, 'nomodule', '1', 'module-3'), { recursive: true });
    png = (await fixturePngs(1))[0]!;
    // The service logs errors (only) to stderr: keep what it says, and pass it on.
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
      logged.push(String(chunk));
      return write(chunk, ...rest);
    }) as typeof process.stderr.write;
    ({ app, server } = await bootApp({ MODELS_DIR: modelsDir }));
  });

  after(async () => {
    process.stderr.write = write;
    await app?.close();
    if (modelsDir) await rm(modelsDir, { recursive: true, force: true });
  });

  test('the replica gets ready with the good stack; /health/ready lists the damaged ones and why', async () => {
    await waitReady(server, 60_000);
    const res = await request(server).get('/health/ready');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body.models, ['good@1']);
    const unavailable = res.body.unavailable as { ref: string; error: string }[];
    assert.deepEqual(
      unavailable.map((u) => u.ref),
      Object.keys(DAMAGED),
    );
    for (const { ref, error } of unavailable) {
      assert.match(error, DAMAGED[ref]!);
      assert.ok(!error.includes(modelsDir), error);
    }
    // One clear error line per damaged stack, naming it and the file.
    for (const [name, pattern] of Object.entries(DAMAGED)) {
      const lines = logged.filter((l) => l.includes(`not serving ${name}: `));
      assert.equal(lines.length, 1, `log lines about ${name}: ${JSON.stringify(lines)}`);
      assert.match(lines[0]!, new RegExp(pattern.source.slice(1, -1)));
    }
  });

  test('GET /v1/models lists the good stack, and the damaged ones apart with the reason', async () => {
    const res = await request(server).get('/v1/models');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(
      res.body.models.map((m: { name: string }) => m.name),
      ['good'],
    );
    const unavailable = res.body.unavailable as {
      name: string;
      error: string;
      error_type: string;
    }[];
    assert.deepEqual(
      unavailable.map((u) => u.name),
      Object.keys(DAMAGED),
    );
    for (const { name, error, error_type } of unavailable) {
      assert.equal(error_type, 'model_unavailable');
      assert.match(error, DAMAGED[name]!);
    }
  });

  test('gim models lists the good stack and each damaged one with the reason, exit 0', async () => {
    const { stdout } = await gim(['models', '--models-dir', modelsDir]);
    const lines = stdout.trim().split('\n');
    assert.ok(
      lines.some((l) => l.startsWith('good@1 [latest]  image')),
      stdout,
    );
    for (const [name, pattern] of Object.entries(DAMAGED)) {
      const line = lines.find((l) => l.startsWith(name)) ?? '';
      const at = name === 'badlabels' ? name : `${name}@1`;
      assert.ok(line.startsWith(`${at}  UNAVAILABLE: `), stdout);
      assert.match(line.slice(`${at}  UNAVAILABLE: `.length), pattern);
    }
  });

  test('requests to a damaged stack are 503 model_unavailable; the good one is served', async () => {
    const good = await request(server)
      .post('/v1/models/good/embeddings')
      .set('content-type', 'image/png')
      .send(png);
    assert.equal(good.status, 200, JSON.stringify(good.body));
    for (const [name, pattern] of Object.entries(DAMAGED)) {
      for (const res of [
        await request(server)
          .post(`/v1/models/${name}/embeddings`)
          .set('content-type', 'image/png')
          .send(png),
        await request(server).get(`/v1/models/${name}`),
        await request(server).get(`/v2/models/${name}/ready`),
      ]) {
        assert.equal(res.status, 503, `${name}: ${JSON.stringify(res.body)}`);
        assert.deepEqual(Object.keys(res.body).sort(), ['error', 'error_type']);
        assert.equal(res.body.error_type, 'model_unavailable');
        assert.match(res.body.error, pattern);
      }
    }
  });

  test('damaged labels do not stop a version by number; fixed labels serve again at once', async () => {
    const byNumber = await request(server)
      .post('/v1/models/badlabels/embeddings?version=1')
      .set('content-type', 'image/png')
      .send(png);
    assert.equal(byNumber.status, 200, JSON.stringify(byNumber.body));
    assert.equal(byNumber.body.version, 1);

    await writeFile(join(modelsDir, 'badlabels', 'labels.json'), '{"latest": 1}\n');
    const fixed = await request(server)
      .post('/v1/models/badlabels/embeddings')
      .set('content-type', 'image/png')
      .send(png);
    assert.equal(fixed.status, 200, JSON.stringify(fixed.body));
    const list = await request(server).get('/v1/models');
    assert.deepEqual(
      list.body.unavailable.map((u: { name: string }) => u.name),
      ['badmanifest', 'nomodule', 'noweights'],
    );
  });
});
