/**
 * Writes test/fixtures/fashion-mnist-mini/: a class-balanced slice of the real Fashion-MNIST
 * (the first 60 train and 20 test images of each class, in original order), as gzipped IDX files
 * under the standard names. Needs Debian's dataset-fashion-mnist (or a directory as argument 1).
 *
 *   node --import @swc-node/register/esm-register scripts/make-fixtures.ts [fashion-mnist-dir]
 */
import { mkdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  FASHION_MNIST_DEFAULT_DIR,
  IDX_SPLIT_FILES,
  findIdxFile,
  readIdx,
  writeIdx,
} from '../src/gim/data/idx.js';

const PER_CLASS = { train: 60, test: 20 } as const;
const outDir = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  'test',
  'fixtures',
  'fashion-mnist-mini',
);

async function writeSplit(srcDir: string, split: 'train' | 'test'): Promise<void> {
  const files = IDX_SPLIT_FILES[split];
  const [imagesPath, labelsPath] = await Promise.all([
    findIdxFile(srcDir, files.images),
    findIdxFile(srcDir, files.labels),
  ]);
  if (!imagesPath || !labelsPath) {
    throw new Error(
      `Fashion-MNIST ${split} files not found in ${srcDir}: apt-get install dataset-fashion-mnist`,
    );
  }
  const [images, labels] = await Promise.all([readIdx(imagesPath), readIdx(labelsPath)]);
  const [n = 0, h = 0, w = 0] = images.dims;
  const size = h * w;

  // The first PER_CLASS items of each class, kept in their original order.
  const taken = new Map<number, number>();
  const chosen: number[] = [];
  for (let i = 0; i < n; i++) {
    const label = labels.data[i] as number;
    const count = taken.get(label) ?? 0;
    if (count < PER_CLASS[split]) {
      taken.set(label, count + 1);
      chosen.push(i);
    }
  }

  const outImages = new Uint8Array(chosen.length * size); // [m, h, w]
  const outLabels = new Uint8Array(chosen.length);
  chosen.forEach((src, k) => {
    outImages.set(images.data.subarray(src * size, (src + 1) * size), k * size);
    outLabels[k] = labels.data[src] as number;
  });
  const imagesOut = join(outDir, `${files.images}.gz`);
  const labelsOut = join(outDir, `${files.labels}.gz`);
  await writeIdx(imagesOut, outImages, [chosen.length, h, w], true);
  await writeIdx(labelsOut, outLabels, [chosen.length], true);
  for (const path of [imagesOut, labelsOut]) {
    console.log(`${path}: ${chosen.length} items, ${(await stat(path)).size} bytes`);
  }
}

const srcDir = process.argv[2] ?? FASHION_MNIST_DEFAULT_DIR;
await mkdir(outDir, { recursive: true });
await writeSplit(srcDir, 'train');
await writeSplit(srcDir, 'test');
