import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import {
  batches,
  stratifiedSplit,
  type ImageBatch,
  type ImageDataset,
} from '../../src/gim/data/dataset.js';
import {
  FASHION_MNIST_CLASS_NAMES,
  loadFashionMnist,
  loadIdxDataset,
  parseIdx,
  readIdx,
  writeIdx,
} from '../../src/gim/data/idx.js';
import { decodeImage, openImageFolder } from '../../src/gim/data/image-folder.js';
import { openImageDataset } from '../../src/gim/data/open-dataset.js';
import { gimError } from '../helpers/gim-error.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/fashion-mnist-mini', import.meta.url));

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gim-data-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function collect(ds: ImageDataset, opts: Parameters<typeof batches>[1]) {
  const out: ImageBatch[] = [];
  for await (const b of batches(ds, opts)) out.push(b);
  return out;
}

describe('IDX', () => {
  const data = Uint8Array.from({ length: 3 * 2 * 4 }, (_, i) => (i * 37) % 256);

  for (const gz of [false, true]) {
    test(`round trip (${gz ? 'gzipped' : 'raw'})`, async () => {
      const path = join(tmp, `round-trip-${gz}.idx`);
      await writeIdx(path, data, [3, 2, 4], gz);
      const bytes = await readFile(path);
      assert.equal(bytes[0] === 0x1f && bytes[1] === 0x8b, gz);
      const idx = await readIdx(path);
      assert.equal(idx.dtype, 'uint8');
      assert.deepEqual(idx.dims, [3, 2, 4]);
      assert.deepEqual([...idx.data], [...data]);
    });
  }

  test('reads big-endian int32 data', async () => {
    const bytes = Buffer.from([0, 0, 0x0c, 1, 0, 0, 0, 2, 0, 0, 1, 0, 0xff, 0xff, 0xff, 0xfe]);
    const idx = await parseIdx(bytes, 'ints');
    assert.equal(idx.dtype, 'int32');
    assert.deepEqual([...idx.data], [256, -2]);
  });

  test('truncated, garbage or corrupt input is invalid_data saying what is wrong', async () => {
    const path = join(tmp, 'truncated.idx');
    await writeIdx(path, data, [3, 2, 4], false);
    const raw = await readFile(path);
    await assert.rejects(
      parseIdx(raw.subarray(0, raw.length - 5), 'cut'),
      gimError('invalid_data', /truncated.*need 24 bytes, found 19/),
    );
    await assert.rejects(
      parseIdx(raw.subarray(0, 9), 'cut'),
      gimError('invalid_data', /truncated IDX header/),
    );
    await assert.rejects(
      parseIdx(Buffer.concat([raw, Buffer.from([1])]), 'long'),
      gimError('invalid_data', /trailing/),
    );
    await assert.rejects(
      parseIdx(Buffer.from('hello, world'), 'text'),
      gimError('invalid_data', /magic/),
    );
    await assert.rejects(
      parseIdx(Buffer.from([0, 0, 0x42, 1, 0, 0, 0, 0]), 'odd'),
      gimError('invalid_data', /dtype 0x42/),
    );

    const gzPath = join(tmp, 'truncated.idx.gz');
    await writeIdx(gzPath, data, [3, 2, 4], true);
    const gz = await readFile(gzPath);
    await assert.rejects(
      parseIdx(gz.subarray(0, gz.length - 10), 'gz'),
      gimError('invalid_data', /gzip/),
    );
  });

  test('labels must match the image count and the class names', async () => {
    const images = join(tmp, 'img.idx');
    const labels = join(tmp, 'lab.idx');
    await writeIdx(images, data, [3, 2, 4], false);
    await writeIdx(labels, Uint8Array.from([0, 1]), [2], false);
    await assert.rejects(
      loadIdxDataset(images, labels),
      gimError('invalid_data', /expected 3 labels/),
    );
    await writeIdx(labels, Uint8Array.from([0, 1, 2]), [3], false);
    await assert.rejects(
      loadIdxDataset(images, labels, { classNames: ['a', 'b'] }),
      gimError('invalid_data', /\[0, 2\)/),
    );
    const ds = await loadIdxDataset(images, labels);
    assert.deepEqual(ds.info.classNames, ['0', '1', '2']);
    const batch = await ds.read([2, 0]);
    assert.deepEqual([...batch.labels], [2, 0]);
    assert.equal(batch.images[0], Math.fround((data[16] as number) / 255));
  });

  test('the Fashion-MNIST fixture loads: 600 train, 200 test, 10 balanced classes, pixels in [0, 1]', async () => {
    const train = await openImageDataset(FIXTURE);
    const test = await loadFashionMnist(FIXTURE, 'test');
    assert.equal(train.info.count, 600);
    assert.equal(test.info.count, 200);
    assert.deepEqual(test.info.classNames, FASHION_MNIST_CLASS_NAMES);
    assert.equal(train.info.classNames.length, 10);
    assert.deepEqual([train.info.height, train.info.width, train.info.channels], [28, 28, 1]);

    const all = await train.read(Array.from({ length: 600 }, (_, i) => i));
    assert.equal(all.images.length, 600 * 28 * 28);
    let min = Infinity;
    let max = -Infinity;
    for (const v of all.images) {
      min = Math.min(min, v);
      max = Math.max(max, v);
    }
    assert.equal(min, 0);
    assert.equal(max, 1);
    const perClass = new Array<number>(10).fill(0);
    for (const l of all.labels) perClass[l] = (perClass[l] as number) + 1;
    assert.deepEqual(perClass, new Array<number>(10).fill(60));

    const fp = await train.fingerprint();
    assert.match(fp, /^[0-9a-f]{64}$/);
    assert.equal(await (await openImageDataset(`${FIXTURE}:train`)).fingerprint(), fp);
    assert.notEqual(await test.fingerprint(), fp);

    const named = await openImageDataset('fashion-mnist-test', { fashionMnistDir: FIXTURE });
    assert.equal(named.info.count, 200);
    assert.deepEqual(named.info.classNames, FASHION_MNIST_CLASS_NAMES);
    assert.equal((await openImageDataset(`${FIXTURE}:test`)).info.classNames[0], '0');
  });

  test('missing data is not_found, with the Debian package to install', async () => {
    await assert.rejects(
      openImageDataset('fashion-mnist-test', { fashionMnistDir: join(tmp, 'nowhere') }),
      gimError('not_found', /apt-get install dataset-fashion-mnist/),
    );
    await assert.rejects(
      openImageDataset(join(tmp, 'nowhere')),
      gimError('not_found', /no dataset/),
    );
    await assert.rejects(
      openImageDataset(FIXTURE, { height: 32 }),
      gimError('invalid_argument', /28x28x1/),
    );
  });
});

