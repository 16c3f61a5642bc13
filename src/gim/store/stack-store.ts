import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join, resolve as resolvePath } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import { STACK_FORMAT, type StackManifest } from './manifest.js';
import { checkStackManifest } from './manifest-schema.js';
import { fsyncDir, isErrno, TEMP_PREFIX, writeJsonAtomic } from './atomic.js';
import { loadModelArtifacts, saveModelArtifacts } from './tfjs-files.js';

/** A stack to publish: its manifest without the fields the store assigns, and one model per module. */
export interface StackDraft {
  manifest: Omit<StackManifest, 'name' | 'version' | 'format'>;
  modules: tf.io.ModelArtifacts[];
}

export interface PublishOptions {
  /** Labels to point at the new version; default `['latest']`. */
  labels?: string[];
}

export interface StackRef {
  name: string;
  version: number;
}

export interface LoadedStack {
  manifest: StackManifest;
  modules: tf.io.ModelArtifacts[];
}

export interface StackSummary {
  name: string;
  versions: number[];
  labels: Record<string, number>;
}

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const LABEL_RE = /^[a-z][a-z0-9_-]{0,31}$/;
const VERSION_RE = /^[1-9][0-9]*$/;
const LABELS_JSON = 'labels.json';
const MANIFEST_JSON = 'manifest.json';
const LABELS_LOCK = '.labels.lock';
/** A labels lock older than this is left over by a crashed writer (the update takes milliseconds). */
const STALE_LOCK_MS = 10_000;
const LOCK_TIMEOUT_MS = 15_000;
const DEFAULT_TEMP_AGE_MS = 60 * 60 * 1000;

/** Temp directories of publishes in flight in this process, which `cleanupTemp` must not touch. */
const inFlight = new Set<string>();
/** Per-labels-file promise chains serialising label updates within this process. */
const labelQueues = new Map<string, Promise<unknown>>();

/**
 * Versioned encoder stacks on the filesystem:
 *
 * ```
 * <root>/<name>/labels.json                 {"latest": 4, "stable": 3}  (replaced atomically)
 * <root>/<name>/<version>/manifest.json
 * <root>/<name>/<version>/module-<i>/model.json + weights.bin
 * ```
 *
 * A version is written into `<root>/<name>/.tmp-<random>` and renamed into place, so a reader never
 * sees a half-written version and a crash leaves only a `.tmp-*` directory. Versions are never
 * rewritten. Label updates are serialised by a lock file, so concurrent writers do not lose them.
 */
export class StackStore {
  readonly root: string;

  constructor(root: string) {
    this.root = resolvePath(root);
  }

