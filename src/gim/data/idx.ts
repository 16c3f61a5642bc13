/**
 * The IDX format of MNIST and Fashion-MNIST: a magic number (0, 0, dtype, ndims), ndims big-endian
 * uint32 dimensions, then the data, big-endian, row-major. Files may be gzipped.
 */
import { createHash } from 'node:crypto';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { GimError } from '../errors.js';
import {
  checkIndices,
  type ImageBatch,
  type ImageDataset,
  type ImageDatasetInfo,
} from './dataset.js';

const gunzipAsync = promisify(gunzip);
const gzipAsync = promisify(gzip);

export type IdxDtype = 'uint8' | 'int8' | 'int16' | 'int32' | 'float32' | 'float64';
export type IdxData =
  Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;

export interface IdxArray {
  dtype: IdxDtype;
  dims: number[];
  data: IdxData;
}

const DTYPES: Record<number, { dtype: IdxDtype; bytes: number }> = {
  0x08: { dtype: 'uint8', bytes: 1 },
  0x09: { dtype: 'int8', bytes: 1 },
  0x0b: { dtype: 'int16', bytes: 2 },
  0x0c: { dtype: 'int32', bytes: 4 },
  0x0d: { dtype: 'float32', bytes: 4 },
  0x0e: { dtype: 'float64', bytes: 8 },
};
const MAX_DIMS = 8;

export const FASHION_MNIST_DEFAULT_DIR = '/usr/share/datasets/fashion-mnist';
export const FASHION_MNIST_CLASS_NAMES: readonly string[] = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];
/** The standard (MNIST, Fashion-MNIST) file stems; each may be stored with or without `.gz`. */
export const IDX_SPLIT_FILES = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte' },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte' },
} as const;

/** Parses IDX bytes (gzipped or not). `source` names the data in error messages. */
export async function parseIdx(bytes: Uint8Array, source: string): Promise<IdxArray> {
  let raw = bytes;
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      raw = await gunzipAsync(bytes);
    } catch (e) {
      throw new GimError('invalid_data', `${source}: corrupt or truncated gzip data (${msg(e)})`, {
        cause: e,
      });
    }
  }
  if (raw.length < 4) {
    throw new GimError('invalid_data', `${source}: ${raw.length} bytes is too short for IDX`);
  }
  if (raw[0] !== 0 || raw[1] !== 0) {
    throw new GimError('invalid_data', `${source}: not an IDX file (bad magic number)`);
  }
  const code = raw[2] as number;
  const type = DTYPES[code];
  if (!type) {
    throw new GimError('invalid_data', `${source}: unknown IDX dtype 0x${hex(code)}`);
  }
  const ndims = raw[3] as number;
  if (ndims < 1 || ndims > MAX_DIMS) {
    throw new GimError('invalid_data', `${source}: IDX header claims ${ndims} dimensions`);
  }
  const headerBytes = 4 + 4 * ndims;
  if (raw.length < headerBytes) {
    throw new GimError('invalid_data', `${source}: truncated IDX header`);
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const dims: number[] = [];
  for (let d = 0; d < ndims; d++) dims.push(view.getUint32(4 + 4 * d));

  const count = dims.reduce((a, b) => a * b, 1);
  const expected = count * type.bytes;
  const found = raw.length - headerBytes;
  if (found !== expected) {
    const what = found < expected ? 'truncated' : 'has trailing bytes';
    throw new GimError(
      'invalid_data',
      `${source}: IDX data ${what}: dims [${dims.join(', ')}] of ${type.dtype} need ` +
        `${expected} bytes, found ${found}`,
    );
  }
  return { dtype: type.dtype, dims, data: decodeData(view, headerBytes, count, type.dtype) };
}

/** Reads an IDX file, gzipped or not. */
export async function readIdx(path: string): Promise<IdxArray> {
  return parseIdx(await readDataFile(path), path);
}

