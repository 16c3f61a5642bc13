/**
 * Audio datasets on disk, one folder per speaker: the LibriSpeech layout
 * `<root>/<speaker>/<chapter>/*.flac` or the plain `<root>/<speaker>/*.(wav|flac|mp3|ogg)` (a
 * speaker folder may mix both). Opening lists paths only. Clips are decoded on demand (mono, at
 * the adapter's rate, normalised per whole clip as the adapter says, as an uploaded clip would
 * be, so a quiet window keeps its level relative to its utterance) and kept in an LRU cache,
 * because training cuts a new random window from every utterance each epoch.
 */
import { createHash } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { GimError, isGimError } from '../errors.js';
import { normalizeAudio, randomWindow, validateAudioAdapter } from '../modality/audio.js';
import type { AudioAdapterConfig } from '../modality/audio.js';
import { Rng } from '../random.js';
import { checkIndices } from './dataset.js';
import { decodeAudio } from './decode-audio.js';
import {
  forEachLimited,
  isDirectory,
  isHidden,
  listDir,
  onceUnlessFailed,
  readItem,
  statItem,
} from './folder-files.js';

/** Lower-case extensions of the files a speaker folder holds; other files are ignored. */
export const AUDIO_EXTENSIONS: readonly string[] = ['.wav', '.flac', '.mp3', '.ogg'];

/**
 * 256 MiB of decoded 16 kHz float32 audio: about 70 minutes. A dataset that fits is decoded once;
 * a larger one (train-clean-100 is ~23 GB decoded) gets hits in proportion to the budget.
 */
export const DEFAULT_AUDIO_CACHE_BYTES = 256 * 1024 * 1024;

export interface AudioDatasetInfo {
  /** Where the data came from, for logs and manifests (`audio-folder:<root as given>`). */
  source: string;
  /** Utterances. */
  count: number;
  /** Speaker folder names, sorted; label `i` is `classNames[i]`. */
  classNames: string[];
  sampleRate: number;
  /** How the folder was generated, when it holds a `manifest.json` of `npm run data:speech`. */
  corpus?: CorpusRecipe;
}

/** A generated corpus's recipe: enough to make it again, byte for byte, with the same tools. */
export interface CorpusRecipe {
  generator: string;
  /** The generator's settings (seed, speakers, utterances, voice split, ...). */
  settings: Record<string, unknown>;
  /** Versions of the synthesis tools. */
  tools: Record<string, string>;
  /** The command that regenerates it (`<out>` for the output folder). */
  command: string;
}

const CORPUS_GENERATOR = 'scripts/make-speech-corpus.ts';
/** Settings that the generator records but takes no flag for. */
const RECORDED_ONLY = new Set(['sampleRate', 'format']);

