/**
 * Training jobs on the models volume, so that they outlive the API process and the training pod:
 *
 * ```
 * MODELS_DIR/.jobs/<id>/job.json         the record (replaced atomically: temp, fsync, rename)
 * MODELS_DIR/.jobs/<id>/events.ndjson    the job's event stream, append-only (line n = seq n)
 * MODELS_DIR/.jobs/<id>/progress.ndjson  the trainer's own NDJSON stream (gim --progress-json)
 * MODELS_DIR/.jobs/<id>/train.log        the trainer's stdout and stderr
 * MODELS_DIR/.jobs/<id>/checkpoint/      the trainer's checkpoints (encoder jobs)
 * MODELS_DIR/.jobs/.keys/<sha256>        Idempotency-Key -> job id (created exclusively)
 * ```
 * One writer (the job controller) per file; readers (other replicas, SSE streams) read whole
 * lines only. Stack listings skip `.jobs` (stack names cannot start with '.').
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GimError } from '../gim/errors.js';
import { fsyncDir, isErrno, writeFileDurable, writeJsonAtomic } from '../gim/store/atomic.js';
import type { JobEvent, JobEventType, JobRecord } from './job-record.js';
import type { JobPaths } from './runner.js';

export const JOBS_DIR = '.jobs';
/** Job ids: also Kubernetes label values and part of Job names (kubernetes-job.ts). */
export const JOB_ID_RE = /^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$/;

export class JobStore {
  readonly root: string;
  /** Lines written to each events.ndjson by this process (seq of the next one - 1). */
  private readonly seqs = new Map<string, number>();
  /** Appends to one file in order. */
  private readonly appendChains = new Map<string, Promise<unknown>>();

  constructor(modelsDir: string) {
    this.root = join(modelsDir, JOBS_DIR);
  }

  /** A new id: time of creation (sortable) and randomness, e.g. `20261207-031502-3fa9c1`. */
  static newId(now: Date): string {
    const t = now.toISOString().replace(/[-:T]/g, '').slice(0, 14);
    return `${t.slice(0, 8)}-${t.slice(8)}-${randomBytes(3).toString('hex')}`;
  }

  paths(id: string): JobPaths {
    checkId(id);
    const dir = join(this.root, id);
    return {
      dir,
      record: join(dir, 'job.json'),
      events: join(dir, 'events.ndjson'),
      progress: join(dir, 'progress.ndjson'),
      log: join(dir, 'train.log'),
      checkpoint: join(dir, 'checkpoint'),
    };
  }

  /**
   * Records a new job. With an idempotency key, the key is claimed first (an exclusive create):
   * if it was claimed before, nothing is written and the earlier job's id is returned.
   */
  async create(job: JobRecord): Promise<{ id: string; created: boolean }> {
    const paths = this.paths(job.id);
    await mkdir(this.root, { recursive: true });
    if (job.idempotencyKey !== undefined) {
      const keys = join(this.root, '.keys');
      await mkdir(keys, { recursive: true });
      const keyFile = join(keys, keyDigest(job.idempotencyKey));
      try {
        await writeFileDurable(keyFile, job.id);
        await fsyncDir(keys);
      } catch (e) {
        if (!isErrno(e, 'EEXIST')) throw e;
        const earlier = (await readFile(keyFile, 'utf8')).trim();
        // A key whose job record was never written (a crash in between) is taken over.
        if (earlier !== job.id && (await this.read(earlier)) !== null)
          return { id: earlier, created: false };
        await writeJsonAtomic(keyFile, job.id);
      }
    }
    await mkdir(paths.dir, { recursive: true });
    await writeJsonAtomic(paths.record, job);
    await fsyncDir(this.root);
    return { id: job.id, created: true };
  }

  async read(id: string): Promise<JobRecord | null> {
    if (!JOB_ID_RE.test(id)) return null;
    try {
      return JSON.parse(await readFile(this.paths(id).record, 'utf8')) as JobRecord;
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return null;
      if (e instanceof SyntaxError)
        throw new GimError('io_error', `job ${id}: job.json is not valid JSON`, { cause: e });
      throw e;
    }
  }

  async write(job: JobRecord): Promise<void> {
    await writeJsonAtomic(this.paths(job.id).record, job);
  }

