import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join, relative } from 'node:path';
import { GimError, isGimError } from '../errors.js';
import {
  DISK_WRITER,
  type FileWriter,
  fsyncDir,
  ioReason,
  isErrno,
  TEMP_PREFIX,
  writeJsonAtomic,
} from './atomic.js';
import {
  appendLabelMoves,
  diffLabels,
  LABELS_HISTORY,
  labelsEtag,
  previousTarget,
  readLabelMoves,
  type LabelMove,
  type LabelMoveMeta,
} from './label-history.js';
import { quoteInput } from '../quote-input.js';

export const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const LABEL_RE = /^[a-z][a-z0-9_-]{0,31}$/;
export const VERSION_RE = /^[1-9][0-9]*$/;
const LABELS_JSON = 'labels.json';
const LABELS_LOCK = '.labels.lock';
/** A labels lock older than this is left over by a crashed writer (the update takes milliseconds). */
const STALE_LOCK_MS = 10_000;
const LOCK_TIMEOUT_MS = 15_000;
export const DEFAULT_TEMP_AGE_MS = 60 * 60 * 1000;

/** Temp directories of publishes in flight in this process, which `cleanupTemp` must not touch. */
const inFlight = new Set<string>();
/** Per-labels-file promise chains serialising label updates within this process. */
const labelQueues = new Map<string, Promise<unknown>>();

/** How a versioned directory is named in messages: `stack 'fashion'` and `fashion` (for `@3`). */
export interface VersionedDirNames {
  what: string;
  id: string;
}

/**
 * One directory of integer versions and their labels, the layout shared by encoder stacks and
 * classification heads:
 *
 * ```
 * <dir>/labels.json       {"latest": 4, "stable": 3}  (replaced atomically, under a lock file)
 * <dir>/<version>/...     written into <dir>/.tmp-<random>, then renamed into place
 * ```
 *
 * A reader never sees a half-written version, a crash leaves only a `.tmp-*` directory, and
 * versions are never rewritten. Label updates are serialised by a lock file, so concurrent
 * writers do not lose them.
 */
export class VersionedDir {
  constructor(
    readonly dir: string,
    private readonly names: VersionedDirNames,
    /** Writes `labels.json` (content writers bring their own). */
    private readonly writer: FileWriter = DISK_WRITER,
  ) {}

