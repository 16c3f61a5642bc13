import { join, resolve as resolvePath, sep } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { GimError, isGimError } from '../errors.js';
import type { GoldenRecord } from '../golden/golden-record.js';
import { STACK_FORMAT, type StackEvaluation, type StackManifest } from './manifest.js';
import { checkStackManifest } from './manifest-schema.js';
import { DISK_WRITER, type FileWriter, writeJsonAtomic } from './atomic.js';
import { checkModelFiles, loadModelArtifacts, saveModelArtifacts } from './tfjs-files.js';
import type { LabelMoveMeta } from './label-history.js';
import {
  checkLabel,
  checkName,
  DEFAULT_TEMP_AGE_MS,
  NAME_RE,
  parseRef,
  readDirOrEmpty,
  readJsonFile,
  type LabelState,
  VersionedDir,
} from './versioned-dir.js';

/** A stack to publish: its manifest without the fields the store assigns, and one model per module. */
export interface StackDraft {
  manifest: Omit<StackManifest, 'name' | 'version' | 'format'>;
  modules: tf.io.ModelArtifacts[];
}

export interface PublishOptions {
  /** Labels to point at the new version; default `['latest']`. */
  labels?: string[];
  /**
   * Record golden embeddings (default true): computed on the current tfjs backend from the very
   * module artifacts being written, unless the draft's manifest carries them already. false only
   * for drafts whose modules are not a loadable stack (the store's own tests).
   */
  golden?: boolean;
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
  /** `{}` when `unavailable`. */
  labels: Record<string, number>;
  /**
   * Set when the stack's name and labels cannot be resolved (a damaged `labels.json`): the
   * `model_unavailable` error saying why. Its versions may still be loaded by number.
   */
  unavailable?: GimError;
}

const MANIFEST_JSON = 'manifest.json';
/** Manifest rewrites in flight in this process, by `name@version` (one at a time each). */
const manifestWrites = new Map<string, Promise<unknown>>();

/**
 * Versioned encoder stacks on the filesystem:
 *
 * ```
 * <root>/<name>/labels.json                 {"latest": 4, "stable": 3}  (replaced atomically)
 * <root>/<name>/<version>/manifest.json
 * <root>/<name>/<version>/module-<i>/model.json + weights.bin
 * <root>/<name>/classifiers/...             heads bound to the stack (see HeadStore)
 * ```
 *
 * A version is written into `<root>/<name>/.tmp-<random>` and renamed into place, so a reader never
 * sees a half-written version and a crash leaves only a `.tmp-*` directory. Versions are never
 * rewritten. Label updates are serialised by a lock file, so concurrent writers do not lose them
 * (see VersionedDir).
 */
export interface StackStoreOptions {
  /**
   * How long (ms) a successful `resolve` is remembered. 0 (the default): every call reads the
   * directory and `labels.json`. A server on the request path sets ~1 s: a label moved by another
   * process is then seen within that time, and at once when moved through this store.
   */
  resolveCacheMs?: number;
  /** Writes every file of a publish (a seam for tests of write errors; default: the disk). */
  writer?: FileWriter;
}

export class StackStore {
  readonly root: string;
  private readonly resolveCacheMs: number;
  private readonly writer: FileWriter;
  /** ref -> its resolution and when it started (only while `resolveCacheMs` > 0). */
  private readonly resolved = new Map<string, { at: number; ref: Promise<StackRef> }>();

  constructor(root: string, opts: StackStoreOptions = {}) {
    this.root = resolvePath(root);
    this.resolveCacheMs = opts.resolveCacheMs ?? 0;
    this.writer = opts.writer ?? DISK_WRITER;
  }