describe('batches and splits', () => {
  let ds: ImageDataset;
  before(async () => {
    ds = await openImageDataset(FIXTURE);
  });
  const order = (bs: ImageBatch[]): number[] => bs.flatMap((b) => [...b.indices]);

  test('the order is fixed by (seed, epoch) and covers every index once', async () => {
    const a = await collect(ds, { batchSize: 64, seed: 7, epoch: 0 });
    const b = await collect(ds, { batchSize: 64, seed: 7, epoch: 0 });
    const c = await collect(ds, { batchSize: 64, seed: 7, epoch: 1 });
    assert.deepEqual(order(a), order(b));
    assert.notDeepEqual(order(a), order(c));
    for (const run of [a, c]) {
      assert.deepEqual(
        [...order(run)].sort((x, y) => x - y),
        Array.from({ length: 600 }, (_, i) => i),
      );
    }
    assert.equal(a.length, 10);
    assert.equal(a.at(-1)?.n, 600 - 9 * 64);
    assert.deepEqual(a[0]?.labels, (await ds.read(a[0]?.indices ?? [])).labels);
  });

  test('dropLast, no shuffle and subsets', async () => {
    const dropped = await collect(ds, { batchSize: 64, seed: 1, epoch: 0, dropLast: true });
    assert.equal(dropped.length, 9);
    const plain = await collect(ds, {
      batchSize: 4,
      seed: 1,
      epoch: 3,
      shuffle: false,
      subset: [9, 3, 5],
    });
    assert.deepEqual(order(plain), [9, 3, 5]);
    assert.deepEqual(
      plain.map((b) => b.n),
      [3],
    );
    await assert.rejects(
      collect(ds, { batchSize: 4, seed: 1, epoch: 0, subset: [600] }),
      gimError('invalid_argument'),
    );
  });

  test('reads only one batch ahead of the consumer', async () => {
    const reads: number[] = [];
    const counting: ImageDataset = {
      info: ds.info,
      read: (indices) => {
        reads.push(indices.length);
        return ds.read(indices);
      },
      fingerprint: () => ds.fingerprint(),
    };
    for await (const batch of batches(counting, { batchSize: 100, seed: 2, epoch: 0 })) {
      assert.equal(batch.n, 100);
      assert.equal(reads.length, 2);
      break;
    }
  });

  test('stratifiedSplit keeps class proportions', async () => {
    const { labels } = await ds.read(Array.from({ length: 600 }, (_, i) => i));
    const { train, test } = stratifiedSplit(labels, 0.25, 3);
    assert.equal(train.length, 450);
    assert.equal(test.length, 150);
    const perClass = (idx: Int32Array) => {
      const counts = new Array<number>(10).fill(0);
      for (const i of idx)
        counts[labels[i] as number] = (counts[labels[i] as number] as number) + 1;
      return counts;
    };
    assert.deepEqual(perClass(test), new Array<number>(10).fill(15));
    assert.deepEqual(perClass(train), new Array<number>(10).fill(45));
    assert.deepEqual(
      [...train, ...test].sort((a, b) => a - b),
      Array.from({ length: 600 }, (_, i) => i),
    );
    assert.deepEqual(stratifiedSplit(labels, 0.25, 3).test, test);
    assert.notDeepEqual(stratifiedSplit(labels, 0.25, 4).test, test);
    assert.throws(() => stratifiedSplit(labels, 1.5, 3), gimError('invalid_argument'));
  });
});