  /**
   * Publishes the next version: `fill(temp)` writes the content, `seal(temp, version)` the manifest,
   * last (again with the next free number when another writer took the version meanwhile). Then
   * points `labels` at it, never moving a label back. Returns the version.
   *
   * All or nothing: when any step fails (a full disk, a write error, a lock held too long), the
   * temp directory is removed and a version already renamed into place is withdrawn, so the
   * versions and labels are left as they were; the error (`io_error` for the filesystem) names the
   * file and the cause, e.g. "no space left on device (ENOSPC) while writing module-2/weights.bin
   * of fashion@3; nothing was published ...". A damaged `labels.json` fails it before anything is
   * written.
   */
  async publish(
    fill: (temp: string) => Promise<void>,
    seal: (temp: string, version: number) => Promise<void>,
    labels: string[],
    by = 'publish',
  ): Promise<number> {
    labels.forEach(checkLabel);
    if (labels.length > 0) await this.readLabels();
    // Leftovers of writers that crashed (or could not remove them) go at the next publish.
    await this.cleanupTemp(DEFAULT_TEMP_AGE_MS).catch(() => undefined);
    const parent = dirname(this.dir);
    const temp = join(this.dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    // For messages only: the number the version gets unless another writer takes it first.
    let version = (await this.versions()).reduce((a, b) => Math.max(a, b), 0) + 1;
    inFlight.add(temp);
    try {
      await io(`create ${this.dir}`, async () => {
        const created = await mkdir(this.dir, { recursive: true });
        // Each directory just created is a new entry of the one above it.
        if (created !== undefined)
          for (let d = parent; ; d = dirname(d)) {
            await fsyncDir(d);
            if (d === dirname(created) || d === dirname(d)) break;
          }
        await mkdir(temp);
      });
      await fill(temp);
      version = (await this.versions()).reduce((a, b) => Math.max(a, b), 0) + 1;
      await seal(temp, version);
      for (;;) {
        try {
          await rename(temp, join(this.dir, String(version)));
          break;
        } catch (e) {
          const at = `rename the version into place`;
          if (!isErrno(e, 'ENOTEMPTY') && !isErrno(e, 'EEXIST') && !isErrno(e, 'EPERM'))
            throw ioError(at, e);
          const taken = await this.versions();
          if (!taken.includes(version)) throw ioError(at, e);
          version = Math.max(version, ...taken) + 1;
          await seal(temp, version);
        }
      }
    } catch (e) {
      await rm(temp, { recursive: true, force: true }).catch(() => undefined);
      throw this.notPublished(e, temp, version, `nothing was published: ${this.unchanged()}`);
    } finally {
      inFlight.delete(temp);
    }
    try {
      await io(`sync ${this.names.id}`, () => fsyncDir(this.dir));
      if (labels.length > 0) {
        await this.updateLabels(
          (current, versions) => {
            for (const label of labels) {
              // Publishing never moves a label back, so concurrent publishes end on the newest.
              const at = current[label];
              if (at === undefined || at < version || !versions.includes(at))
                current[label] = version;
            }
          },
          { by, reason: `published version ${version}` },
        );
      }
    } catch (e) {
      throw this.notPublished(e, this.dir, version, await this.withdraw(version));
    }
    return version;
  }

  /**
   * Takes back a version whose publish failed after its rename (its labels could not be moved):
   * renamed out of sight first (a rename needs no space), then removed. Says what happened.
   */
  private async withdraw(version: number): Promise<string> {
    const published = join(this.dir, String(version));
    const away = join(this.dir, `${TEMP_PREFIX}withdrawn-${randomBytes(6).toString('hex')}`);
    try {
      await rename(published, away);
    } catch (e) {
      return (
        `${this.names.id}@${version} is on disk but no label was moved to it (it could not be ` +
        `withdrawn: ${ioReason(e)}); the labels of ${this.names.what} are as they were`
      );
    }
    // Once renamed it is a temp entry: one that cannot be removed now goes at the next publish.
    await rm(away, { recursive: true, force: true }).catch(() => undefined);
    await fsyncDir(this.dir).catch(() => undefined);
    return `nothing was published (${this.names.id}@${version} was withdrawn): ${this.unchanged()}`;
  }

  private unchanged(): string {
    return `the versions and labels of ${this.names.what} are as they were`;
  }

  /**
   * The error of a failed publish, with its code, saying what it left (`outcome`); a write error
   * names the file relative to `base` and the version it was for.
   */
  private notPublished(e: unknown, base: string, version: number, outcome: string): GimError {
    const error = isGimError(e) ? e : ioError(`publish ${this.names.id}@${version}`, e);
    const { path, reason } = error.details;
    const message =
      typeof path === 'string' && typeof reason === 'string'
        ? `${reason} while writing ${relative(base, path)} of ${this.names.id}@${version}`
        : error.message;
    return new GimError(error.code, `${message}; ${outcome}`, {
      cause: error,
      details: error.details,
    });
  }

  /**
   * A version number, a label, or (undefined) the `stable` label if set, else `latest`, else the
   * highest version. not_found, listing what exists, when there is no such version or label.
   */
  async resolve(selector: string | undefined): Promise<number> {
    const versions = await this.versions();
    if (versions.length === 0)
      throw new GimError('not_found', `${this.names.what} has no versions`);
    if (selector !== undefined && VERSION_RE.test(selector)) {
      // A version by number needs no labels: it resolves even when labels.json is damaged.
      const version = Number(selector);
      if (!versions.includes(version)) throw this.noVersion(version, versions);
      return version;
    }
    const labels = await this.readLabels();
    const byLabel = (label: string): number => {
      const version = labels[label];
      if (version === undefined) {
        throw new GimError(
          'not_found',
          `${this.names.what} has no label '${label}'; labels: ${formatLabels(labels)}`,
        );
      }
      if (!versions.includes(version)) {
        throw new GimError(
          'not_found',
          `label '${label}' of ${this.names.what} points to version ${version}, which does not ` +
            `exist; versions: ${versions.join(', ')}`,
        );
      }
      return version;
    };
    if (selector === undefined) {
      if (labels.stable !== undefined) return byLabel('stable');
      if (labels.latest !== undefined) return byLabel('latest');
      return versions[versions.length - 1] as number;
    }
    return byLabel(selector);
  }

  /** The published versions, ascending. */
  async versions(): Promise<number[]> {
    const entries = await readDirOrEmpty(this.dir);
    return entries
      .filter((e) => e.isDirectory() && VERSION_RE.test(e.name))
      .map((e) => Number(e.name))
      .sort((a, b) => a - b);
  }

  /**
   * The labels; `{}` without a `labels.json`. A damaged one (not JSON, not label -> version) is
   * `model_unavailable`, naming the file relative to the models directory: the name and labels of
   * this directory cannot be resolved until it is fixed or removed (versions by number still can).
   */
  async readLabels(): Promise<Record<string, number>> {
    const damaged = (what: string, cause?: unknown): GimError =>
      new GimError(
        'model_unavailable',
        `${this.names.what} is unavailable: ${this.names.id}/${LABELS_JSON} ${what}; fix or ` +
          'remove that file (without it, the highest version is the default)',
        { cause },
      );
    let value: unknown;
    try {
      value = await readJsonFile(join(this.dir, LABELS_JSON));
    } catch (e) {
      if (isGimError(e) && e.code === 'invalid_data') throw damaged('is not valid JSON', e);
      throw e;
    }
    if (value === undefined) return {};
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw damaged('is not an object of label -> version');
    }
    const labels: Record<string, number> = {};
    for (const [label, version] of Object.entries(value)) {
      if (!LABEL_RE.test(label) || !Number.isInteger(version) || (version as number) < 1) {
        throw damaged(`has a bad entry ${JSON.stringify(label).slice(0, 40)}`);
      }
      labels[label] = version as number;
    }
    return labels;
  }

