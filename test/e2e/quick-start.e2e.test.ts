/**
 * The README's quick start, for real: `npm start` in the checkout (its `prestart` builds dist/,
 * then `node dist/src/main.js`) with nothing configured — no MODELS_DIR, no backend, no preload:
 * the embedded defaults — serves the committed stacks and heads out of the box. A user's first
 * calls: list the models, embed an image, classify images with the shipped head.
 *
 * ci:every-backend: `npm start` picks the best backend installed (native in CI's second pass).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadFashionMnist } from '../../src/gim/data/idx.js';
import { FIXTURE, ROOT, fixturePngs, freePort } from './serve-fixtures.js';

/** Committed 1 s WAV crops of the speakers head's demo voices (`<speaker>-<n>.wav`). */
const DEMO_SPEAKERS = join(ROOT, 'test/fixtures/audio/demo-speakers');
const demoWavs = async () =>
  (await readdir(DEMO_SPEAKERS)).filter((f) => f.endsWith('.wav')).sort();

/** Building dist/ (tsc, ~30 s on 2 idle cores) and booting, on a busy machine. */
const START_TIMEOUT_MS = 240_000;

describe('npm start on the embedded defaults (e2e)', () => {
  let child: ChildProcess;
  let base: string;
  let output = '';

  before(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    // Only what a shell gives any command: none of the service's settings.
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      PORT: String(port),
    };
    child = spawn('npm', ['start'], {
      cwd: ROOT,
      env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      assert.equal(child.exitCode, null, `npm start exited:\n${output.slice(-4000)}`);
      const ready = await fetch(`${base}/health/ready`).catch(() => null);
      if (ready?.status === 200) break;
      assert.ok(
        Date.now() < deadline,
        `not ready after ${START_TIMEOUT_MS} ms:\n${output.slice(-4000)}`,
      );
      await sleep(500);
    }
  });

  after(async () => {
    const group = child?.pid;
    if (group === undefined) return;
    // npm and the service it started: SIGTERM drains and exits (test/e2e/shutdown covers how).
    const alive = () => {
      try {
        process.kill(-group, 0);
        return true;
      } catch {
        return false;
      }
    };
    if (alive()) process.kill(-group, 'SIGTERM');
    for (const deadline = Date.now() + 30_000; alive() && Date.now() < deadline;) await sleep(100);
    if (alive()) process.kill(-group, 'SIGKILL');
  });

  test('lists the shipped stacks and heads', async () => {
    const res = await fetch(`${base}/v1/models`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { models: { name: string }[] };
    const names = body.models.map((m) => m.name);
    assert.ok(names.includes('fashion-gim') && names.includes('speech-gim'), JSON.stringify(body));
    for (const [model, head] of [
      ['fashion-gim', 'clothes'],
      ['speech-gim', 'speakers'],
    ]) {
      const heads = await fetch(`${base}/v1/models/${model}/classifiers`);
      assert.equal(heads.status, 200);
      assert.match(await heads.text(), new RegExp(`"${head}"`));
    }
  });

  test('embeds a posted PNG with the shipped vision stack', async () => {
    const [png] = await fixturePngs(1);
    const res = await fetch(`${base}/v1/models/fashion-gim/embeddings?layer=3&pooling=mean`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body: png,
    });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { results: { embeddings: number[][] }[] };
    const vector = body.results[0]?.embeddings[0] ?? [];
    assert.equal(vector.length, 128, 'layer 3 of fashion-gim@2 (stable) has 128 channels');
    assert.ok(vector.every(Number.isFinite) && vector.some((v) => v !== 0));
  });

  test('embeds a posted WAV with the shipped speech stack', async () => {
    const [file] = await demoWavs();
    const res = await fetch(`${base}/v1/models/speech-gim/embeddings?pooling=mean`, {
      method: 'POST',
      headers: { 'content-type': 'audio/wav' },
      body: await readFile(join(DEMO_SPEAKERS, file as string)),
    });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { results: { embeddings: number[][] }[] };
    const vector = body.results[0]?.embeddings[0] ?? [];
    assert.equal(vector.length, 64, 'speech-gim (stable: version 4) has 64 channels');
    assert.ok(vector.every(Number.isFinite) && vector.some((v) => v !== 0));
  });

  test('classifies posted WAVs with the shipped speakers head', async () => {
    const files = await demoWavs();
    const form = new FormData();
    for (const f of files)
      form.append(f, new Blob([await readFile(join(DEMO_SPEAKERS, f))], { type: 'audio/wav' }), f);
    const res = await fetch(`${base}/v1/models/speech-gim/classifiers/speakers/classify?top_k=1`, {
      method: 'POST',
      body: form,
    });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { results: { label: string }[][] };
    const top = body.results.map((r) => r[0]?.label);
    const correct = top.filter((l, i) => l === files[i]?.replace(/-\d+\.wav$/, '')).length;
    // 95.0% on the 80 crops it never saw (its manifest), these 20 among them (see
    // shipped-models.e2e.test.ts for the bound).
    assert.ok(correct >= 15, `${correct} of ${files.length} correct: ${top.join(', ')}`);
  });

  test('classifies posted PNGs with the shipped clothes head', async () => {
    const count = 20;
    const pngs = await fixturePngs(count);
    const ds = await loadFashionMnist(FIXTURE, 'test');
    const { labels } = await ds.read(Int32Array.from({ length: count }, (_, i) => i));
    const form = new FormData();
    pngs.forEach((png, i) =>
      form.append(`i${i}`, new Blob([png], { type: 'image/png' }), `${i}.png`),
    );
    const res = await fetch(`${base}/v1/models/fashion-gim/classifiers/clothes/classify?top_k=1`, {
      method: 'POST',
      body: form,
    });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { results: { label: string }[][] };
    const top = body.results.map((r) => r[0]?.label);
    const correct = top.filter((l, i) => l === ds.info.classNames[labels[i] as number]).length;
    // clothes@2: 89.5% on the 10,000 test images (its manifest); fewer than 14 of 20 at that rate
    // has probability < 0.5%. Fixed weights and images: the count is deterministic.
    assert.ok(correct >= 14, `${correct} of ${count} correct: ${top.join(', ')}`);
  });
});
