/**
 * A folder of encoded images, one sub-folder per class (`root/<class>/**`). Opening lists paths
 * only; pixels are decoded on `read()`, a few files at a time, so a large folder never sits in
 * memory.
 */
import { createHash } from 'node:crypto';
import { join, relative, resolve, sep } from 'node:path';
import { GimError } from '../errors.js';
import {
  checkIndices,
  type ImageBatch,
  type ImageDataset,
  type ImageDatasetInfo,
} from './dataset.js';
import { checkDecodeOptions, decodeImage, type DecodeImageOptions } from './decode-image.js';
import {
  forEachLimited,
  isDirectory,
  isHidden,
  listDir,
  onceUnlessFailed,
  readItem,
  statItem,
} from './folder-files.js';

export { decodeImage, sniffImageFormat, DEFAULT_MAX_PIXELS } from './decode-image.js';

/** Lower-case extensions of the files a folder dataset holds; other files are ignored. */
export const IMAGE_EXTENSIONS: readonly string[] = ['.png', '.jpg', '.jpeg', '.webp'];

export interface ImageFolderOptions extends DecodeImageOptions {
  /**
   * What `fingerprint()` hashes: `metadata` (default) = sorted relative paths, sizes and mtimes,
   * cheap; `content` = the bytes of every file, survives copies but reads the whole folder.
   */
  fingerprint?: 'metadata' | 'content';
  /** Files decoded at once by `read()`. Default 4. */
  concurrency?: number;
}

interface FolderItem {
  path: string;
  /** Relative to the root, `/`-separated: the stable name of the item in fingerprints. */
  rel: string;
  label: number;
}

export async function openImageFolder(
  root: string,
  opts: ImageFolderOptions,
): Promise<ImageDataset> {
  checkDecodeOptions(opts);
  const absRoot = resolve(root);
  const classDirs = (await listDir(absRoot)).filter((e) => !isHidden(e.name));
  const classNames: string[] = [];
  for (const entry of classDirs) {
    if (await isDirectory(join(absRoot, entry.name), entry)) classNames.push(entry.name);
  }
  classNames.sort();
  if (classNames.length === 0) {
    throw new GimError(
      'invalid_data',
      `${absRoot}: no class sub-folders (expected root/<class>/*.png)`,
    );
  }

  const items: FolderItem[] = [];
  for (const [label, name] of classNames.entries()) {
    const files = await listImages(join(absRoot, name));
    if (files.length === 0) {
      throw new GimError(
        'invalid_data',
        `${join(absRoot, name)}: class folder holds no ${IMAGE_EXTENSIONS.join(' ')} files`,
      );
    }
    for (const path of files) {
      items.push({ path, rel: relative(absRoot, path).split(sep).join('/'), label });
    }
  }

  const info: ImageDatasetInfo = {
    // As the caller named it: a relative path recorded in a manifest opens the same data again
    // from another checkout (an absolute one only on the machine that wrote it).
    source: `folder:${root}`,
    count: items.length,
    height: opts.height,
    width: opts.width,
    channels: opts.channels,
    classNames,
  };
  return new ImageFolderDataset(info, items, opts);
}

class ImageFolderDataset implements ImageDataset {
  /** sha256 of the file list, computed on first use. */
  readonly fingerprint = onceUnlessFailed(() => this.computeFingerprint());

  constructor(
    readonly info: ImageDatasetInfo,
    private readonly items: FolderItem[],
    private readonly opts: ImageFolderOptions,
  ) {}

  async read(indices: ArrayLike<number>): Promise<ImageBatch> {
    checkIndices(indices, this.info.count, this.info.source);
    const n = indices.length;
    const size = this.info.height * this.info.width * this.info.channels;
    const images = new Float32Array(n * size); // [n, h, w, c]
    const labels = new Int32Array(n);
    await forEachLimited(n, this.opts.concurrency ?? 4, async (k) => {
      const item = this.items[indices[k] as number] as FolderItem;
      images.set(await this.decode(item), k * size);
      labels[k] = item.label;
    });
    return { images, labels, n, indices: Int32Array.from(indices) };
  }

  private async decode(item: FolderItem): Promise<Float32Array> {
    const bytes = await readItem(item.path);
    try {
      return await decodeImage(bytes, this.opts);
    } catch (e) {
      const reason = e instanceof Error ? e.message : String(e);
      throw new GimError('invalid_data', `${item.path}: ${reason}`, { cause: e });
    }
  }

  private async computeFingerprint(): Promise<string> {
    const content = this.opts.fingerprint === 'content';
    const lines = new Array<string>(this.items.length);
    await forEachLimited(this.items.length, 8, async (i) => {
      const item = this.items[i] as FolderItem;
      if (content) {
        const digest = createHash('sha256')
          .update(await readItem(item.path))
          .digest('hex');
        lines[i] = `${item.rel}\t${digest}\n`;
      } else {
        const st = await statItem(item.path);
        lines[i] = `${item.rel}\t${st.size}\t${Math.round(st.mtimeMs)}\n`;
      }
    });
    const hash = createHash('sha256').update(`gim-folder-v1 ${content ? 'content' : 'metadata'}\n`);
    // Items are already sorted by class, then path; the relative path carries the class.
    for (const line of lines) hash.update(line);
    return hash.digest('hex');
  }
}

/** Image files under `dir`, recursively, sorted by path; hidden entries skipped. */
async function listImages(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await listDir(dir)) {
    if (isHidden(entry.name)) continue;
    const path = join(dir, entry.name);
    if (await isDirectory(path, entry)) {
      found.push(...(await listImages(path)));
    } else if (IMAGE_EXTENSIONS.some((ext) => entry.name.toLowerCase().endsWith(ext))) {
      found.push(path);
    }
  }
  return found.sort();
}
