import { execFile } from 'node:child_process';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { GimError, type GimErrorCode } from '../../gim/errors.js';
import { checkHeadManifest, type HeadManifest } from '../../gim/store/head-manifest.js';
import type { ProbeRow } from '../../gim/classify/probe-layers.js';
import { APP_CONFIG, type AppConfig } from '../config.js';
import { Lifecycle } from '../lifecycle/lifecycle.service.js';

/** What `gim probe --json` prints. */
export interface ProbeReport {
  model: string;
  version: number;
  rows: ProbeRow[];
  best: ProbeRow;
}

/** A synchronous admin training gets this long before the CLI process is killed (504). */
export const TRAIN_TIMEOUT_MS = 15 * 60_000;

const CODES: readonly GimErrorCode[] = [
  'invalid_argument',
  'not_found',
  'conflict',
  'invalid_data',
  'unsupported_media',
  'too_large',
];

/**
 * Trains heads (`gim classifier train ... --json`) and sweeps layers (`gim probe ... --json`) in a
 * child process: training never runs inside the API process (its tfjs work would stall the event
 * loop, and a crash would take the service down). One job at a time; another request meanwhile is
 * a 409. Until the admin/jobs runner lands, the request waits for the process (small data only).
 * When the service starts shutting down, a running one is stopped and answered 503
 * `shutting_down` (a head has no checkpoint to hand back, and minutes of training do not fit a
 * termination grace period): the caller resubmits it to another replica.
 */
@Injectable()
export class ClassifierTrainer {
  private readonly logger = new Logger(ClassifierTrainer.name);
  private running = false;
  private readonly drain = new AbortController();

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    lifecycle: Lifecycle,
  ) {
    lifecycle.onDrain(() => this.drain.abort());
  }

  async train(args: readonly string[], signal: AbortSignal): Promise<HeadManifest> {
    const stdout = await this.exclusive(['classifier', 'train', ...args, '--json'], signal);
    const manifest = checkHeadManifest(JSON.parse(stdout), 'gim classifier train --json');
    this.logger.log(
      `trained head ${manifest.name}@${manifest.version} of ${manifest.encoder.name}`,
    );
    return manifest;
  }

  /** The layer sweep: one probe per (layer, pooling), rows and the best one, as `gim probe --json`. */
  async probe(args: readonly string[], signal: AbortSignal): Promise<ProbeReport> {
    const stdout = await this.exclusive(['probe', ...args, '--json'], signal);
    const report = JSON.parse(stdout.slice(stdout.indexOf('{'))) as ProbeReport;
    if (!Array.isArray(report.rows) || report.rows.length === 0)
      throw new Error(`gim probe --json printed no rows: ${stdout.slice(0, 200)}`);
    return report;
  }

  private async exclusive(args: string[], signal: AbortSignal): Promise<string> {
    if (this.drain.signal.aborted)
      throw new GimError('shutting_down', 'the service is shutting down: submit the job again');
    if (this.running)
      throw new GimError('conflict', 'an admin job is running already: retry when it is done');
    this.running = true;
    const started = performance.now();
    try {
      return await this.run(args, signal);
    } finally {
      this.running = false;
      this.logger.log(
        `gim ${args.slice(0, 2).join(' ')} took ${Math.round(performance.now() - started)} ms`,
      );
    }
  }

  private run(args: string[], signal: AbortSignal): Promise<string> {
    const { command, prefix } = cliEntry();
    const env: NodeJS.ProcessEnv = { ...process.env, MODELS_DIR: this.config.modelsDir };
    if (this.config.backend) env.GIM_BACKEND = this.config.backend;
    return new Promise((resolve, reject) => {
      execFile(
        process.execPath,
        [...prefix, command, ...args],
        {
          env,
          signal: AbortSignal.any([signal, this.drain.signal]),
          timeout: TRAIN_TIMEOUT_MS,
          maxBuffer: 64 * 1024 * 1024,
        },
        (error, stdout, stderr) => {
          if (!error) return resolve(stdout);
          if (this.drain.signal.aborted)
            return reject(
              new GimError(
                'shutting_down',
                'the service is shutting down: training stopped; submit the job again',
              ),
            );
          if (signal.aborted)
            return reject(new GimError('cancelled', 'the client went away: training stopped'));
          if (error.killed)
            return reject(
              new GimError('timeout', `training took over ${TRAIN_TIMEOUT_MS / 1000} s: stopped`),
            );
          reject(cliError(stderr, error));
        },
      );
    });
  }
}

/** The CLI beside this file: `main.ts` through swc when running from source, else `main.js`. */
function cliEntry(): { command: string; prefix: string[] } {
  const self = fileURLToPath(import.meta.url);
  const ext = extname(self);
  const command = join(dirname(self), '..', '..', 'cli', `main${ext}`);
  return {
    command,
    prefix: ext === '.ts' ? ['--import', '@swc-node/register/esm-register'] : [],
  };
}

/** `gim: <message> (<code>)` on stderr becomes that GimError; commander's usage errors a 400. */
function cliError(stderr: string, error: Error): Error {
  const lines = stderr.trim().split('\n');
  for (const line of lines.reverse()) {
    const coded = /^gim: (.*) \((\w+)\)$/.exec(line);
    const code = coded?.[2] as GimErrorCode | undefined;
    if (coded && code && CODES.includes(code)) return new GimError(code, coded[1] as string);
    const usage = /^error: (.*)$/.exec(line);
    if (usage) return new GimError('invalid_argument', usage[1] as string);
  }
  return new Error(`gim failed: ${error.message}\n${stderr}`, { cause: error });
}