  /** Points `label` at an existing `version`. */
  async setLabel(
    label: string,
    version: number,
    meta: LabelMoveMeta = { by: 'cli' },
  ): Promise<void> {
    await this.moveLabel(label, version, meta);
  }

  async removeLabel(label: string, meta: LabelMoveMeta = { by: 'cli' }): Promise<void> {
    await this.moveLabel(label, null, meta);
  }

  /** The labels, their entity tag and the history of moves (oldest first). */
  async labelState(): Promise<LabelState> {
    const labels = await this.readLabels();
    return { labels, etag: labelsEtag(labels), history: await readLabelMoves(this.historyPath) };
  }

  /**
   * Points `label` at `version` (null: removes it), recording the move. With `ifMatch` (an entity
   * tag of `labelState`) the move happens only if the labels are still what the caller saw:
   * otherwise `precondition_failed`, and nothing changes.
   */
  async moveLabel(
    label: string,
    version: number | null,
    meta: LabelMoveMeta,
    ifMatch?: string,
  ): Promise<LabelState> {
    checkLabel(label);
    if (version !== null && (!Number.isInteger(version) || version < 1))
      throw new GimError('invalid_argument', `version must be a positive integer, got ${version}`);
    return this.updateLabels((labels, versions) => {
      this.checkMatch(labels, ifMatch);
      if (version === null) {
        if (labels[label] === undefined) throw this.noLabel(label, labels);
        delete labels[label];
      } else {
        if (!versions.includes(version)) throw this.noVersion(version, versions);
        labels[label] = version;
      }
    }, meta);
  }