/** The recipe in `<root>/manifest.json` if `npm run data:speech` wrote it (complete), else none. */
async function readCorpusRecipe(root: string): Promise<CorpusRecipe | undefined> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(join(root, 'manifest.json'), 'utf8'));
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const m = parsed as {
    generator?: unknown;
    status?: unknown;
    settings?: unknown;
    tools?: unknown;
  };
  if (m.generator !== CORPUS_GENERATOR || m.status !== 'complete') return undefined;
  if (typeof m.settings !== 'object' || m.settings === null) return undefined;
  const settings = m.settings as Record<string, unknown>;
  const flags = Object.entries(settings)
    .filter(([key, value]) => !RECORDED_ONLY.has(key) && value !== undefined)
    .map(
      ([key, value]) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${String(value)}`,
    );
  return {
    generator: CORPUS_GENERATOR,
    settings,
    tools: (typeof m.tools === 'object' && m.tools !== null ? m.tools : {}) as Record<
      string,
      string
    >,
    command: ['npm run data:speech --', '--out <out>', ...flags].join(' '),
  };
}

export interface Utterance {
  path: string;
  /** Index into `info.classNames`. */
  speaker: number;
  /** The chapter folder (LibriSpeech layout); undefined for a file right in the speaker folder. */
  chapter?: string;
}

export interface AudioWindowBatch {
  /** [n, windowSamples]: one window per requested utterance, in request order. */
  samples: Float32Array;
  /** [n] speaker indices. */
  labels: Int32Array;
  n: number;
}

export interface AudioDataset {
  readonly info: AudioDatasetInfo;
  utterance(index: number): Utterance;
  /**
   * One random window per utterance (see `randomWindow`: shorter clips are zero-padded). Windows
   * depend only on `rng`'s state and the indices, not on decoding order.
   */
  readWindows(
    indices: ArrayLike<number>,
    rng: Rng,
    windowSamples: number,
  ): Promise<AudioWindowBatch>;
  /** The whole clip (a copy: the cache keeps its own). */
  readFull(index: number): Promise<Float32Array>;
  /** sha256 hex of the sorted relative paths and file sizes. Cached. */
  fingerprint(): Promise<string>;
}

export interface AudioFolderOptions {
  adapter: AudioAdapterConfig;
  /** Byte budget of the decoded-clip LRU cache. Default DEFAULT_AUDIO_CACHE_BYTES; 0 disables. */
  cacheBytes?: number;
  /** Files decoded at once. Default 4. */
  concurrency?: number;
}

interface FolderItem extends Utterance {
  /** Relative to the root, `/`-separated: the stable name of the item in fingerprints. */
  rel: string;
}

export async function openAudioFolder(
  root: string,
  opts: AudioFolderOptions,
): Promise<AudioDataset> {
  validateAudioAdapter(opts.adapter);
  const cacheBytes = opts.cacheBytes ?? DEFAULT_AUDIO_CACHE_BYTES;
  const concurrency = opts.concurrency ?? 4;
  if (!(Number.isInteger(cacheBytes) && cacheBytes >= 0))
    throw new GimError('invalid_argument', `cacheBytes must be an integer >= 0, got ${cacheBytes}`);
  if (!(Number.isInteger(concurrency) && concurrency >= 1))
    throw new GimError(
      'invalid_argument',
      `concurrency must be a positive integer, got ${concurrency}`,
    );

  const absRoot = resolve(root);
  const classNames: string[] = [];
  for (const entry of await listDir(absRoot)) {
    if (!isHidden(entry.name) && (await isDirectory(join(absRoot, entry.name), entry)))
      classNames.push(entry.name);
  }
  classNames.sort();
  if (classNames.length === 0) {
    throw new GimError(
      'invalid_data',
      `${absRoot}: no speaker sub-folders (expected root/<speaker>/[<chapter>/]*.flac)`,
    );
  }

  const items: FolderItem[] = [];
  for (const [speaker, name] of classNames.entries()) {
    const found = await listSpeaker(join(absRoot, name));
    if (found.length === 0) {
      throw new GimError(
        'invalid_data',
        `${join(absRoot, name)}: speaker folder holds no ${AUDIO_EXTENSIONS.join(' ')} files`,
      );
    }
    for (const { path, chapter } of found) {
      const rel = relative(absRoot, path).split(sep).join('/');
      items.push(chapter === undefined ? { path, rel, speaker } : { path, rel, speaker, chapter });
    }
  }

  const info: AudioDatasetInfo = {
    // As the caller named it: a relative path recorded in a manifest opens the same data again
    // from another checkout (an absolute one only on the machine that wrote it).
    source: `audio-folder:${root}`,
    count: items.length,
    classNames,
    sampleRate: opts.adapter.sampleRate,
  };
  const corpus = await readCorpusRecipe(absRoot);
  if (corpus) info.corpus = corpus;
  return new AudioFolderDataset(info, items, opts.adapter, new ClipCache(cacheBytes), concurrency);
}

/**
 * Splits utterance indices per speaker: `testFraction` of each speaker's utterances (rounded, but
 * at least one and at most all but one) go to `test`, so every speaker with two or more utterances
 * is on both sides; a speaker with one utterance is in `train` only. Both sides ascending.
 */
export function splitByUtterance(
  dataset: Pick<AudioDataset, 'info' | 'utterance'>,
  testFraction: number,
  seed: number,
): { train: Int32Array; test: Int32Array } {
  if (!(testFraction > 0 && testFraction < 1)) {
    throw new GimError('invalid_argument', `testFraction must be in (0, 1), got ${testFraction}`);
  }
  const bySpeaker: number[][] = dataset.info.classNames.map(() => []);
  for (let i = 0; i < dataset.info.count; i++) bySpeaker[dataset.utterance(i).speaker]?.push(i);

  const rng = new Rng(seed);
  const train: number[] = [];
  const test: number[] = [];
  for (const members of bySpeaker) {
    rng.shuffle(members);
    const nTest =
      members.length < 2
        ? 0
        : Math.min(members.length - 1, Math.max(1, Math.round(members.length * testFraction)));
    test.push(...members.slice(0, nTest));
    train.push(...members.slice(nTest));
  }
  const sorted = (xs: number[]): Int32Array => Int32Array.from(xs).sort();
  return { train: sorted(train), test: sorted(test) };
}

class AudioFolderDataset implements AudioDataset {
  /** sha256 of the file list, computed on first use. */
  readonly fingerprint = onceUnlessFailed(() => this.computeFingerprint());
  /** Decodes in flight, so an utterance requested twice at once is decoded once. */
  private readonly pending = new Map<number, Promise<Float32Array>>();

  constructor(
    readonly info: AudioDatasetInfo,
    private readonly items: FolderItem[],
    private readonly adapter: AudioAdapterConfig,
    private readonly cache: ClipCache,
    private readonly concurrency: number,
  ) {}

  utterance(index: number): Utterance {
    checkIndices([index], this.info.count, this.info.source);
    const { path, speaker, chapter } = this.items[index] as FolderItem;
    return chapter === undefined ? { path, speaker } : { path, speaker, chapter };
  }

  async readWindows(
    indices: ArrayLike<number>,
    rng: Rng,
    windowSamples: number,
  ): Promise<AudioWindowBatch> {
    checkIndices(indices, this.info.count, this.info.source);
    if (!(Number.isInteger(windowSamples) && windowSamples > 0)) {
      throw new GimError(
        'invalid_argument',
        `windowSamples must be a positive integer, got ${windowSamples}`,
      );
    }
    const n = indices.length;
    // One generator per item, drawn in request order before any decode finishes.
    const itemRngs = Array.from({ length: n }, () => rng.fork());
    const samples = new Float32Array(n * windowSamples); // [n, windowSamples]
    const labels = new Int32Array(n);
    await forEachLimited(n, this.concurrency, async (k) => {
      const index = indices[k] as number;
      const clip = await this.clip(index);
      samples.set(randomWindow(clip, windowSamples, itemRngs[k] as Rng), k * windowSamples);
      labels[k] = (this.items[index] as FolderItem).speaker;
    });
    return { samples, labels, n };
  }

  async readFull(index: number): Promise<Float32Array> {
    checkIndices([index], this.info.count, this.info.source);
    return (await this.clip(index)).slice();
  }

  /** The decoded, normalised clip; shared with the cache, never handed out unprotected. */
  private clip(index: number): Promise<Float32Array> {
    const cached = this.cache.get(index);
    if (cached) return Promise.resolve(cached);
    let inFlight = this.pending.get(index);
    if (!inFlight) {
      inFlight = this.decode(this.items[index] as FolderItem).then(
        (clip) => {
          this.pending.delete(index);
          this.cache.put(index, clip);
          return clip;
        },
        (e: unknown) => {
          this.pending.delete(index);
          throw e;
        },
      );
      this.pending.set(index, inFlight);
    }
    return inFlight;
  }

  private async decode(item: FolderItem): Promise<Float32Array> {
    const bytes = await readItem(item.path);
    try {
      const { samples } = await decodeAudio(bytes, {
        sampleRate: this.adapter.sampleRate,
        maxSeconds: this.adapter.maxSeconds,
      });
      return normalizeAudio(samples, this.adapter);
    } catch (e) {
      const reason = e instanceof Error ? e.message : String(e);
      throw new GimError(isGimError(e) ? e.code : 'invalid_data', `${item.path}: ${reason}`, {
        cause: e,
      });
    }
  }

  private async computeFingerprint(): Promise<string> {
    const lines = new Array<string>(this.items.length);
    await forEachLimited(this.items.length, 8, async (i) => {
      const item = this.items[i] as FolderItem;
      lines[i] = `${item.rel}\t${(await statItem(item.path)).size}\n`;
    });
    lines.sort();
    const hash = createHash('sha256').update('gim-audio-folder-v1\n');
    for (const line of lines) hash.update(line);
    return hash.digest('hex');
  }
}

/**
 * Least-recently-used decoded clips within a byte budget (a Map iterates in insertion order, so
 * the first key is the stalest). A clip larger than the whole budget is not kept.
 */
class ClipCache {
  private readonly clips = new Map<number, Float32Array>();
  private bytes = 0;

  constructor(private readonly budget: number) {}

  get(index: number): Float32Array | undefined {
    const clip = this.clips.get(index);
    if (clip) {
      this.clips.delete(index);
      this.clips.set(index, clip);
    }
    return clip;
  }

  put(index: number, clip: Float32Array): void {
    if (clip.byteLength > this.budget || this.clips.has(index)) return;
    this.clips.set(index, clip);
    this.bytes += clip.byteLength;
    for (const [key, old] of this.clips) {
      if (this.bytes <= this.budget) break;
      this.clips.delete(key);
      this.bytes -= old.byteLength;
    }
  }
}

/** A speaker's audio files: right inside (no chapter) and one folder level down (chapters). */
async function listSpeaker(dir: string): Promise<{ path: string; chapter?: string }[]> {
  const found: { path: string; chapter?: string }[] = [];
  for (const entry of await listDir(dir)) {
    if (isHidden(entry.name)) continue;
    const path = join(dir, entry.name);
    if (await isDirectory(path, entry)) {
      for (const inner of await listDir(path)) {
        if (!isHidden(inner.name) && isAudioFile(inner))
          found.push({ path: join(path, inner.name), chapter: entry.name });
      }
    } else if (isAudioFile(entry)) {
      found.push({ path });
    }
  }
  return found.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

function isAudioFile(entry: Dirent): boolean {
  const name = entry.name.toLowerCase();
  return !entry.isDirectory() && AUDIO_EXTENSIONS.some((ext) => name.endsWith(ext));
}
