/**
 * Labelled files listed in a manifest: a CSV of `path,label` rows (an optional `path,label` header,
 * RFC 4180 quoting) or a JSON array of `{"path": ..., "label": ...}`. Relative paths are resolved
 * against the manifest's folder. Opening reads the list and stats every file (a missing one is
 * not_found, naming its row); contents are decoded on demand, as image folders are.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { GimError, isGimError } from '../errors.js';
import { normalizeAudio, type AudioAdapterConfig } from '../modality/audio.js';
import type { AudioDataset } from './audio-folder.js';
import { checkIndices, type ImageDataset } from './dataset.js';
import { decodeAudio } from './decode-audio.js';
import { decodeImage, type DecodeImageOptions } from './decode-image.js';

export interface LabelledFiles {
  /** `files:<absolute manifest path>` (or `files:` for a list given in code). */
  source: string;
  /** Absolute paths, in manifest order. */
  paths: string[];
  /** [n] indices into `classNames`. */
  labels: Int32Array;
  /** Distinct labels, sorted; label `i` is `classNames[i]`. */
  classNames: string[];
  /** sha256 hex of the manifest bytes and each file's size and modification time. */
  fingerprint: string;
}

/** Whether a data spec names a file list (by extension) rather than a dataset or folder. */
export function isFileListSpec(spec: string): boolean {
  return /\.(csv|json)$/i.test(spec);
}

export async function readLabelledFiles(manifestPath: string): Promise<LabelledFiles> {
  const file = resolve(manifestPath);
  const bytes = await readOrThrow(file);
  const text = bytes.toString('utf8');
  const rows = /\.json$/i.test(file) ? parseJsonList(text, file) : parseCsvList(text, file);
  if (rows.length === 0) throw new GimError('invalid_data', `${file}: lists no files`);
  const base = dirname(file);
  const paths = rows.map((r) => resolve(base, r.path));
  const classNames = [...new Set(rows.map((r) => r.label))].sort();
  const index = new Map(classNames.map((name, i) => [name, i]));
  const hash = createHash('sha256').update('gim-file-list-v1\n').update(bytes);
  for (const [i, path] of paths.entries()) {
    let info;
    try {
      info = await stat(path);
    } catch (e) {
      throw new GimError('not_found', `${file}: row ${rows[i]?.row}: no such file ${path}`, {
        cause: e,
      });
    }
    hash.update(`\n${info.size}\t${Math.round(info.mtimeMs)}`);
  }
  return {
    source: `files:${file}`,
    paths,
    labels: Int32Array.from(rows, (r) => index.get(r.label) as number),
    classNames,
    fingerprint: hash.digest('hex'),
  };
}

/** Images of a file list, decoded to the given size (an ImageDataset for feature extraction). */
export function fileImageDataset(files: LabelledFiles, opts: DecodeImageOptions): ImageDataset {
  const info = {
    source: files.source,
    count: files.paths.length,
    height: opts.height,
    width: opts.width,
    channels: opts.channels,
    classNames: files.classNames,
  };
  const size = opts.height * opts.width * opts.channels;
  return {
    info,
    async read(indices) {
      checkIndices(indices, info.count, info.source);
      const n = indices.length;
      const images = new Float32Array(n * size); // [n, h, w, c]
      const labels = new Int32Array(n);
      for (let k = 0; k < n; k++) {
        const i = indices[k] as number;
        const path = files.paths[i] as string;
        images.set(await decodeOrThrow(path, (b) => decodeImage(b, opts)), k * size);
        labels[k] = files.labels[i] as number;
      }
      return { images, labels, n, indices: Int32Array.from(indices) };
    },
    fingerprint: () => Promise.resolve(files.fingerprint),
  };
}