  /** Every job record, oldest first; unreadable ones are reported to `onBroken` and skipped. */
  async list(
    onBroken: (id: string, error: unknown) => void = () => undefined,
  ): Promise<JobRecord[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return [];
      throw e;
    }
    const jobs: JobRecord[] = [];
    for (const id of names.filter((n) => JOB_ID_RE.test(n)).sort()) {
      try {
        const job = await this.read(id);
        if (job) jobs.push(job);
      } catch (e) {
        onBroken(id, e);
      }
    }
    return jobs.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  /** Removes a job's directory (record, events, log, checkpoints) and its idempotency key. */
  async remove(job: JobRecord): Promise<void> {
    await rm(this.paths(job.id).dir, { recursive: true, force: true });
    if (job.idempotencyKey !== undefined)
      await rm(join(this.root, '.keys', keyDigest(job.idempotencyKey)), { force: true });
    this.seqs.delete(job.id);
  }

  /**
   * A cancel asked of a replica that does not run the job's trainer: recorded beside the job
   * (`cancel.json`) for the controller that does, which alone writes job.json.
   */
  async requestCancel(id: string, cancel: NonNullable<JobRecord['cancel']>): Promise<void> {
    await writeJsonAtomic(join(this.paths(id).dir, 'cancel.json'), cancel);
  }

  /** The recorded cancel request of a job, removed as it is taken; undefined when none. */
  async takeCancelRequest(id: string): Promise<JobRecord['cancel']> {
    const path = join(this.paths(id).dir, 'cancel.json');
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return undefined;
      throw e;
    }
    await rm(path, { force: true });
    return JSON.parse(text) as JobRecord['cancel'];
  }

  /** Appends one event (fsynced) and returns it with its seq (its line number). */
  appendEvent(
    id: string,
    type: JobEventType,
    t: string,
    fields: Record<string, unknown> = {},
  ): Promise<JobEvent> {
    const path = this.paths(id).events;
    const previous = this.appendChains.get(id) ?? Promise.resolve();
    const next = previous.then(async () => {
      let seq = this.seqs.get(id);
      if (seq === undefined) seq = await countLines(path);
      seq += 1;
      const event: JobEvent = { ...fields, seq, t, type };
      const handle = await open(path, 'a');
      try {
        await handle.write(`${JSON.stringify(event)}\n`);
        await handle.datasync();
      } finally {
        await handle.close();
      }
      this.seqs.set(id, seq);
      return event;
    });
    this.appendChains.set(
      id,
      next.catch(() => undefined),
    );
    return next;
  }

  /** Events with seq > `after`, read from the file (complete lines only). */
  async readEvents(id: string, after = 0): Promise<JobEvent[]> {
    const text = await readIfExists(this.paths(id).events);
    const events: JobEvent[] = [];
    const lines = text.split('\n');
    lines.pop(); // the part after the last newline: empty, or a line still being written
    for (const line of lines) {
      if (line === '') continue;
      const event = JSON.parse(line) as JobEvent;
      if (event.seq > after) events.push(event);
    }
    return events;
  }

  /** The last `tail` lines (all when undefined) of the trainer's log. */
  async readLog(id: string, tail?: number): Promise<string> {
    const text = await readIfExists(this.paths(id).log);
    if (tail === undefined) return text;
    const lines = text.split('\n');
    const last = lines.at(-1) === '' ? lines.slice(0, -1) : lines;
    return last.slice(-tail).join('\n') + (last.length > 0 ? '\n' : '');
  }

  /** Size of a file, 0 when it does not exist. */
  static async sizeOf(path: string): Promise<number> {
    try {
      return (await stat(path)).size;
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return 0;
      throw e;
    }
  }
}

function checkId(id: string): void {
  if (!JOB_ID_RE.test(id))
    throw new GimError('not_found', `no job ${JSON.stringify(id.slice(0, 64))}`);
}

function keyDigest(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

async function readIfExists(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return '';
    throw e;
  }
}

async function countLines(path: string): Promise<number> {
  const text = await readIfExists(path);
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/**
 * Reads whole new lines of an NDJSON file from a byte offset: the trainer's progress stream,
 * which another process (or a pod) appends to.
 */
export async function readNewLines(
  path: string,
  offset: number,
): Promise<{ lines: string[]; offset: number }> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return { lines: [], offset };
    throw e;
  }
  try {
    const { size } = await handle.stat();
    if (size <= offset) return { lines: [], offset };
    const buffer = Buffer.alloc(size - offset);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
    const chunk = buffer.subarray(0, bytesRead);
    const end = chunk.lastIndexOf(0x0a);
    if (end < 0) return { lines: [], offset };
    const lines = chunk.subarray(0, end).toString('utf8').split('\n');
    return { lines, offset: offset + end + 1 };
  } finally {
    await handle.close();
  }
}