  /** Writes `draft` as the next version of `name` and points `opts.labels` at it. */
  async publish(
    name: string,
    draft: StackDraft,
    opts: PublishOptions = {},
  ): Promise<StackManifest> {
    checkName(name, 'stack');
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
    let sealed = draft;
    if (opts.golden !== false && draft.manifest.golden === undefined) {
      // Before anything is written: the version is complete (and immutable) once renamed.
      const golden = await goldenOfDraft(manifest, draft.modules);
      sealed = { ...draft, manifest: { ...draft.manifest, golden } };
      manifest = this.fullManifest(name, 1, sealed);
    }
    try {
      await this.dir(name).publish(
        async (temp) => {
          for (const [i, artifacts] of sealed.modules.entries()) {
            await saveModelArtifacts(join(temp, `module-${i + 1}`), artifacts, this.writer);
          }
        },
        async (temp, version) => {
          // The manifest goes last: a temp directory with a manifest is complete.
          manifest = this.fullManifest(name, version, sealed);
          await writeJsonAtomic(join(temp, MANIFEST_JSON), manifest, this.writer);
        },
        labels,
      );
    } finally {
      this.resolved.clear(); // even a failed publish may have moved a label
    }
    return manifest;
  }

  /**
   * Adds golden embeddings to a published version that has none (versions published before they
   * existed): rewrites only its manifest.json, atomically. A conflict if it has them already,
   * unless `force`. The one change a version ever gets: its weights and the rest of its manifest
   * stay as they are (checked).
   */
  async recordGolden(
    ref: string,
    golden: GoldenRecord,
    opts: { force?: boolean } = {},
  ): Promise<StackManifest> {
    const { name, version } = await this.resolve(ref);
    const manifest = await this.readManifest(name, version);
    if (manifest.golden !== undefined && opts.force !== true) {
      throw new GimError(
        'conflict',
        `${name}@${version} has golden embeddings already (recorded on ${manifest.golden.backend}); ` +
          'replace them with --force',
      );
    }
    const updated = checkStackManifest(
      { ...manifest, golden },
      `manifest of ${name}@${version}`,
      'invalid_argument',
    );
    const file = join(this.versionDir(name, version), MANIFEST_JSON);
    await writeJsonAtomic(file, updated, this.writer);
    return updated;
  }

  /**
   * Appends an evaluation (a promotion gate's verdict, a recorded probe) to a version's manifest
   * (rewritten atomically, like `recordGolden`; nothing else in it changes). Concurrent
   * recorders in one process queue.
   */
  async recordEvaluation(ref: string, evaluation: StackEvaluation): Promise<StackManifest> {
    const { name, version } = await this.resolve(ref);
    const key = `${name}@${version}`;
    const previous = manifestWrites.get(key) ?? Promise.resolve();
    const run = previous
      .catch(() => undefined)
      .then(async () => {
        const manifest = await this.readManifest(name, version);
        const updated = checkStackManifest(
          { ...manifest, evaluations: [...(manifest.evaluations ?? []), evaluation] },
          `manifest of ${key}`,
          'invalid_argument',
        );
        await writeJsonAtomic(
          join(this.versionDir(name, version), MANIFEST_JSON),
          updated,
          this.writer,
        );
        return updated;
      });
    manifestWrites.set(key, run);
    try {
      return await run;
    } finally {
      if (manifestWrites.get(key) === run) manifestWrites.delete(key);
    }
  }

  /** Records a label decision that moved nothing (a refused or dry-run promotion) in its history. */
  async recordLabelDecision(name: string, label: string, meta: LabelMoveMeta): Promise<LabelState> {
    checkName(name, 'stack');
    await this.listVersions(name);
    return this.dir(name).recordDecision(label, meta);
  }

  /**
   * Resolves `name`, `name@<version>` or `name@<label>`. A plain name means its `stable` label if
   * set, else `latest`, else the highest version.
   */
  async resolve(ref: string): Promise<StackRef> {
    if (this.resolveCacheMs <= 0) return this.resolveNow(ref);
    const now = performance.now();
    const hit = this.resolved.get(ref);
    if (hit !== undefined && now - hit.at < this.resolveCacheMs) return hit.ref;
    const entry = { at: now, ref: this.resolveNow(ref) };
    this.resolved.set(ref, entry);
    // Failures are not remembered: a stack published a moment later resolves at once.
    entry.ref.catch(() => {
      if (this.resolved.get(ref) === entry) this.resolved.delete(ref);
    });
    if (this.resolved.size > 1024) this.dropExpired(now);
    return entry.ref;
  }