/** Writes unsigned-byte IDX data (used to make fixtures). */
export async function writeIdx(
  path: string,
  data: Uint8Array,
  dims: number[],
  gzip: boolean,
): Promise<void> {
  if (
    dims.length < 1 ||
    dims.length > MAX_DIMS ||
    dims.some((d) => !Number.isInteger(d) || d < 0)
  ) {
    throw new GimError('invalid_argument', `bad IDX dims [${dims.join(', ')}]`);
  }
  const count = dims.reduce((a, b) => a * b, 1);
  if (count !== data.length) {
    throw new GimError(
      'invalid_argument',
      `IDX dims [${dims.join(', ')}] hold ${count} values, data has ${data.length}`,
    );
  }
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08;
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  const raw = Buffer.concat([header, data]);
  try {
    await writeFile(path, gzip ? await gzipAsync(raw, { level: 9 }) : raw);
  } catch (e) {
    throw new GimError('io_error', `cannot write ${path}: ${msg(e)}`, { cause: e });
  }
}

/**
 * An in-memory dataset from an IDX image file ([n, h, w] or [n, h, w, c] unsigned bytes) and an
 * IDX label file ([n] integers). Without `classNames`, classes are named "0", "1", ...
 */
export async function loadIdxDataset(
  imagesPath: string,
  labelsPath: string,
  opts: { classNames?: readonly string[]; source?: string } = {},
): Promise<ImageDataset> {
  const [imageBytes, labelBytes] = await Promise.all([
    readDataFile(imagesPath),
    readDataFile(labelsPath),
  ]);
  const [images, labels] = await Promise.all([
    parseIdx(imageBytes, imagesPath),
    parseIdx(labelBytes, labelsPath),
  ]);

  if (images.dtype !== 'uint8') {
    throw new GimError(
      'unsupported_media',
      `${imagesPath}: IDX images must be unsigned bytes, found ${images.dtype}`,
    );
  }
  const [n = 0, height = 0, width = 0, channels = 1] = images.dims;
  const shapeOk =
    (images.dims.length === 3 || images.dims.length === 4) && (channels === 1 || channels === 3);
  if (!shapeOk) {
    throw new GimError(
      'invalid_data',
      `${imagesPath}: IDX images must be [n, h, w] or [n, h, w, 1|3], found [${images.dims.join(', ')}]`,
    );
  }
  if (labels.dims.length !== 1 || labels.dims[0] !== n) {
    throw new GimError(
      'invalid_data',
      `${labelsPath}: expected ${n} labels ([${n}]), found [${labels.dims.join(', ')}]`,
    );
  }
  if (labels.dtype === 'float32' || labels.dtype === 'float64') {
    throw new GimError(
      'invalid_data',
      `${labelsPath}: labels must be integers, found ${labels.dtype}`,
    );
  }
  const labelValues = Int32Array.from(labels.data);
  const maxLabel = labelValues.reduce((m, v) => Math.max(m, v), -1);
  const minLabel = labelValues.reduce((m, v) => Math.min(m, v), 0);
  const classNames = opts.classNames
    ? [...opts.classNames]
    : Array.from({ length: maxLabel + 1 }, (_, i) => String(i));
  if (minLabel < 0 || maxLabel >= classNames.length) {
    throw new GimError(
      'invalid_data',
      `${labelsPath}: labels must lie in [0, ${classNames.length}), found [${minLabel}, ${maxLabel}]`,
    );
  }

  const hash = createHash('sha256').update('gim-idx-v1\n');
  for (const bytes of [imageBytes, labelBytes]) hash.update(`${bytes.length}\n`).update(bytes);
  const fingerprint = hash.digest('hex');

  const info: ImageDatasetInfo = {
    source: opts.source ?? `idx:${imagesPath}`,
    count: n,
    height,
    width,
    channels: channels as 1 | 3,
    classNames,
  };
  return new IdxImageDataset(info, images.data as Uint8Array, labelValues, fingerprint);
}

/**
 * The `train` or `test` split of a directory holding IDX files under the standard MNIST names
 * (IDX_SPLIT_FILES, each with or without `.gz`).
 */