/** Whole clips of a file list, decoded and normalised as the adapter says (as uploads are). */
export function fileAudioClips(
  files: LabelledFiles,
  adapter: AudioAdapterConfig,
): Pick<AudioDataset, 'readFull' | 'utterance'> {
  return {
    utterance: (i) => ({ path: files.paths[i] as string, speaker: files.labels[i] as number }),
    async readFull(i) {
      const path = files.paths[i] as string;
      const decoded = await decodeOrThrow(path, (b) =>
        decodeAudio(b, { sampleRate: adapter.sampleRate, maxSeconds: adapter.maxSeconds }),
      );
      return normalizeAudio(decoded.samples, adapter);
    },
  };
}

/** Unlabelled files (every label 0, one class `?`): what `classify` embeds. */
export function unlabelledFiles(paths: string[]): LabelledFiles {
  return {
    source: 'files:',
    paths: paths.map((p) => resolve(p)),
    labels: new Int32Array(paths.length),
    classNames: ['?'],
    fingerprint: '',
  };
}

interface Row {
  path: string;
  label: string;
  row: number;
}

function parseJsonList(text: string, file: string): Row[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new GimError('invalid_data', `${file} is not valid JSON`, { cause: e });
  }
  if (!Array.isArray(value))
    throw new GimError('invalid_data', `${file}: expected an array of {"path", "label"}`);
  return value.map((item: unknown, i): Row => {
    const entry = item as { path?: unknown; label?: unknown } | null;
    const label = typeof entry?.label === 'number' ? String(entry.label) : entry?.label;
    if (typeof entry?.path !== 'string' || entry.path === '' || typeof label !== 'string' || !label)
      throw new GimError(
        'invalid_data',
        `${file}: item ${i} needs a "path" string and a "label" string or number`,
      );
    return { path: entry.path, label, row: i };
  });
}

function parseCsvList(text: string, file: string): Row[] {
  const records = parseCsv(text, file);
  const first = records[0];
  const header =
    first?.fields.length === 2 &&
    first.fields[0]?.trim().toLowerCase() === 'path' &&
    first.fields[1]?.trim().toLowerCase() === 'label';
  return records.slice(header ? 1 : 0).map(({ fields, line }) => {
    const [path, label] = fields.map((f) => f.trim());
    if (fields.length !== 2 || !path || !label)
      throw new GimError(
        'invalid_data',
        `${file}: line ${line}: expected 'path,label', got ${fields.length} field(s)`,
      );
    return { path, label, row: line };
  });
}

/** RFC 4180 records (quoted fields may hold commas, newlines and doubled quotes); blank lines skipped. */
function parseCsv(text: string, file: string): { fields: string[]; line: number }[] {
  const records: { fields: string[]; line: number }[] = [];
  let fields: string[] = [];
  let field = '';
  let quoted = false;
  let line = 1;
  let start = 1;
  const endRecord = () => {
    fields.push(field);
    if (fields.length > 1 || fields[0]?.trim()) records.push({ fields, line: start });
    fields = [];
    field = '';
  };
  const body = text.replace(/^\uFEFF/, '');
  for (let i = 0; i < body.length; i++) {
    const ch = body[i] as string;
    if (quoted) {
      if (ch === '"' && body[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else {
        if (ch === '\n') line++;
        field += ch;
      }
    } else if (ch === '"' && field.trim() === '') {
      field = '';
      quoted = true;
    } else if (ch === ',') {
      fields.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && body[i + 1] === '\n') i++;
      endRecord();
      start = ++line;
    } else field += ch;
  }
  if (quoted) throw new GimError('invalid_data', `${file}: line ${start}: unterminated quote`);
  endRecord();
  return records;
}

async function readOrThrow(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new GimError('not_found', `no such file: ${path}`, { cause: e });
    throw new GimError('io_error', `cannot read ${path}: ${String(e)}`, { cause: e });
  }
}

/** Decodes one file; a failure names the file, keeping the decoder's code. */
async function decodeOrThrow<T>(path: string, decode: (bytes: Buffer) => Promise<T>): Promise<T> {
  const bytes = await readOrThrow(path);
  try {
    return await decode(bytes);
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new GimError(isGimError(e) ? e.code : 'invalid_data', `${path}: ${reason}`, { cause: e });
  }
}