  private dropExpired(now: number): void {
    for (const [ref, { at }] of this.resolved) {
      if (now - at >= this.resolveCacheMs) this.resolved.delete(ref);
    }
  }

  private async resolveNow(ref: string): Promise<StackRef> {
    const { name, selector } = parseRef(ref, 'stack');
    const dir = this.dir(name);
    if ((await dir.versions()).length === 0) {
      const names = (await this.list()).map((s) => s.name);
      throw new GimError(
        'not_found',
        `no stack '${name}'; stacks: ${names.join(', ') || '(none)'}`,
      );
    }
    return { name, version: await dir.resolve(selector) };
  }

  /**
   * The manifest and the module models of a stack version. A module directory or file that is
   * missing or damaged makes the version `model_unavailable`, naming the file in the store.
   */
  async load(ref: string): Promise<LoadedStack> {
    const { name, version } = await this.resolve(ref);
    const manifest = await this.readManifest(name, version);
    const modules: tf.io.ModelArtifacts[] = [];
    for (const m of manifest.modules) {
      modules.push(
        await this.moduleFiles(name, version, () =>
          loadModelArtifacts(join(this.versionDir(name, version), m.dir)),
        ),
      );
    }
    return { manifest, modules };
  }

  /**
   * The manifest of a stack version once its module files are checked as `load` would find them,
   * without reading the weights (a `stat` each): `model_unavailable` if any is missing or damaged.
   */
  async check(ref: string): Promise<StackManifest> {
    const { name, version } = await this.resolve(ref);
    const manifest = await this.readManifest(name, version);
    for (const m of manifest.modules) {
      await this.moduleFiles(name, version, () =>
        checkModelFiles(join(this.versionDir(name, version), m.dir)),
      );
    }
    return manifest;
  }

