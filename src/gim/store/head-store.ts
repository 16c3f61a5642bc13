import { join, resolve as resolvePath, sep } from 'node:path';
import { GimError, isGimError } from '../errors.js';
import { LinearHead, type HeadParams } from '../classify/linear-head.js';
import { DISK_WRITER, type FileWriter, writeJsonAtomic } from './atomic.js';
import type { LabelMoveMeta } from './label-history.js';
import { checkHeadManifest, HEAD_FORMAT, type HeadManifest } from './head-manifest.js';
import { StackStore } from './stack-store.js';
import {
  checkName,
  DEFAULT_TEMP_AGE_MS,
  NAME_RE,
  parseRef,
  readDirOrEmpty,
  readJsonFile,
  type LabelState,
  VersionedDir,
} from './versioned-dir.js';

/** A head to publish: its manifest without the fields the store assigns, and its numbers. */
export interface HeadDraft {
  manifest: Omit<HeadManifest, 'format' | 'name' | 'version'>;
  params: HeadParams;
}

export interface HeadRef {
  model: string;
  name: string;
  version: number;
}

export interface LoadedHead {
  manifest: HeadManifest;
  head: LinearHead;
}

export interface HeadSummary {
  name: string;
  versions: number[];
  labels: Record<string, number>;
}

const CLASSIFIERS = 'classifiers';
const MANIFEST_JSON = 'manifest.json';
const WEIGHTS_JSON = 'weights.json';
const WEIGHTS_FORMAT = 'gim-head-weights/1';

/**
 * Versioned classification heads beside the stack they were trained on:
 *
 * ```
 * <root>/<model>/classifiers/<head>/labels.json            {"latest": 2, "stable": 1}
 * <root>/<model>/classifiers/<head>/<version>/manifest.json  see HeadManifest
 * <root>/<model>/classifiers/<head>/<version>/weights.json   {format, mean, std, weights, bias}
 * ```
 *
 * Published like stack versions (temp directory, then rename; see VersionedDir). A head lives
 * under the stack whose embeddings trained it, and records the exact embedding space it needs:
 * `bindHead` decides which versions of the stack it may be applied to.
 */
export class HeadStore {
  readonly root: string;
  private readonly writer: FileWriter;

  /** `opts.writer` writes every file of a publish (a seam for tests of write errors). */
  constructor(root: string, opts: { writer?: FileWriter } = {}) {
    this.root = resolvePath(root);
    this.writer = opts.writer ?? DISK_WRITER;
  }

  /** Writes `draft` as the next version of head `name` of stack `model`. */
  async publish(
    model: string,
    name: string,
    draft: HeadDraft,
    opts: { labels?: string[] } = {},
  ): Promise<HeadManifest> {
    checkName(model, 'stack');
    checkName(name, 'head');
    const { encoder } = draft.manifest;
    if (encoder.name !== model)
      throw new GimError(
        'invalid_argument',
        `a head of ${encoder.name}@${encoder.version} embeddings cannot be published under '${model}'`,
      );
    let manifest = fullManifest(name, 1, draft);
    // The head's stack version must exist (not_found, listing the stacks, otherwise).
    await new StackStore(this.root).resolve(`${model}@${encoder.version}`);
    let head: LinearHead;
    try {
      head = LinearHead.fromParams(manifest.classes, draft.params);
    } catch (e) {
      throw new GimError('invalid_argument', (e as Error).message, { cause: e });
    }
    if (head.dim !== manifest.featureDim)
      throw new GimError(
        'invalid_argument',
        `the head takes ${head.dim}-d features, its manifest says ${manifest.featureDim}`,
      );
    await this.dir(model, name).publish(
      (temp) =>
        writeJsonAtomic(
          join(temp, WEIGHTS_JSON),
          { format: WEIGHTS_FORMAT, ...draft.params },
          this.writer,
        ),
      async (temp, version) => {
        // The manifest goes last: a temp directory with a manifest is complete.
        manifest = fullManifest(name, version, draft);
        await writeJsonAtomic(join(temp, MANIFEST_JSON), manifest, this.writer);
      },
      opts.labels ?? ['latest'],
    );
    return manifest;
  }

  /** Resolves `head`, `head@<version>` or `head@<label>` among the heads of stack `model`. */
  async resolve(model: string, ref: string): Promise<HeadRef> {
    checkName(model, 'stack');
    const { name, selector } = parseRef(ref, 'head');
    const dir = this.dir(model, name);
    if ((await dir.versions()).length === 0) {
      const names = (await this.list(model)).map((h) => h.name);
      throw new GimError(
        'not_found',
        `stack '${model}' has no head '${name}'; heads: ${names.join(', ') || '(none)'}`,
      );
    }
    return { model, name, version: await dir.resolve(selector) };
  }

  /**
   * The manifest and the head of a version. Damaged or missing files make it `model_unavailable`,
   * naming the file relative to the store's root.
   */
  async load(model: string, ref: string): Promise<LoadedHead> {
    const manifest = await this.loadManifest(model, ref);
    const { name, version } = manifest;
    const file = join(this.versionDir(model, name, version), WEIGHTS_JSON);
    const shown = this.inStore(file);
    const value = await this.readStoreJson(model, name, version, file);
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      throw this.unavailable(model, name, version, `${shown} is missing or not a JSON object`);
    const params = value as HeadParams & { format?: unknown };
    if (params.format !== WEIGHTS_FORMAT)
      throw this.unavailable(model, name, version, `${shown}: format is not '${WEIGHTS_FORMAT}'`);
    let head: LinearHead;
    try {
      head = LinearHead.fromParams(manifest.classes, params);
    } catch (e) {
      throw this.unavailable(model, name, version, `${shown}: ${(e as Error).message}`, e);
    }
    if (head.dim !== manifest.featureDim)
      throw this.unavailable(
        model,
        name,
        version,
        `${shown}: ${head.dim}-d weights, the manifest says ${manifest.featureDim}`,
      );
    return { manifest, head };
  }

