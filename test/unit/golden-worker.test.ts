import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BackendName } from '../../src/gim/backend/index.js';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { InferenceClient } from '../../src/inference/inference-client.js';
import { testBackends, useBackend } from '../helpers/backends.js';
import { rejectsWith } from '../helpers/gim-error.js';
import { untrainedDraft } from '../helpers/stack-draft.js';
import { tamperWeight } from '../helpers/tamper.js';

const adapter = defaultImageAdapter({ mean: [0.3], std: [0.3] });
const MODELS = new URL('../../models', import.meta.url).pathname;
const plan = await testBackends();
/** Published on wasm, served on another backend: the native one when it loads, else pure JS. */
const SERVING: BackendName = plan.available.includes('tensorflow') ? 'tensorflow' : 'cpu';

let dir = '';
let client: InferenceClient;
const logLines: string[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gim-golden-worker-'));
  const store = new StackStore(dir);
  await useBackend('wasm');
  const stack = EncoderStack.create(adapter, visionModuleConfigs(adapter, [4, 8, 8]), 5);
  const draft = await untrainedDraft(stack, { backend: 'wasm' });
  stack.dispose();
  await store.publish('good', draft);
  await store.publish('old', draft, { golden: false }); // as versions published before golden
  await store.publish('bad', draft);
  await tamperWeight(await store.moduleDir('bad@1', 1));
  await cp(join(MODELS, 'fashion-gim'), join(dir, 'fashion-gim'), { recursive: true });
  client = await InferenceClient.start({
    modelsDir: dir,
    backend: SERVING,
    log: (l) => logLines.push(l),
  });
});

after(async () => {
  await client?.close();
  await rm(dir, { recursive: true, force: true });
});

test(`a stack published on wasm passes the golden check when loaded on ${SERVING}`, async (t) => {
  assert.equal(client.backend.name, SERVING);
  const { golden } = await client.load('good');
  assert.equal(golden.status, 'ok');
  assert.ok(golden.status === 'ok');
  assert.equal(golden.recordedOn, 'wasm');
  assert.equal(golden.checkedOn, SERVING);
  assert.ok(golden.maxRelError < 1e-5, String(golden.maxRelError));
  assert.ok(
    logLines.some((l) => /loaded good@1 .*golden check ok on/.test(l)),
    logLines.join('\n'),
  );

  const demo = await client.load('fashion-gim@1');
  assert.equal(demo.golden.status, 'ok');
  if (demo.golden.status === 'ok')
    t.diagnostic(
      `fashion-gim@1 on ${SERVING}: error ${demo.golden.maxRelError.toExponential(2)}, ` +
        `check ${demo.golden.ms.toFixed(1)} ms per load`,
    );
});

test('a tampered weights.bin is refused at load with golden_mismatch, and nothing stays behind', async () => {
  const before = await client.stats();
  await rejectsWith(
    client.load('bad@1'),
    'golden_mismatch',
    new RegExp(
      `refusing to serve bad@1: golden embeddings differ: max relative error \\S+ at layer \\d, ` +
        `input \\S+ > tolerance 5\\.00e-3; recorded on wasm, computed on ${SERVING}`,
    ),
  );
  assert.ok(logLines.some((l) => /GOLDEN MISMATCH: refusing to serve bad@1/.test(l)));
  await rejectsWith(client.embed('bad', 1, new Float32Array(28 * 28), 1, [1]), 'not_found');
  assert.deepEqual(await client.stats(), before, 'the refused stack was disposed');
  // Not cached as a failure: every load checks again (and fails again).
  await rejectsWith(client.load('bad'), 'golden_mismatch');
});

test('a version without golden embeddings loads, unchecked, and says so', async () => {
  const { golden } = await client.load('old');
  assert.equal(golden.status, 'unchecked');
  assert.ok(golden.status === 'unchecked');
  assert.match(golden.reason, /old@1 has no golden embeddings .*gim golden old@1 --record/);
  assert.ok(logLines.some((l) => /loaded old@1 .*UNCHECKED/.test(l)));
  const { grids } = await client.embed('old', 1, new Float32Array(28 * 28), 1, [3]);
  assert.equal(grids.get(3)!.shape.channels, 8);
});
