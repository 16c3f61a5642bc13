/**
 * The local runner: the trainer is the `gim` CLI in a child process of the API, at a lower CPU
 * priority than serving (nice), its stdout and stderr appended to the job's train.log (a file,
 * not a pipe: the trainer never blocks on, or dies of, a reader that went away).
 */
import { spawn } from 'node:child_process';
import { open, readFile } from 'node:fs/promises';
import { setPriority } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FailureReason, JobRecord } from './job-record.js';
import {
  EXIT_BAD_INPUT,
  EXIT_CANCELLED,
  EXIT_OK,
  trainerArgs,
  type JobPaths,
  type JobRunner,
  type RunExit,
  type RunHandle,
  type RunRequest,
} from './runner.js';

export interface LocalRunnerOptions {
  /** The `gim` CLI: node arguments before the command (e.g. a loader) and the entry file. */
  cli: { nodeArgs: string[]; entry: string };
  /** Environment of the trainer (MODELS_DIR, GIM_BACKEND, ...). */
  env: NodeJS.ProcessEnv;
  /** Added to the trainer's nice value (0..19): serving keeps the CPU it needs. */
  niceness: number;
  /** After a graceful stop, how long the trainer may take to checkpoint before it is killed. */
  stopGraceMs: number;
  log?: (line: string) => void;
}

export class LocalRunner implements JobRunner {
  readonly kind = 'local' as const;

  constructor(private readonly options: LocalRunnerOptions) {}

  async start(request: RunRequest): Promise<RunHandle> {
    const { cli, env, niceness } = this.options;
    const { paths, job } = request;
    const args = [...cli.nodeArgs, cli.entry, ...trainerArgs(request, paths.dir)];
    const logFile = await open(paths.log, 'a');
    await logFile.write(
      `\n=== attempt ${request.attempt}${request.resume ? ' (resume)' : ''} at ${new Date().toISOString()}: gim ${trainerArgs(request, paths.dir).join(' ')}\n`,
    );
    let child;
    try {
      child = spawn(process.execPath, args, {
        env: { ...env, GIM_JOB_ID: job.id },
        stdio: ['ignore', logFile.fd, logFile.fd],
      });
    } finally {
      // The child has its own copies of the descriptors.
      await logFile.close();
    }
    const pid = child.pid;
    if (pid !== undefined && niceness > 0) {
      try {
        setPriority(pid, niceness);
      } catch (e) {
        this.options.log?.(`job ${job.id}: could not lower the trainer's priority: ${String(e)}`);
      }
    }
    let deadlineHit = false;
    let stopMode: 'graceful' | 'force' | null = null;
    const deadline = setTimeout(() => {
      deadlineHit = true;
      child.kill('SIGKILL');
    }, job.timeoutSeconds * 1000);
    deadline.unref();
    let escalate: NodeJS.Timeout | undefined;

    const done = new Promise<RunExit>((resolve) => {
      child.once('error', (e) => {
        clearTimeout(deadline);
        resolve({
          outcome: 'failed',
          reason: 'runner_error',
          message: `could not start the trainer: ${e.message}`,
        });
      });
      child.once('exit', (code, signal) => {
        clearTimeout(deadline);
        clearTimeout(escalate);
        resolve(
          exitOf(code, signal, { deadlineHit, stopMode, timeoutSeconds: job.timeoutSeconds }),
        );
      });
    });

    return {
      ref: String(pid ?? ''),
      done,
      stop: async (mode) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        stopMode = mode === 'force' || stopMode === 'force' ? 'force' : 'graceful';
        if (mode === 'force') {
          child.kill('SIGKILL');
          return;
        }
        child.kill('SIGTERM');
        escalate ??= setTimeout(() => child.kill('SIGKILL'), this.options.stopGraceMs);
      },
    };
  }

  /**
   * A trainer that outlived the API process that started it (kill -9 of the API) is stopped:
   * it checkpoints at its current step and exits, and the job resumes from that checkpoint under
   * this process, so that exactly one controller follows it. Returns a handle that settles `lost`
   * once the orphan is gone, or null when there is none.
   */
  async adopt(job: JobRecord, paths: JobPaths): Promise<RunHandle | null> {
    const attempt = job.attempts.at(-1);
    const pid = Number(attempt?.runnerRef);
    if (!attempt || !Number.isInteger(pid) || pid <= 0) return null;
    if (!(await isTrainerOf(pid, paths.dir))) return null;
    this.options.log?.(
      `job ${job.id}: its trainer (pid ${pid}) outlived the API; stopping it at a checkpoint`,
    );
    const gone = async (): Promise<RunExit> => {
      signal(pid, 'SIGTERM');
      const until = Date.now() + this.options.stopGraceMs;
      while (isAlive(pid) && Date.now() < until) await sleep(100);
      if (isAlive(pid)) signal(pid, 'SIGKILL');
      while (isAlive(pid)) await sleep(50);
      return {
        outcome: 'lost',
        message: `the API restarted; its trainer (pid ${pid}) was stopped at a checkpoint`,
      };
    };
    return {
      ref: String(pid),
      done: gone(),
      stop: async (mode) => {
        signal(pid, mode === 'force' ? 'SIGKILL' : 'SIGTERM');
      },
    };
  }
}

function exitOf(
  code: number | null,
  signal: NodeJS.Signals | null,
  ctx: { deadlineHit: boolean; stopMode: 'graceful' | 'force' | null; timeoutSeconds: number },
): RunExit {
  const base = { exitCode: code, signal };
  if (ctx.deadlineHit)
    return {
      ...base,
      outcome: 'failed',
      reason: 'deadline',
      message: `over its deadline of ${ctx.timeoutSeconds} s: killed`,
    };
  if (code === EXIT_OK) return { ...base, outcome: 'succeeded', message: 'the trainer finished' };
  if (code === EXIT_CANCELLED)
    return { ...base, outcome: 'cancelled', message: 'the trainer stopped at a checkpoint' };
  if (ctx.stopMode !== null)
    return {
      ...base,
      outcome: 'cancelled',
      message: `the trainer was killed (${signal ?? `exit ${code}`})`,
    };
  if (code === EXIT_BAD_INPUT)
    return {
      ...base,
      outcome: 'failed',
      reason: 'bad_input',
      message: 'the trainer refused its input (exit 2)',
    };
  // The kernel's OOM killer sends SIGKILL; nothing else here does without being asked.
  const reason: FailureReason =
    signal === 'SIGKILL' || code === 137 ? 'out_of_memory' : 'runner_error';
  const how = signal ? `killed by ${signal}` : `exit ${code}`;
  return {
    ...base,
    outcome: 'failed',
    reason,
    message:
      reason === 'out_of_memory'
        ? `the trainer was ${how} (likely out of memory)`
        : `the trainer failed (${how})`,
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

/** Whether `pid` runs a trainer writing into `jobDir` (a reused pid is somebody else's). */
async function isTrainerOf(pid: number, jobDir: string): Promise<boolean> {
  if (!isAlive(pid)) return false;
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.split('\0').some((arg) => arg.includes(`${jobDir}/progress.ndjson`));
  } catch {
    return false;
  }
}