  /** Writes `draft` as the next version of `name` and points `opts.labels` at it. */
  async publish(
    name: string,
    draft: StackDraft,
    opts: PublishOptions = {},
  ): Promise<StackManifest> {
    checkName(name);
    const labels = opts.labels ?? ['latest'];
    labels.forEach(checkLabel);
    if (draft.modules.length !== draft.manifest.modules.length) {
      throw new GimError(
        'invalid_argument',
        `${draft.modules.length} module models for ${draft.manifest.modules.length} manifest modules`,
      );
    }
    // Checked now so that a bad draft fails before anything is written.
    let manifest = this.fullManifest(name, 1, draft);

    const stackDir = join(this.root, name);
    const temp = join(stackDir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    inFlight.add(temp);
    try {
      await io(`create ${stackDir}`, async () => {
        await mkdir(this.root, { recursive: true });
        const created = await mkdir(stackDir, { recursive: true });
        if (created !== undefined) await fsyncDir(this.root);
        await mkdir(temp);
      });
      for (const [i, artifacts] of draft.modules.entries()) {
        await saveModelArtifacts(join(temp, `module-${i + 1}`), artifacts);
      }
      let version = (await this.versionsOf(name)).reduce((a, b) => Math.max(a, b), 0) + 1;
      // The manifest goes last: a temp directory with a manifest is complete.
      manifest = this.fullManifest(name, version, draft);
      await io(`write ${temp}`, () => writeJsonAtomic(join(temp, MANIFEST_JSON), manifest));
      for (;;) {
        try {
          await rename(temp, join(stackDir, String(version)));
          break;
        } catch (e) {
          if (!isErrno(e, 'ENOTEMPTY') && !isErrno(e, 'EEXIST') && !isErrno(e, 'EPERM')) {
            throw ioError(`publish ${name}@${version}`, e);
          }
          const taken = await this.versionsOf(name);
          if (!taken.includes(version)) throw ioError(`publish ${name}@${version}`, e);
          // Another writer took this version: take the next free one.
          version = Math.max(version, ...taken) + 1;
          manifest = this.fullManifest(name, version, draft);
          await io(`write ${temp}`, () => writeJsonAtomic(join(temp, MANIFEST_JSON), manifest));
        }
      }
      await io(`sync ${stackDir}`, () => fsyncDir(stackDir));
    } catch (e) {
      await rm(temp, { recursive: true, force: true }).catch(() => undefined);
      throw e;
    } finally {
      inFlight.delete(temp);
    }

    if (labels.length > 0) {
      const version = manifest.version;
      await this.updateLabels(name, (current, versions) => {
        for (const label of labels) {
          // Publishing never moves a label back, so concurrent publishes end on the newest version.
          const at = current[label];
          if (at === undefined || at < version || !versions.includes(at)) current[label] = version;
        }
      });
    }
    return manifest;
  }

  /**
   * Resolves `name`, `name@<version>` or `name@<label>`. A plain name means its `stable` label if
   * set, else `latest`, else the highest version.
   */
  async resolve(ref: string): Promise<StackRef> {
    const at = ref.indexOf('@');
    const name = at < 0 ? ref : ref.slice(0, at);
    const selector = at < 0 ? undefined : ref.slice(at + 1);
    checkName(name);
    if (selector !== undefined && !VERSION_RE.test(selector) && !LABEL_RE.test(selector)) {
      throw new GimError(
        'invalid_argument',
        `'${ref}' is not a stack reference (name, name@<version> or name@<label>)`,
      );
    }
    const versions = await this.versionsOf(name);
    if (versions.length === 0) {
      const names = (await this.list()).map((s) => s.name);
      throw new GimError(
        'not_found',
        `no stack '${name}' in ${this.root}; stacks: ${names.join(', ') || '(none)'}`,
      );
    }
    const labels = await this.readLabels(name);
    const byLabel = (label: string): StackRef => {
      const version = labels[label];
      if (version === undefined) {
        throw new GimError(
          'not_found',
          `stack '${name}' has no label '${label}'; labels: ${formatLabels(labels)}`,
        );
      }
      if (!versions.includes(version)) {
        throw new GimError(
          'not_found',
          `label '${label}' of stack '${name}' points to version ${version}, which does not exist; ` +
            `versions: ${versions.join(', ')}`,
        );
      }
      return { name, version };
    };

    if (selector === undefined) {
      if (labels.stable !== undefined) return byLabel('stable');
      if (labels.latest !== undefined) return byLabel('latest');
      return { name, version: versions[versions.length - 1] as number };
    }
    if (VERSION_RE.test(selector)) {
      const version = Number(selector);
      if (!versions.includes(version)) {
        throw new GimError(
          'not_found',
          `stack '${name}' has no version ${version}; versions: ${versions.join(', ')}`,
        );
      }
      return { name, version };
    }
    return byLabel(selector);
  }

  /** The manifest and the module models of a stack version. */
  async load(ref: string): Promise<LoadedStack> {
    const { name, version } = await this.resolve(ref);
    const manifest = await this.readManifest(name, version);
    const modules: tf.io.ModelArtifacts[] = [];
    for (const m of manifest.modules) {
      modules.push(await loadModelArtifacts(join(this.versionDir(name, version), m.dir)));
    }
    return { manifest, modules };
  }

  async loadManifest(ref: string): Promise<StackManifest> {
    const { name, version } = await this.resolve(ref);
    return this.readManifest(name, version);
  }

  /** The directory of module `index` (1-based, as in `ModuleManifest.index`) of a stack version. */
  async moduleDir(ref: string, index: number): Promise<string> {
    const manifest = await this.loadManifest(ref);
    const module = manifest.modules.find((m) => m.index === index);
    if (module === undefined) {
      throw new GimError(
        'not_found',
        `${manifest.name}@${manifest.version} has no module ${index}; modules: 1..${manifest.modules.length}`,
      );
    }
    return join(this.versionDir(manifest.name, manifest.version), module.dir);
  }

  /** Every stack with at least one version, by name. */
  async list(): Promise<StackSummary[]> {
    const entries = await readDirOrEmpty(this.root);
    const names = entries
      .filter((e) => e.isDirectory() && NAME_RE.test(e.name))
      .map((e) => e.name)
      .sort();
    const out: StackSummary[] = [];
    for (const name of names) {
      const versions = await this.versionsOf(name);
      if (versions.length > 0) out.push({ name, versions, labels: await this.readLabels(name) });
    }
    return out;
  }

  /** The published versions of `name`, ascending. */
  async listVersions(name: string): Promise<number[]> {
    checkName(name);
    const versions = await this.versionsOf(name);
    if (versions.length === 0) await this.resolve(name); // throws not_found, listing the stacks
    return versions;
  }

  /** Points `label` of stack `name` at an existing `version`. */
  async setLabel(name: string, label: string, version: number): Promise<void> {
    checkName(name);
    checkLabel(label);
    if (!Number.isInteger(version) || version < 1) {
      throw new GimError('invalid_argument', `version must be a positive integer, got ${version}`);
    }
    await this.listVersions(name);
    await this.updateLabels(name, (labels, versions) => {
      if (!versions.includes(version)) {
        throw new GimError(
          'not_found',
          `stack '${name}' has no version ${version}; versions: ${versions.join(', ')}`,
        );
      }
      labels[label] = version;
    });
  }

  async removeLabel(name: string, label: string): Promise<void> {
    checkName(name);
    checkLabel(label);
    await this.listVersions(name);
    await this.updateLabels(name, (labels) => {
      if (labels[label] === undefined) {
        throw new GimError(
          'not_found',
          `stack '${name}' has no label '${label}'; labels: ${formatLabels(labels)}`,
        );
      }
      delete labels[label];
    });
  }

  /**
   * Removes `.tmp-*` leftovers of crashed writers under stack `name` (or every stack) that are
   * older than `olderThanMs` (default one hour, so a publish running in another process survives).
   * Returns the removed paths.
   */
  async cleanupTemp(name?: string, opts: { olderThanMs?: number } = {}): Promise<string[]> {
    const olderThanMs = opts.olderThanMs ?? DEFAULT_TEMP_AGE_MS;
    let names: string[];
    if (name !== undefined) {
      checkName(name);
      names = [name];
    } else {
      const entries = await readDirOrEmpty(this.root);
      names = entries.filter((e) => e.isDirectory() && NAME_RE.test(e.name)).map((e) => e.name);
    }
    const removed: string[] = [];
    const now = Date.now();
    for (const n of names) {
      for (const entry of await readDirOrEmpty(join(this.root, n))) {
        if (!entry.name.startsWith(TEMP_PREFIX)) continue;
        const path = join(this.root, n, entry.name);
        if (inFlight.has(path)) continue;
        const info = await stat(path).catch(() => undefined);
        if (info === undefined || now - info.mtimeMs < olderThanMs) continue;
        await io(`remove ${path}`, () => rm(path, { recursive: true, force: true }));
        removed.push(path);
      }
    }
    return removed;
  }

  private versionDir(name: string, version: number): string {
    return join(this.root, name, String(version));
  }

  private fullManifest(name: string, version: number, draft: StackDraft): StackManifest {
    const manifest = { format: STACK_FORMAT, name, version, ...draft.manifest } as StackManifest;
    // The draft's type excludes these, but a caller's object may still carry them.
    Object.assign(manifest, { format: STACK_FORMAT, name, version });
    return checkStackManifest(manifest, `manifest of ${name}`, 'invalid_argument');
  }

  private async readManifest(name: string, version: number): Promise<StackManifest> {
    const file = join(this.versionDir(name, version), MANIFEST_JSON);
    const value = await readJsonFile(file);
    if (value === undefined) throw new GimError('invalid_data', `${file} is missing`);
    const manifest = checkStackManifest(value, file);
    if (manifest.name !== name || manifest.version !== version) {
      throw new GimError(
        'invalid_data',
        `${file}: describes ${manifest.name}@${manifest.version}, not ${name}@${version}`,
      );
    }
    return manifest;
  }

  private async versionsOf(name: string): Promise<number[]> {
    const entries = await readDirOrEmpty(join(this.root, name));
    return entries
      .filter((e) => e.isDirectory() && VERSION_RE.test(e.name))
      .map((e) => Number(e.name))
      .sort((a, b) => a - b);
  }

  private async readLabels(name: string): Promise<Record<string, number>> {
    const file = join(this.root, name, LABELS_JSON);
    const value = await readJsonFile(file);
    if (value === undefined) return {};
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new GimError('invalid_data', `${file}: expected an object of label -> version`);
    }
    const labels: Record<string, number> = {};
    for (const [label, version] of Object.entries(value)) {
      if (!LABEL_RE.test(label) || !Number.isInteger(version) || (version as number) < 1) {
        throw new GimError(
          'invalid_data',
          `${file}: bad entry ${JSON.stringify(label)}: ${version}`,
        );
      }
      labels[label] = version as number;
    }
    return labels;
  }