export async function loadIdxSplit(
  dir: string,
  split: 'train' | 'test',
  opts: { classNames?: readonly string[]; source?: string } = {},
): Promise<ImageDataset> {
  const files = IDX_SPLIT_FILES[split];
  const [imagesPath, labelsPath] = await Promise.all([
    findIdxFile(dir, files.images),
    findIdxFile(dir, files.labels),
  ]);
  if (!imagesPath || !labelsPath) {
    const missing = imagesPath ? files.labels : files.images;
    throw new GimError('not_found', `${split} split not found in ${dir} (missing ${missing}[.gz])`);
  }
  return loadIdxDataset(imagesPath, labelsPath, {
    classNames: opts.classNames,
    source: opts.source ?? `idx:${dir}:${split}`,
  });
}

/** Fashion-MNIST from `dir` (by default Debian's dataset-fashion-mnist), with its class names. */
export async function loadFashionMnist(
  dir: string = FASHION_MNIST_DEFAULT_DIR,
  split: 'train' | 'test' = 'train',
): Promise<ImageDataset> {
  const source = dir === FASHION_MNIST_DEFAULT_DIR ? `fashion-mnist:${split}` : undefined;
  try {
    return await loadIdxSplit(dir, split, { classNames: FASHION_MNIST_CLASS_NAMES, source });
  } catch (e) {
    if (!(e instanceof GimError) || e.code !== 'not_found') throw e;
    throw new GimError(
      'not_found',
      `Fashion-MNIST ${e.message}. Install Debian's copy with ` +
        `\`apt-get install dataset-fashion-mnist\` (into ${FASHION_MNIST_DEFAULT_DIR}), ` +
        `or give a directory holding its IDX files.`,
      { cause: e },
    );
  }
}

/** `<dir>/<stem>.gz` or `<dir>/<stem>`, whichever exists (gzipped first). */
export async function findIdxFile(dir: string, stem: string): Promise<string | undefined> {
  for (const name of [`${stem}.gz`, stem]) {
    const path = join(dir, name);
    try {
      await access(path);
      return path;
    } catch {
      // try the next name
    }
  }
  return undefined;
}

class IdxImageDataset implements ImageDataset {
  private readonly itemSize: number;

  constructor(
    readonly info: ImageDatasetInfo,
    private readonly pixels: Uint8Array, // [count, h, w, c]
    private readonly labels: Int32Array, // [count]
    private readonly hash: string,
  ) {
    this.itemSize = info.height * info.width * info.channels;
  }

  async read(indices: ArrayLike<number>): Promise<ImageBatch> {
    checkIndices(indices, this.info.count, this.info.source);
    const n = indices.length;
    const size = this.itemSize;
    const images = new Float32Array(n * size); // [n, h, w, c]
    const labels = new Int32Array(n);
    for (let k = 0; k < n; k++) {
      const idx = indices[k] as number;
      const src = this.pixels.subarray(idx * size, (idx + 1) * size);
      for (let j = 0; j < size; j++) images[k * size + j] = (src[j] as number) / 255;
      labels[k] = this.labels[idx] as number;
    }
    return { images, labels, n, indices: Int32Array.from(indices) };
  }

  fingerprint(): Promise<string> {
    return Promise.resolve(this.hash);
  }
}

function decodeData(view: DataView, offset: number, count: number, dtype: IdxDtype): IdxData {
  const start = view.byteOffset + offset;
  switch (dtype) {
    case 'uint8':
      return new Uint8Array(view.buffer, start, count);
    case 'int8':
      return new Int8Array(view.buffer, start, count);
    case 'int16':
      return Int16Array.from({ length: count }, (_, i) => view.getInt16(offset + 2 * i));
    case 'int32':
      return Int32Array.from({ length: count }, (_, i) => view.getInt32(offset + 4 * i));
    case 'float32':
      return Float32Array.from({ length: count }, (_, i) => view.getFloat32(offset + 4 * i));
    case 'float64':
      return Float64Array.from({ length: count }, (_, i) => view.getFloat64(offset + 8 * i));
  }
}

async function readDataFile(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new GimError('not_found', `no such file: ${path}`, { cause: e });
    throw new GimError('io_error', `cannot read ${path}: ${msg(e)}`, { cause: e });
  }
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, '0');
}

function msg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
