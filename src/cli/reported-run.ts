import { Option, type Command } from 'commander';
import { GimError } from '../gim/errors.js';
import { errorOf, exitCodeOf, EXIT } from './exit-codes.js';
import {
  ProgressEventWriter,
  type ProgressEventBody,
  type ReportedCommand,
} from './progress-events.js';
import { int } from './shared.js';

/** `--progress-json` and `--progress-interval-ms`, for the commands a job runner starts. */
export function withProgressJsonOptions(cmd: Command): Command {
  return cmd
    .option(
      '--progress-json <path>',
      'append NDJSON progress events to this file (-: stdout; human output then goes to stderr)',
    )
    .addOption(
      new Option('--progress-interval-ms <ms>', 'at most one progress event per this many ms')
        .argParser(int(0))
        .default(1000),
    );
}

export interface ProgressJsonOptions {
  progressJson?: string;
  progressIntervalMs: number;
}

export interface RunSpec extends ProgressJsonOptions {
  command: ReportedCommand;
  modality?: 'image' | 'audio';
  name?: string;
  /** The step a resumed run continues from, or null when it starts fresh. */
  resumeStep?: () => Promise<number | null>;
}

/** What a reported command's body gets: the stop signal, the event stream and where to write. */
export interface RunContext {
  /** Aborted by the first SIGTERM or SIGINT (until `publishing()` is called). */
  readonly signal: AbortSignal;
  readonly events: ProgressEventWriter;
  /** A human log line: stderr, and a `log` event. */
  log(line: string): void;
  /** Where the human result goes: stdout, or stderr when stdout carries the events. */
  readonly out: NodeJS.WritableStream;
  /** From here on a stop signal is logged and ignored: a publish runs to its end. */
  publishing(): void;
  /** Throws the `cancelled` error (exit 3) when a stop was asked for; `detail` ends its message. */
  throwIfStopped(detail?: string): void;
}

const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const;

/**
 * Runs a command body with its event stream: `start` first, `end` last on every path (the error
 * is rethrown for `main` to print and map to the exit status), and SIGTERM/SIGINT turned into an
 * abort of the body's signal. A body that stops throws `GimError('cancelled')` (exit 3).
 */
export async function reportedRun(
  spec: RunSpec,
  body: (ctx: RunContext) => Promise<void>,
): Promise<void> {
  const events = ProgressEventWriter.open(spec.progressJson, {
    intervalMs: spec.progressIntervalMs,
  });
  const stop = new AbortController();
  let stopSignal: string | undefined;
  let publishing = false;
  const log = (line: string) => {
    process.stderr.write(`${line}\n`);
    events.emit({ type: 'log', line });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (publishing) log(`${signal} while publishing: finishing the publish first`);
    else if (stopSignal)
      log(`${signal} again: ignored, already stopping after ${stopSignal} (SIGKILL forces it)`);
    else {
      stopSignal = signal;
      log(`${signal}: stopping after the current step`);
      stop.abort();
    }
  };
  STOP_SIGNALS.forEach((s) => process.on(s, onSignal));
  const ctx: RunContext = {
    signal: stop.signal,
    events,
    log,
    out: spec.progressJson === '-' ? process.stderr : process.stdout,
    publishing: () => {
      publishing = true;
    },
    throwIfStopped: (detail) => {
      if (stopSignal)
        throw new GimError('cancelled', `stopped by ${stopSignal}${detail ? ` ${detail}` : ''}`);
    },
  };
  let started = false;
  const start = (resumeStep: number | null) => {
    started = true;
    const event: ProgressEventBody = {
      type: 'start',
      command: spec.command,
      ...(spec.modality ? { modality: spec.modality } : {}),
      ...(spec.name ? { name: spec.name } : {}),
      pid: process.pid,
      resumed: resumeStep !== null,
      ...(resumeStep !== null ? { resumeStep } : {}),
    };
    events.emit(event);
  };
  try {
    start((await spec.resumeStep?.()) ?? null);
    await body(ctx);
    events.emit({ type: 'end', status: 'succeeded', exitCode: EXIT.succeeded });
  } catch (e) {
    if (!started) start(null);
    const exitCode = exitCodeOf(e);
    events.emit(
      exitCode === EXIT.cancelled
        ? { type: 'end', status: 'cancelled', exitCode }
        : { type: 'end', status: 'failed', exitCode, error: errorOf(e) },
    );
    throw e;
  } finally {
    STOP_SIGNALS.forEach((s) => process.off(s, onSignal));
    events.close();
  }
}
