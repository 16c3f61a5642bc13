import { open, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { GimError } from '../errors.js';

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
 * How the store puts the bytes of a new file on disk: create it (failing if it exists), write,
 * fsync. Every file the store writes goes through one, so that a test can make the Nth write fail
 * as a full disk would, where it cannot mount a small filesystem.
 */
export interface FileWriter {
  writeNew(path: string, data: string | Uint8Array): Promise<void>;
}

/** The real disk. */
export const DISK_WRITER: FileWriter = { writeNew: writeFileDurable };

/**
 * Replaces `path` with `data` so that a reader (or a crash) sees either the old or the new content,
 * never a mix: write a temporary sibling, fsync it, rename it over `path`, fsync the directory.
 * A failure removes the temporary sibling and is an `io_error` naming `path` (`details.path`) and
 * the cause in words (`details.reason`, e.g. "no space left on device (ENOSPC)").
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  writer: FileWriter = DISK_WRITER,
): Promise<void> {
  const temp = tempSibling(path);
  try {
    await writer.writeNew(temp, data);
    await rename(temp, path);
  } catch (e) {
    // A full disk still lets a file be removed; a failure to do so must not hide the cause.
    await rm(temp, { force: true }).catch(() => undefined);
    throw writeError(path, e);
  }
  try {
    await fsyncDir(dirname(path));
  } catch (e) {
    throw writeError(path, e);
  }
}

/** `writeFileAtomic` of `value` as indented JSON with a trailing newline. */
export async function writeJsonAtomic(
  path: string,
  value: unknown,
  writer: FileWriter = DISK_WRITER,
): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, writer);
}

/**
 * A failed write of `path` as an `io_error`: "<reason> while writing <path>", with `path` and
 * `reason` in its details so that a caller can name the file in its own terms.
 */
export function writeError(path: string, e: unknown): GimError {
  if (e instanceof GimError) return e;
  const reason = ioReason(e);
  return new GimError('io_error', `${reason} while writing ${path}`, {
    cause: e,
    details: { path, reason },
  });
}

/**
 * A failed system call in words, without the path Node puts in its message: `no space left on
 * device (ENOSPC)` for "ENOSPC: no space left on device, open '/models/x/.tmp-...'".
 */
export function ioReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const message = e instanceof Error ? e.message : String(e);
  if (typeof code !== 'string' || !/^E[A-Z0-9]+$/.test(code)) return message;
  const words = new RegExp(`^${code}: ([^,]+)`).exec(message)?.[1];
  return words === undefined ? code : `${words} (${code})`;
}

/** Whether `e` is a Node.js system error with the given `code` (ENOENT, EEXIST, ...). */
export function isErrno(e: unknown, code: string): boolean {
  return e instanceof Error && (e as NodeJS.ErrnoException).code === code;
}