describe('image folders', () => {
  let root: string;
  const solid = (width: number, height: number, rgb: [number, number, number]) =>
    sharp({
      create: { width, height, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } },
    });

  before(async () => {
    root = join(tmp, 'folder');
    await mkdir(join(root, 'cats'), { recursive: true });
    await mkdir(join(root, 'dogs'), { recursive: true });
    await solid(8, 8, [255, 255, 255])
      .png()
      .toFile(join(root, 'cats', 'a.png'));
    await solid(8, 8, [0, 0, 0])
      .jpeg()
      .toFile(join(root, 'cats', 'b.JPG'));
    await solid(8, 8, [255, 0, 0])
      .webp({ lossless: true })
      .toFile(join(root, 'cats', 'c.webp'));
    await solid(20, 12, [0, 0, 255])
      .png()
      .toFile(join(root, 'dogs', 'big.png')); // resized
    await solid(8, 8, [0, 255, 0])
      .jpeg({ quality: 100 })
      .toFile(join(root, 'dogs', 'e.jpeg'));
    await sharp({
      create: {
        width: 8,
        height: 8,
        channels: 4,
        background: { r: 255, g: 255, b: 255, alpha: 1 },
      },
    })
      .webp({ lossless: true })
      .toFile(join(root, 'dogs', 'f.webp'));
    await writeFile(join(root, 'dogs', 'notes.txt'), 'not an image');
    await writeFile(join(root, 'dogs', '.hidden.png'), 'hidden');
    await writeFile(join(root, 'README.md'), 'files at the root are ignored');
  });

  test('lists classes and files, decodes to the requested shape', async () => {
    const rgb = await openImageFolder(root, { height: 8, width: 8, channels: 3 });
    assert.deepEqual(rgb.info.classNames, ['cats', 'dogs']);
    assert.equal(rgb.info.count, 6);
    const batch = await rgb.read([0, 2, 3, 5]);
    assert.deepEqual([...batch.labels], [0, 0, 1, 1]);
    assert.equal(batch.images.length, 4 * 8 * 8 * 3);
    const pixel = (k: number) => [...batch.images.subarray(k * 192, k * 192 + 3)];
    assert.deepEqual(pixel(0), [1, 1, 1]); // a.png, white
    assert.deepEqual(pixel(1), [1, 0, 0]); // c.webp, red
    assert.deepEqual(pixel(2), [0, 0, 1]); // big.png, blue, resized from 20x12
    assert.deepEqual(pixel(3), [1, 1, 1]); // f.webp, RGBA

    await assert.rejects(openImageDataset(root), gimError('invalid_argument', /height/));
    const grey = await openImageDataset(root, { height: 5, width: 7, channels: 1 });
    const g = await grey.read([1, 5]);
    assert.equal(g.images.length, 2 * 5 * 7);
    assert.ok((g.images[0] as number) < 0.05); // b.JPG, black
    assert.equal(g.images[35], 1); // f.webp, RGBA white
    assert.match(await grey.fingerprint(), /^[0-9a-f]{64}$/);
    assert.equal(await grey.fingerprint(), await rgb.fingerprint());
  });

  test('a corrupt file is invalid_data naming the file', async () => {
    const bad = join(tmp, 'bad-folder');
    await mkdir(join(bad, 'x'), { recursive: true });
    await solid(4, 4, [9, 9, 9])
      .png()
      .toFile(join(bad, 'x', 'good.png'));
    const png = await solid(16, 16, [1, 2, 3]).png().toBuffer();
    await writeFile(join(bad, 'x', 'truncated.png'), png.subarray(0, png.length - 20));
    await writeFile(join(bad, 'x', 'text.jpg'), 'definitely not a jpeg');
    const ds = await openImageFolder(bad, { height: 4, width: 4, channels: 1 });
    assert.equal((await ds.read([0])).n, 1);
    await assert.rejects(ds.read([0, 1]), gimError('invalid_data', /text\.jpg/));
    await assert.rejects(ds.read([2]), gimError('invalid_data', /truncated\.png/));
  });

  test('decodeImage tells unsupported formats from broken images', async () => {
    const opts = { height: 4, width: 4, channels: 3 } as const;
    await assert.rejects(
      decodeImage(Buffer.from('GET / HTTP/1.1\r\n'), opts),
      gimError('unsupported_media'),
    );
    await assert.rejects(
      decodeImage(Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>'), opts),
      gimError('unsupported_media'),
    );
    const png = await solid(32, 32, [1, 2, 3]).png().toBuffer();
    await assert.rejects(decodeImage(png.subarray(0, 40), opts), gimError('invalid_data'));
    await assert.rejects(
      decodeImage(png, { ...opts, maxPixels: 100 }),
      gimError('too_large', /100 pixels/),
    );
    const pixels = await decodeImage(png, opts);
    assert.equal(pixels.length, 4 * 4 * 3);
    assert.deepEqual([...pixels.subarray(0, 3)], [1 / 255, 2 / 255, 3 / 255].map(Math.fround));
  });
});
