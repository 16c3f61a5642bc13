import { closeSync, openSync, writeSync } from 'node:fs';
import type { StepProgress } from '../gim/training/run-training.js';

/**
 * The machine-readable progress of a long command (`--progress-json`): one JSON object per line,
 * appended. A job runner tails the file (or the process's stdout) instead of parsing log lines.
 * Bump `v` on any change a reader could trip over.
 */
export const PROGRESS_EVENTS_VERSION = 1;

export type ReportedCommand = 'train' | 'classifier-train' | 'probe' | 'promote';

/** A progress event as written: every line carries `v`, `t` (ISO-8601) and `type`. */
export type ProgressEvent = { v: typeof PROGRESS_EVENTS_VERSION; t: string } & ProgressEventBody;

export type ProgressEventBody =
  | {
      type: 'start';
      command: ReportedCommand;
      modality?: 'image' | 'audio';
      name?: string;
      pid: number;
      resumed: boolean;
      resumeStep?: number;
    }
  | ({ type: 'progress' } & StepProgressEvent)
  | {
      type: 'epoch';
      phase: number;
      module: number | null;
      epoch: number;
      losses: (number | null)[];
      seconds: number;
    }
  | { type: 'checkpoint'; path: string; globalStep: number; reason: 'epoch' | 'cancel' }
  | { type: 'log'; line: string }
  | {
      type: 'published';
      kind: 'stack' | 'head';
      name: string;
      /** For a head: the stack it belongs to. */
      model?: string;
      version: number;
      labels: string[];
    }
  | ({ type: 'result' } & Record<string, unknown>)
  /** `gim promote`: the gate's verdict, the heads checked or retrained, and whether it moved. */
  | ({ type: 'promotion'; promoted: boolean } & Record<string, unknown>)
  | {
      type: 'end';
      status: 'succeeded' | 'cancelled' | 'failed';
      exitCode: number;
      error?: { code: string; message: string };
    };

/**
 * A training step (encoder training), or one epoch of a head or probe fit (`step` 1 of 1,
 * `losses` [training loss], `validationLoss` when there is a validation split).
 */
export type StepProgressEvent = StepProgress & { validationLoss?: number };

export interface ProgressEventOptions {
  /** At most one `progress` event per this many ms (the very first one and `always` ones go). */
  intervalMs: number;
  /** Milliseconds since the epoch: the events' time and the throttle's clock. */
  now?: () => number;
}

/**
 * Appends events to a file (`-`: stdout), or drops them when there is no target. The file is
 * opened O_APPEND and never truncated (a retried job appends to its earlier attempts' lines),
 * and each line goes out in one synchronous `write`, so a reader never sees half a line once the
 * process has exited, and the last event is on disk before `process.exit`.
 */
export class ProgressEventWriter {
  private lastProgress = -Infinity;
  private readonly now: () => number;

  private constructor(
    private fd: number | null,
    private readonly ownsFd: boolean,
    private readonly intervalMs: number,
    now?: () => number,
  ) {
    this.now = now ?? Date.now;
  }

  static open(target: string | undefined, opts: ProgressEventOptions): ProgressEventWriter {
    if (target === undefined)
      return new ProgressEventWriter(null, false, opts.intervalMs, opts.now);
    if (target === '-') return new ProgressEventWriter(1, false, opts.intervalMs, opts.now);
    return new ProgressEventWriter(openSync(target, 'a'), true, opts.intervalMs, opts.now);
  }

  get enabled(): boolean {
    return this.fd !== null;
  }

  emit(event: ProgressEventBody): void {
    if (this.fd === null) return;
    const line: ProgressEvent = {
      v: PROGRESS_EVENTS_VERSION,
      t: new Date(this.now()).toISOString(),
      ...event,
    };
    writeLine(this.fd, `${JSON.stringify(line)}\n`);
  }

  /** A `progress` event, unless one went out less than `intervalMs` ago (`always` overrides). */
  progress(p: StepProgressEvent, always = false): void {
    const now = this.now();
    if (!always && now - this.lastProgress < this.intervalMs) return;
    this.lastProgress = now;
    this.emit({ type: 'progress', ...p });
  }

  close(): void {
    if (this.fd !== null && this.ownsFd) closeSync(this.fd);
    this.fd = null;
  }
}

function writeLine(fd: number, line: string): void {
  const bytes = Buffer.from(line, 'utf8');
  let done = 0;
  // A regular file takes the whole line in one write; a full pipe may take part of it (or none,
  // EAGAIN, when non-blocking): finish the line rather than leave half of it.
  while (done < bytes.length) {
    try {
      done += writeSync(fd, bytes, done);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
  }
}