  /** Moves `label` back to the target it had before its last move (recorded as a move too). */
  async rollbackLabel(label: string, meta: LabelMoveMeta, ifMatch?: string): Promise<LabelState> {
    checkLabel(label);
    const history = this.historyPath;
    return this.updateLabels(async (labels, versions) => {
      this.checkMatch(labels, ifMatch);
      const previous = previousTarget(await readLabelMoves(history), label, labels[label]);
      if (previous === undefined)
        throw new GimError(
          'conflict',
          `${this.names.what}: the history of label '${label}' has no earlier target to roll back to`,
        );
      if (!versions.includes(previous))
        throw new GimError(
          'conflict',
          `${this.names.what}: label '${label}' was at version ${previous} before, which no longer exists`,
        );
      labels[label] = previous;
    }, meta);
  }

  /**
   * Records a decision about `label` that moved nothing (a promotion gate refused, or its dry run):
   * a history line with `from` = `to` = the label's current target, under the labels lock.
   */
  async recordDecision(label: string, meta: LabelMoveMeta): Promise<LabelState> {
    checkLabel(label);
    return this.updateLabels(() => undefined, meta, label);
  }

  private checkMatch(labels: Record<string, number>, ifMatch: string | undefined): void {
    if (ifMatch === undefined || ifMatch === '*') return;
    const etag = labelsEtag(labels);
    if (ifMatch !== etag)
      throw new GimError(
        'precondition_failed',
        `the labels of ${this.names.what} changed since you read them (ETag ${etag}): read them again`,
        { details: { etag } },
      );
  }

  private noLabel(label: string, labels: Record<string, number>): GimError {
    return new GimError(
      'not_found',
      `${this.names.what} has no label '${label}'; labels: ${formatLabels(labels)}`,
    );
  }

  private get historyPath(): string {
    return join(this.dir, LABELS_HISTORY);
  }

  /** Removes `.tmp-*` entries older than `olderThanMs`, except publishes in flight here. */
  async cleanupTemp(olderThanMs: number): Promise<string[]> {
    const removed: string[] = [];
    const now = Date.now();
    for (const entry of await readDirOrEmpty(this.dir)) {
      if (!entry.name.startsWith(TEMP_PREFIX)) continue;
      const path = join(this.dir, entry.name);
      if (inFlight.has(path)) continue;
      const info = await stat(path).catch(() => undefined);
      if (info === undefined || now - info.mtimeMs < olderThanMs) continue;
      await io(`remove ${path}`, () => rm(path, { recursive: true, force: true }));
      removed.push(path);
    }
    return removed;
  }

  /**
   * Read-modify-write of `labels.json` under an in-process queue and a cross-process lock file;
   * the moves it makes are appended to the history under the same lock.
   */
  private async updateLabels(
    change: (labels: Record<string, number>, versions: number[]) => void | Promise<void>,
    meta: LabelMoveMeta,
    /** Record a line for this label even when nothing moved (`recordDecision`). */
    decisionFor?: string,
  ): Promise<LabelState> {
    const previous = labelQueues.get(this.dir) ?? Promise.resolve();
    const run = previous
      .catch(() => undefined)
      .then(async (): Promise<LabelState> => {
        const release = await acquireLock(join(this.dir, LABELS_LOCK));
        try {
          const before = await this.readLabels();
          const labels = { ...before };
          await change(labels, await this.versions());
          const sorted = Object.fromEntries(
            Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)),
          );
          const at = new Date().toISOString();
          const moves = diffLabels(before, sorted, meta, at);
          if (moves.length === 0 && decisionFor !== undefined) {
            const current = sorted[decisionFor] ?? null;
            const decision = { at, by: meta.by, label: decisionFor, from: current, to: current };
            await io(`record the label history of ${this.names.id}`, () =>
              appendLabelMoves(this.historyPath, [
                {
                  ...decision,
                  ...(meta.reason !== undefined ? { reason: meta.reason } : {}),
                  ...(meta.gate !== undefined ? { gate: meta.gate } : {}),
                },
              ]),
            );
          }
          if (moves.length > 0) {
            try {
              await writeJsonAtomic(join(this.dir, LABELS_JSON), sorted, this.writer);
            } catch (e) {
              throw this.labelsNotWritten(e);
            }
            await io(`record the label history of ${this.names.id}`, () =>
              appendLabelMoves(this.historyPath, moves),
            );
          }
          return {
            labels: sorted,
            etag: labelsEtag(sorted),
            history: await readLabelMoves(this.historyPath),
          };
        } finally {
          await release();
        }
      });
    labelQueues.set(this.dir, run);
    try {
      return await run;
    } finally {
      if (labelQueues.get(this.dir) === run) labelQueues.delete(this.dir);
    }
  }

  /** A failed write of `labels.json` (the old one is still in place), naming it in the store. */
  private labelsNotWritten(e: unknown): GimError {
    if (!isGimError(e) || typeof e.details.reason !== 'string') return ioError('write labels', e);
    return new GimError(
      e.code,
      `${e.details.reason} while writing ${this.names.id}/${LABELS_JSON}; the labels of ` +
        `${this.names.what} are as they were`,
      { cause: e, details: e.details },
    );
  }

  private noVersion(version: number, versions: number[]): GimError {
    return new GimError(
      'not_found',
      `${this.names.what} has no version ${version}; versions: ${versions.join(', ')}`,
    );
  }
}

