import { open, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/**
 * Prefix of every temporary entry the store creates (atomic-write files, publish directories).
 * Readers skip such entries and `StackStore.cleanupTemp` removes stale ones.
 */
export const TEMP_PREFIX = '.tmp-';

/** A fresh temporary name in the same directory as `path`, so that renaming it is atomic. */
export function tempSibling(path: string): string {
  return join(dirname(path), `${TEMP_PREFIX}${basename(path)}-${randomBytes(6).toString('hex')}`);
}

/**
 * Flushes a directory's entries (files created, renamed or removed in it) to disk. Some platforms
 * (Windows) cannot open a directory for syncing; there the rename is as durable as it gets.
 */
export async function fsyncDir(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, 'r');
  } catch (e) {
    if (isErrno(e, 'EISDIR') || isErrno(e, 'EPERM') || isErrno(e, 'EACCES')) return;
    throw e;
  }
  try {
    await handle.sync();
  } catch (e) {
    if (!isErrno(e, 'EINVAL') && !isErrno(e, 'EPERM') && !isErrno(e, 'EBADF')) throw e;
  } finally {
    await handle.close();
  }
}

/** Writes `data` to `path` and fsyncs the file, without renaming. Fails if `path` exists. */
export async function writeFileDurable(path: string, data: string | Uint8Array): Promise<void> {
  const handle = await open(path, 'wx');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `path` with `data` so that a reader (or a crash) sees either the old or the new content,
 * never a mix: write a temporary sibling, fsync it, rename it over `path`, fsync the directory.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const temp = tempSibling(path);
  try {
    await writeFileDurable(temp, data);
    await rename(temp, path);
  } catch (e) {
    await rm(temp, { force: true });
    throw e;
  }
  await fsyncDir(dirname(path));
}

/** `writeFileAtomic` of `value` as indented JSON with a trailing newline. */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** Whether `e` is a Node.js system error with the given `code` (ENOENT, EEXIST, ...). */
export function isErrno(e: unknown, code: string): boolean {
  return e instanceof Error && (e as NodeJS.ErrnoException).code === code;
}
