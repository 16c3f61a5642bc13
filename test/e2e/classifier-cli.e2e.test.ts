import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { gim, stripesPng } from '../helpers/cli.js';
import { untrainedDraft } from '../helpers/stack-draft.js';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { selectBackend } from '../../src/gim/backend/index.js';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { HeadStore } from '../../src/gim/store/head-store.js';
import { Rng } from '../../src/gim/random.js';

describe('gim classifier / classify', () => {
  let dir = '';
  let models = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-classifier-cli-'));
    models = join(dir, 'models');
    await selectBackend({ force: 'wasm' });
    // tiny@1 and tiny@2: two random stacks (other weights), published as training would.
    const adapter = defaultImageAdapter({ mean: [0.5], std: [0.3] });
    const store = new StackStore(models);
    for (const seed of [1, 2]) {
      const stack = EncoderStack.create(adapter, visionModuleConfigs(adapter, [4, 8, 8]), seed);
      await store.publish('tiny', await untrainedDraft(stack, { seed }));
      stack.dispose();
    }
    // A class folder to train on, and a CSV list of other images to test on.
    const rng = new Rng(7);
    for (const [c, name] of ['horizontal', 'vertical'].entries()) {
      await mkdir(join(dir, 'train', name), { recursive: true });
      for (let i = 0; i < 12; i++) await stripesPng(join(dir, 'train', name, `${i}.png`), c, rng);
    }
    await mkdir(join(dir, 'test'));
    const rows = ['path,label'];
    for (let i = 0; i < 6; i++) {
      await stripesPng(join(dir, 'test', `${i}.png`), i % 2, rng);
      rows.push(`${i}.png,${i % 2 === 0 ? 'horizontal' : 'vertical'}`);
    }
    await writeFile(join(dir, 'test', 'list.csv'), `${rows.join('\n')}\n`);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('train prints the report and publishes; list shows it; classify ranks the classes', async () => {
    const common = ['--models-dir', models];
    const trained = await gim([
      'classifier',
      'train',
      '--model',
      'tiny@1',
      '--layer',
      '2',
      '--data',
      join(dir, 'train'),
      '--test-data',
      join(dir, 'test', 'list.csv'),
      '--name',
      'stripes',
      '--epochs',
      '80',
      '--val-fraction',
      '0.25',
      '--class-weights',
      'balanced',
      '--label',
      'latest',
      'stable',
      ...common,
    ]);
    assert.match(trained.stdout, /head stripes@1 on tiny@1 layer 2 mean \(dim 8\), 2 classes/);
    assert.match(trained.stdout, /test: accuracy 100\.00%/);
    assert.match(trained.stdout, /class\s+precision\s+recall\s+f1\s+support/);
    assert.match(trained.stdout, /confusion \(rows: true class/);
    assert.match(trained.stdout, /published head stripes@1 of tiny \(labels: latest, stable\)/);

    const listed = JSON.parse(
      (await gim(['classifier', 'list', '--model', 'tiny', '--json', ...common])).stdout,
    );
    assert.equal(listed.length, 1);
    assert.deepEqual(
      [listed[0].name, listed[0].version, listed[0].labels, listed[0].testAccuracy],
      ['stripes', 1, ['latest', 'stable'], 1],
    );
    const manifest = await new HeadStore(models).loadManifest('tiny', 'stripes@stable');
    assert.deepEqual(manifest.training.classWeights, 'balanced');
    assert.equal(manifest.data.test?.items, 6);

    const files = [0, 1].map((i) => join(dir, 'test', `${i}.png`));
    const out = JSON.parse(
      (
        await gim([
          'classify',
          ...files,
          '--model',
          'tiny@1',
          '--head',
          'stripes',
          '--top-k',
          '2',
          ...common,
        ])
      ).stdout,
    );
    assert.deepEqual(
      [out.model, out.version, out.head, out.headVersion],
      ['tiny', 1, 'stripes', 1],
    );
    assert.deepEqual(
      out.items.map((it: { predictions: { label: string }[] }) => it.predictions[0]!.label),
      ['horizontal', 'vertical'],
    );
    for (const item of out.items as { predictions: { score: number }[] }[]) {
      assert.equal(item.predictions.length, 2);
      assert.ok(item.predictions[0]!.score >= item.predictions[1]!.score);
      assert.ok(Math.abs(item.predictions[0]!.score + item.predictions[1]!.score - 1) < 1e-5);
    }

    // tiny@2 has other weights: the head is refused, exit 2, naming both embedding spaces.
    await assert.rejects(
      gim(['classify', files[0]!, '--model', 'tiny@2', '--head', 'stripes', ...common]),
      (e: { code: number; stderr: string }) => {
        assert.equal(e.code, 2);
        assert.match(e.stderr, /head 'stripes@1' needs embedding space [0-9a-f]{32}/);
        assert.match(e.stderr, /tiny@2 gives embedding space [0-9a-f]{32}.*\(conflict\)/);
        return true;
      },
    );
  });
});