  async loadManifest(model: string, ref: string): Promise<HeadManifest> {
    const { name, version } = await this.resolve(model, ref);
    const file = join(this.versionDir(model, name, version), MANIFEST_JSON);
    const shown = this.inStore(file);
    const value = await this.readStoreJson(model, name, version, file);
    if (value === undefined) throw this.unavailable(model, name, version, `${shown} is missing`);
    let manifest: HeadManifest;
    try {
      manifest = checkHeadManifest(value, shown);
    } catch (e) {
      throw this.unavailable(model, name, version, (e as Error).message, e);
    }
    if (manifest.name !== name || manifest.version !== version || manifest.encoder.name !== model)
      throw this.unavailable(
        model,
        name,
        version,
        `${shown} describes head ${manifest.name}@${manifest.version} of ${manifest.encoder.name}`,
      );
    return manifest;
  }

  /** A JSON file of a head version; undefined if missing, `model_unavailable` if not JSON. */
  private async readStoreJson(
    model: string,
    name: string,
    version: number,
    file: string,
  ): Promise<unknown> {
    try {
      return await readJsonFile(file);
    } catch (e) {
      if (!isGimError(e) || e.code !== 'invalid_data') throw e;
      throw this.unavailable(model, name, version, `${this.inStore(file)} is not valid JSON`, e);
    }
  }

  private unavailable(
    model: string,
    name: string,
    version: number,
    what: string,
    cause?: unknown,
  ): GimError {
    return new GimError(
      'model_unavailable',
      `head ${name}@${version} of stack '${model}' is unavailable: ${this.inStore(what)}`,
      { cause },
    );
  }

  /** `text` with the store's root left out of every path in it. */
  private inStore(text: string): string {
    return text.split(this.root + sep).join('');
  }

  /** Every head of stack `model` with at least one version, by name. */
  async list(model: string): Promise<HeadSummary[]> {
    checkName(model, 'stack');
    const entries = await readDirOrEmpty(join(this.root, model, CLASSIFIERS));
    const names = entries
      .filter((e) => e.isDirectory() && NAME_RE.test(e.name))
      .map((e) => e.name)
      .sort();
    const out: HeadSummary[] = [];
    for (const name of names) {
      const dir = this.dir(model, name);
      const versions = await dir.versions();
      if (versions.length > 0) out.push({ name, versions, labels: await dir.readLabels() });
    }
    return out;
  }

  /** Points `label` of head `name` at an existing `version`. */
  async setLabel(model: string, name: string, label: string, version: number): Promise<void> {
    await this.moveLabel(model, name, label, version, { by: 'cli' });
  }

  /** The labels of head `name`, their entity tag and their history. */
  async labelState(model: string, name: string): Promise<LabelState> {
    await this.resolve(model, name);
    return this.dir(model, name).labelState();
  }

  /** Moves (or with null removes) a head label, compare-and-set on `ifMatch`. */
  async moveLabel(
    model: string,
    name: string,
    label: string,
    version: number | null,
    meta: LabelMoveMeta,
    ifMatch?: string,
  ): Promise<LabelState> {
    await this.resolve(model, name);
    return this.dir(model, name).moveLabel(label, version, meta, ifMatch);
  }

  /** Moves a head label back to its previous target. */
  async rollbackLabel(
    model: string,
    name: string,
    label: string,
    meta: LabelMoveMeta,
    ifMatch?: string,
  ): Promise<LabelState> {
    await this.resolve(model, name);
    return this.dir(model, name).rollbackLabel(label, meta, ifMatch);
  }

  /** Removes `.tmp-*` leftovers of crashed publishes of head `name` older than `olderThanMs`. */
  async cleanupTemp(
    model: string,
    name: string,
    opts: { olderThanMs?: number } = {},
  ): Promise<string[]> {
    checkName(model, 'stack');
    checkName(name, 'head');
    return this.dir(model, name).cleanupTemp(opts.olderThanMs ?? DEFAULT_TEMP_AGE_MS);
  }

  private dir(model: string, name: string): VersionedDir {
    return new VersionedDir(
      join(this.root, model, CLASSIFIERS, name),
      { what: `head '${name}' of stack '${model}'`, id: `${model}/${CLASSIFIERS}/${name}` },
      this.writer,
    );
  }

  private versionDir(model: string, name: string, version: number): string {
    return join(this.root, model, CLASSIFIERS, name, String(version));
  }
}

function fullManifest(name: string, version: number, draft: HeadDraft): HeadManifest {
  // The draft's type excludes these, but a caller's object may still carry them.
  const manifest = { format: HEAD_FORMAT, name, version, ...draft.manifest } as HeadManifest;
  Object.assign(manifest, { format: HEAD_FORMAT, name, version });
  return checkHeadManifest(manifest, `manifest of head ${name}`, 'invalid_argument');
}