  /** Runs a read of module files; a missing or damaged one makes the version unavailable. */
  private async moduleFiles<T>(name: string, version: number, read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (e) {
      if (!isGimError(e) || (e.code !== 'not_found' && e.code !== 'invalid_data')) throw e;
      throw this.unavailable(name, version, e.message, e);
    }
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

  /**
   * Every stack with at least one version, by name. A stack whose `labels.json` is damaged is
   * listed with `unavailable` set, so that one broken stack does not hide the others.
   */
  async list(): Promise<StackSummary[]> {
    const out: StackSummary[] = [];
    for (const name of await this.stackDirs()) {
      const dir = this.dir(name);
      const versions = await dir.versions();
      if (versions.length === 0) continue;
      try {
        out.push({ name, versions, labels: await dir.readLabels() });
      } catch (e) {
        if (!isGimError(e) || e.code !== 'model_unavailable') throw e;
        out.push({ name, versions, labels: {}, unavailable: e });
      }
    }
    return out;
  }

  /** The published versions of `name`, ascending. */
  async listVersions(name: string): Promise<number[]> {
    checkName(name, 'stack');
    const versions = await this.dir(name).versions();
    if (versions.length === 0) await this.resolve(name); // throws not_found, listing the stacks
    return versions;
  }

  /** Points `label` of stack `name` at an existing `version`. */
  async setLabel(name: string, label: string, version: number): Promise<void> {
    await this.moveLabel(name, label, version, { by: 'cli' });
  }

  async removeLabel(name: string, label: string): Promise<void> {
    await this.moveLabel(name, label, null, { by: 'cli' });
  }

  /** The labels of stack `name`, their entity tag and their history. */
  async labelState(name: string): Promise<LabelState> {
    checkName(name, 'stack');
    await this.listVersions(name);
    return this.dir(name).labelState();
  }

  /** Moves (or with null removes) a label, compare-and-set on `ifMatch`; recorded in history. */
  async moveLabel(
    name: string,
    label: string,
    version: number | null,
    meta: LabelMoveMeta,
    ifMatch?: string,
  ): Promise<LabelState> {
    checkName(name, 'stack');
    checkLabel(label);
    await this.listVersions(name);
    try {
      return await this.dir(name).moveLabel(label, version, meta, ifMatch);
    } finally {
      this.resolved.clear();
    }
  }

  /** Moves `label` back to its previous target. */
  async rollbackLabel(
    name: string,
    label: string,
    meta: LabelMoveMeta,
    ifMatch?: string,
  ): Promise<LabelState> {
    checkName(name, 'stack');
    checkLabel(label);
    await this.listVersions(name);
    try {
      return await this.dir(name).rollbackLabel(label, meta, ifMatch);
    } finally {
      this.resolved.clear();
    }
  }

  /**
   * Removes `.tmp-*` leftovers of crashed writers under stack `name` (or every stack) that are
   * older than `olderThanMs` (default one hour, so a publish running in another process survives).
   * Returns the removed paths.
   */
  async cleanupTemp(name?: string, opts: { olderThanMs?: number } = {}): Promise<string[]> {
    let names: string[];
    if (name !== undefined) {
      checkName(name, 'stack');
      names = [name];
    } else {
      names = await this.stackDirs();
    }
    const removed: string[] = [];
    for (const n of names) {
      removed.push(...(await this.dir(n).cleanupTemp(opts.olderThanMs ?? DEFAULT_TEMP_AGE_MS)));
    }
    return removed;
  }

  private dir(name: string): VersionedDir {
    return new VersionedDir(
      join(this.root, name),
      { what: `stack '${name}'`, id: name },
      this.writer,
    );
  }

  /** Directories under the root named like stacks, sorted. */
  private async stackDirs(): Promise<string[]> {
    const entries = await readDirOrEmpty(this.root);
    return entries
      .filter((e) => e.isDirectory() && NAME_RE.test(e.name))
      .map((e) => e.name)
      .sort();
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

  /** A version's manifest; `model_unavailable` when it is missing, not JSON or not a manifest. */
  private async readManifest(name: string, version: number): Promise<StackManifest> {
    const file = join(this.versionDir(name, version), MANIFEST_JSON);
    const shown = this.inStore(file);
    let value: unknown;
    try {
      value = await readJsonFile(file);
    } catch (e) {
      if (!isGimError(e) || e.code !== 'invalid_data') throw e;
      throw this.unavailable(name, version, `${shown} is not valid JSON`, e);
    }
    if (value === undefined) throw this.unavailable(name, version, `${shown} is missing`);
    let manifest: StackManifest;
    try {
      manifest = checkStackManifest(value, shown);
    } catch (e) {
      throw this.unavailable(name, version, (e as Error).message, e);
    }
    if (manifest.name !== name || manifest.version !== version) {
      throw this.unavailable(
        name,
        version,
        `${shown} describes ${manifest.name}@${manifest.version}`,
      );
    }
    return manifest;
  }

  /**
   * A version that cannot be served because of its files: says which, relative to the store's
   * root (a client may read the message; the root's own path is not its business).
   */
  private unavailable(name: string, version: number, what: string, cause?: unknown): GimError {
    return new GimError(
      'model_unavailable',
      `${name}@${version} is unavailable: ${this.inStore(what)}`,
      { cause },
    );
  }

  /** `text` with the store's root left out of every path in it. */
  private inStore(text: string): string {
    return text.split(this.root + sep).join('');
  }
}

/**
 * The golden record of a draft, computed from its module artifacts. Imported on demand: the store
 * is also used on the service's HTTP thread, which never loads tfjs (only publishers need it).
 */
async function goldenOfDraft(
  manifest: StackManifest,
  modules: tf.io.ModelArtifacts[],
): Promise<GoldenRecord> {
  const { goldenFromArtifacts } = await import('../golden/golden.js');
  return goldenFromArtifacts(manifest, modules);
}
