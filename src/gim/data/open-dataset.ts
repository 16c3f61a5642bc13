/**
 * One string names a dataset everywhere (CLI flags, training configs, manifests):
 *
 *   fashion-mnist | fashion-mnist:train   Fashion-MNIST train split (Debian's dataset-fashion-mnist)
 *   fashion-mnist-test | fashion-mnist:test   its test split
 *   <dir>[:train|:test]                   a folder of IDX files with the standard MNIST names
 *                                         (classes "0", "1", ... unless it is fashionMnistDir;
 *                                         default split train)
 *   <dir>                                 an image folder, one sub-folder per class
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { GimError } from '../errors.js';
import type { ImageDataset } from './dataset.js';
import {
  FASHION_MNIST_DEFAULT_DIR,
  IDX_SPLIT_FILES,
  findIdxFile,
  loadFashionMnist,
  loadIdxSplit,
} from './idx.js';
import { openImageFolder } from './image-folder.js';

export interface OpenDatasetOptions {
  /**
   * The size images are decoded to. Required for image folders; for IDX data (which has its own
   * size and is never resized) a mismatch is an error.
   */
  height?: number;
  width?: number;
  channels?: 1 | 3;
  maxPixels?: number;
  fingerprint?: 'metadata' | 'content';
  /** Where the `fashion-mnist` names look. Default FASHION_MNIST_DEFAULT_DIR. */
  fashionMnistDir?: string;
}

export const DATASET_SPEC_HELP =
  "'fashion-mnist', 'fashion-mnist-test', a directory of IDX files (optionally ':train' or " +
  "':test'), or an image folder with one sub-folder per class";

const FASHION_MNIST_NAMES: Record<string, 'train' | 'test'> = {
  'fashion-mnist': 'train',
  'fashion-mnist:train': 'train',
  'fashion-mnist-test': 'test',
  'fashion-mnist:test': 'test',
};

export async function openImageDataset(
  spec: string,
  opts: OpenDatasetOptions = {},
): Promise<ImageDataset> {
  const fashionDir = opts.fashionMnistDir ?? FASHION_MNIST_DEFAULT_DIR;
  let ds: ImageDataset;
  const named = Object.hasOwn(FASHION_MNIST_NAMES, spec) ? FASHION_MNIST_NAMES[spec] : undefined;
  if (named) {
    ds = await loadFashionMnist(fashionDir, named);
  } else if ((await isDirectory(spec)) && !(await isIdxDirectory(spec))) {
    ds = await openFolder(spec, opts);
  } else {
    const { dir, split } = await idxLocation(spec);
    // The Fashion-MNIST directory named by path still gets its class names.
    ds =
      resolve(dir) === resolve(fashionDir)
        ? await loadFashionMnist(dir, split)
        : await loadIdxSplit(dir, split);
  }
  checkSize(ds, opts);
  return ds;
}

/** `<dir>` (train split) or `<dir>:train|test`, where dir holds IDX files. */
async function idxLocation(spec: string): Promise<{ dir: string; split: 'train' | 'test' }> {
  if (await isDirectory(spec)) return { dir: spec, split: 'train' };
  const m = /^(.+):(train|test)$/.exec(spec);
  const dir = m?.[1];
  if (dir && (await isDirectory(dir)) && (await isIdxDirectory(dir))) {
    return { dir, split: m?.[2] === 'test' ? 'test' : 'train' };
  }
  throw new GimError('not_found', `no dataset '${spec}': expected ${DATASET_SPEC_HELP}`);
}

async function openFolder(root: string, opts: OpenDatasetOptions): Promise<ImageDataset> {
  const { height, width, channels } = opts;
  if (height === undefined || width === undefined || channels === undefined) {
    throw new GimError(
      'invalid_argument',
      `${root} is an image folder: give the height, width and channels to decode it to`,
    );
  }
  return openImageFolder(root, {
    height,
    width,
    channels,
    maxPixels: opts.maxPixels,
    fingerprint: opts.fingerprint,
  });
}

function checkSize(ds: ImageDataset, opts: OpenDatasetOptions): void {
  const { info } = ds;
  const mismatch = (['height', 'width', 'channels'] as const).filter(
    (key) => opts[key] !== undefined && opts[key] !== info[key],
  );
  if (mismatch.length > 0) {
    throw new GimError(
      'invalid_argument',
      `${info.source} holds ${info.height}x${info.width}x${info.channels} images, ` +
        `not ${opts.height ?? info.height}x${opts.width ?? info.width}x${opts.channels ?? info.channels}`,
    );
  }
}

async function isIdxDirectory(dir: string): Promise<boolean> {
  const stems = [IDX_SPLIT_FILES.train.images, IDX_SPLIT_FILES.test.images];
  for (const stem of stems) if (await findIdxFile(dir, stem)) return true;
  return false;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
