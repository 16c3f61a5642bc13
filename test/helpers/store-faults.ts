import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { DISK_WRITER, type FileWriter } from '../../src/gim/store/atomic.js';

/**
 * A FileWriter that writes like the disk, except that its `failAt`-th write (1-based) writes only
 * half of its bytes and then fails as a full disk does (`ENOSPC`, or `code`): the store must
 * remove what that write left. `writes` counts every write asked of it, the failed one included.
 */
export class FailingWriter implements FileWriter {
  writes = 0;
  /** The paths written, in order (the failed one included). */
  readonly paths: string[] = [];

  constructor(
    private readonly failAt = Infinity,
    private readonly code = 'ENOSPC',
  ) {}

  async writeNew(path: string, data: string | Uint8Array): Promise<void> {
    this.writes++;
    this.paths.push(path);
    if (this.writes !== this.failAt) return DISK_WRITER.writeNew(path, data);
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    await writeFile(path, bytes.subarray(0, Math.floor(bytes.length / 2)), { flag: 'wx' });
    const words: Record<string, string> = {
      ENOSPC: 'no space left on device',
      EIO: 'i/o error',
      EDQUOT: 'disk quota exceeded',
    };
    throw Object.assign(new Error(`${this.code}: ${words[this.code] ?? 'failed'}, write`), {
      code: this.code,
      syscall: 'write',
    });
  }
}

/**
 * Every entry under `root` (directories with a trailing slash) and a digest of every file's bytes:
 * two snapshots are equal only if nothing was added, removed or changed.
 */
export async function snapshot(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        out[`${relative(root, path)}/`] = 'dir';
        await walk(path);
      } else {
        out[relative(root, path)] = createHash('sha256')
          .update(await readFile(path))
          .digest('hex');
      }
    }
  };
  await walk(root);
  return out;
}

/** Entries of a snapshot that are hidden (a lock, a `.tmp-*` leftover): none may outlive a write. */
export function hiddenEntries(snap: Record<string, string>): string[] {
  return Object.keys(snap).filter((path) => path.split('/').some((part) => part.startsWith('.')));
}