/** A directory's labels, their entity tag, and every recorded move (oldest first). */
export interface LabelState {
  labels: Record<string, number>;
  etag: string;
  history: LabelMove[];
}

/** Splits `name`, `name@<version>` or `name@<label>`; invalid_argument for a malformed selector. */
export function parseRef(
  ref: string,
  kind: string,
): { name: string; selector: string | undefined } {
  const at = ref.indexOf('@');
  const name = at < 0 ? ref : ref.slice(0, at);
  const selector = at < 0 ? undefined : ref.slice(at + 1);
  checkName(name, kind);
  if (selector !== undefined && !VERSION_RE.test(selector) && !LABEL_RE.test(selector)) {
    throw new GimError(
      'invalid_argument',
      `${quoteInput(ref)} is not a ${kind} reference (name, name@<version> or name@<label>)`,
    );
  }
  return { name, selector };
}

export function checkName(name: string, kind: string): void {
  if (!NAME_RE.test(name)) {
    throw new GimError(
      'invalid_argument',
      `bad ${kind} name ${quoteInput(name)}: use 1-64 of a-z 0-9 . _ - starting with a letter or digit`,
    );
  }
}

export function checkLabel(label: string): void {
  if (!LABEL_RE.test(label)) {
    throw new GimError(
      'invalid_argument',
      `bad label ${quoteInput(label)}: use 1-32 of a-z 0-9 _ - starting with a letter`,
    );
  }
}

export function formatLabels(labels: Record<string, number>): string {
  const entries = Object.entries(labels);
  return entries.length === 0 ? '(none)' : entries.map(([l, v]) => `${l}=${v}`).join(', ');
}

/** Takes an exclusive lock file, breaking it if a crashed writer left it behind. */
async function acquireLock(path: string): Promise<() => Promise<void>> {
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    try {
      const handle = await open(path, 'wx');
      await handle.close();
      return () => unlink(path).catch(() => undefined);
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw ioError(`lock ${path}`, e);
    }
    const info = await stat(path).catch(() => undefined);
    if (info !== undefined && Date.now() - info.mtimeMs > STALE_LOCK_MS) {
      await unlink(path).catch(() => undefined);
      continue;
    }
    if (Date.now() > deadline) {
      throw new GimError('conflict', `${path} is held by another writer (remove it if stale)`);
    }
    await new Promise((r) => setTimeout(r, delay));
  }
}

export async function readDirOrEmpty(dir: string) {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (e) {
    if (isErrno(e, 'ENOENT') || isErrno(e, 'ENOTDIR')) return [];
    throw ioError(`read ${dir}`, e);
  }
}

/** Parses a JSON file; `undefined` if it does not exist. */
export async function readJsonFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return undefined;
    throw ioError(`read ${file}`, e);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new GimError('invalid_data', `${file} is not valid JSON`, { cause: e });
  }
}

export async function io<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw e instanceof GimError ? e : ioError(what, e);
  }
}

export function ioError(what: string, e: unknown): GimError {
  return new GimError('io_error', `cannot ${what}: ${ioReason(e)}`, { cause: e });
}
