import type { Dirent } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { GimError } from '../errors.js';

/** Filesystem helpers of the folder datasets (image folders, speaker folders). */

/**
 * Runs `fn(0..n-1)` with at most `limit` calls in flight. After the first failure no new call
 * starts; the first error is thrown once the calls in flight have settled.
 */
export async function forEachLimited(
  n: number,
  limit: number,
  fn: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (!failure && next < n) {
      const i = next++;
      try {
        await fn(i);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, n)) }, worker));
  if (failure) throw failure.error;
}

export function isHidden(name: string): boolean {
  return name.startsWith('.');
}

export async function isDirectory(path: string, entry: Dirent): Promise<boolean> {
  if (entry.isDirectory()) return true;
  if (!entry.isSymbolicLink()) return false;
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false; // a dangling link
  }
}

export async function listDir(dir: string): Promise<Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (e) {
    throw fsError(e, dir);
  }
}

export async function readItem(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw fsError(e, path);
  }
}

export async function statItem(path: string): Promise<{ size: number; mtimeMs: number }> {
  try {
    return await stat(path);
  } catch (e) {
    throw fsError(e, path);
  }
}

export function fsError(e: unknown, path: string): GimError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new GimError('not_found', `no such file or folder: ${path}`);
  if (code === 'ENOTDIR') return new GimError('invalid_argument', `not a folder: ${path}`);
  const reason = e instanceof Error ? e.message : String(e);
  return new GimError('io_error', `cannot read ${path}: ${reason}`, { cause: e });
}

/**
 * `fn` run once and its promise shared by every call; a failed attempt (e.g. a file removed
 * meanwhile) is not kept, so the next call tries again.
 */
export function onceUnlessFailed<T>(fn: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => {
    if (!pending) {
      pending = fn();
      pending.catch(() => {
        pending = undefined;
      });
    }
    return pending;
  };
}