  /** Read-modify-write of `labels.json` under an in-process queue and a cross-process lock file. */
  private async updateLabels(
    name: string,
    change: (labels: Record<string, number>, versions: number[]) => void,
  ): Promise<void> {
    const stackDir = join(this.root, name);
    const previous = labelQueues.get(stackDir) ?? Promise.resolve();
    const run = previous
      .catch(() => undefined)
      .then(async () => {
        const release = await acquireLock(join(stackDir, LABELS_LOCK));
        try {
          const labels = await this.readLabels(name);
          change(labels, await this.versionsOf(name));
          const sorted = Object.fromEntries(
            Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)),
          );
          await io(`write labels of ${name}`, () =>
            writeJsonAtomic(join(stackDir, LABELS_JSON), sorted),
          );
        } finally {
          await release();
        }
      });
    labelQueues.set(stackDir, run);
    try {
      await run;
    } finally {
      if (labelQueues.get(stackDir) === run) labelQueues.delete(stackDir);
    }
  }
}

function checkName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new GimError(
      'invalid_argument',
      `bad stack name '${name}': use 1-64 of a-z 0-9 . _ - starting with a letter or digit`,
    );
  }
}

function checkLabel(label: string): void {
  if (!LABEL_RE.test(label)) {
    throw new GimError(
      'invalid_argument',
      `bad label '${label}': use 1-32 of a-z 0-9 _ - starting with a letter`,
    );
  }
}

function formatLabels(labels: Record<string, number>): string {
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

async function readDirOrEmpty(dir: string) {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (e) {
    if (isErrno(e, 'ENOENT') || isErrno(e, 'ENOTDIR')) return [];
    throw ioError(`read ${dir}`, e);
  }
}

/** Parses a JSON file; `undefined` if it does not exist. */
async function readJsonFile(file: string): Promise<unknown> {
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

async function io<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw e instanceof GimError ? e : ioError(what, e);
  }
}

function ioError(what: string, e: unknown): GimError {
  return new GimError('io_error', `cannot ${what}: ${String(e)}`, { cause: e });
}
