import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import type { LogLevel } from '@nestjs/common';
import { BACKEND_NAMES, type BackendName } from '../gim/backend/index.js';

/**
 * The service's settings, read from the environment once at start and passed explicitly from then
 * on. This file is the only reader of `process.env` in the service.
 */
export interface AppConfig {
  readonly port: number;
  readonly host: string;
  /** Absolute path of the versioned encoder stacks (`models/<name>/<version>/...`). */
  readonly modelsDir: string;
  /** Forces a tfjs backend; undefined picks the best available one. */
  readonly backend?: BackendName;
  readonly logLevel: LogLevelName;
  /**
   * Stack refs (`name`, `name@3`, `name@stable`) loaded and warmed up before `/health/ready` says
   * ready. Undefined means every stack in `modelsDir` at its default ref; empty means none.
   */
  readonly preload?: readonly string[];
  /** Items per forward pass of the inference worker. */
  readonly maxBatchSize: number;
  /**
   * How long the oldest queued item waits for others before its batch starts. 0 (the default):
   * an item that finds the worker idle runs at once, and items arriving during a forward pass form
   * the next batch (bench:serve: 249 vs 113 req/s at 1 client, same throughput at 64).
   */
  readonly maxBatchDelayMs: number;
  /**
   * How long a resolved stack ref (`name`, `name@stable`) is reused before `labels.json` is read
   * again: a label moved by another process (`gim train --label`, a deploy) is served within this
   * time. 0 reads it on every request (~0.15 ms of main-thread time each, bench:serve).
   */
  readonly refCacheMs: number;
  /** Items queued per (model, version) beyond which requests get 429. */
  readonly maxQueue: number;
  /**
   * From a request's arrival to its answer: past it the request gets 504, and its items still
   * queued are dropped, as are items that cannot be computed before it.
   */
  readonly requestTimeoutMs: number;
  /**
   * Seconds of audio one request may carry (all its clips together), refused with 413 before
   * decoding where the headers tell (WAV, FLAC), else before computing. The default fits the
   * default REQUEST_TIMEOUT_MS on a 2-core machine (README: Audio stacks).
   */
  readonly maxAudioSecondsPerRequest: number;
  /** Largest request body (a multipart body: all its files together). */
  readonly maxBodyBytes: number;
  /** Items per request. */
  readonly maxItems: number;
  /**
   * Threads that decode audio clips (started on the first clip). Default: one fewer than the CPU
   * cores, between 1 and 4.
   */
  readonly audioDecodeThreads: number;
  /** Largest decoded image, in pixels (width x height), checked before decoding. */
  readonly maxInputPixels: number;
  /**
   * Bearer token of the `/admin/...` routes. Undefined (ADMIN_TOKEN unset): admin routes are off
   * and answer 404, as if they did not exist.
   */
  readonly adminToken?: string;
  /**
   * On SIGTERM/SIGINT: how long the service keeps accepting requests after it has turned
   * not-ready, so that load balancers (Kubernetes endpoints) stop sending before the listener
   * closes. 0 (the default) closes at once; on Kubernetes set a few seconds (k8s/ sets 5000).
   */
  readonly shutdownDelayMs: number;
  /**
   * On SIGTERM/SIGINT: the most the drain (queued and in-flight requests, the worker) may take
   * after the listener closed; past it the process exits 1 with what was still pending. Keep
   * SHUTDOWN_DELAY_MS + this below the orchestrator's grace period (Kubernetes: 30 s default).
   */
  readonly shutdownTimeoutMs: number;
  /** Training jobs (`/admin/v1/training-jobs`): where and how their trainers run. */
  readonly jobs: JobsConfig;
}

export interface JobsConfig {
  /** `local`: the gim CLI as a child process; `kubernetes`: a batch/v1 Job per attempt. */
  readonly runner: 'local' | 'kubernetes';
  /** Absolute; dataset paths of job specs resolve under it, and may not leave it. */
  readonly dataRoot: string;
  /** Jobs running at once over all models (one per model at most). */
  readonly maxRunning: number;
  /** Default `timeout_seconds` of a job. */
  readonly timeoutSeconds: number;
  /** Default automatic resumes of an interrupted job. */
  readonly maxResumes: number;
  /** How long a trainer may take to checkpoint after SIGTERM before it is killed. */
  readonly stopGraceMs: number;
  /** Nice value added to local trainers, so that serving keeps its CPU (0 to 19). */
  readonly niceness: number;
  /**
   * The environment of local trainers (the `gim` CLI as a child process): the service's own
   * environment (PATH, HOME, TF_*, CUDA_*, NODE_OPTIONS, ...) without the service's settings
   * (`CONFIG_ENV_NAMES`: ADMIN_TOKEN and the Kubernetes credentials' locations stay with the
   * service), plus the two the CLI reads: MODELS_DIR (absolute, as resolved here) and, when set,
   * GIM_BACKEND.
   */
  readonly trainerEnv: Readonly<Record<string, string>>;
  /** The kubernetes runner (JOB_RUNNER=kubernetes). */
  readonly kubernetes: KubernetesRunnerSettings;
}

export interface KubernetesRunnerSettings {
  /** The runner's YAML (namespace, image, PVC, GPU, ...: k8s/base/training-runner.yaml). */
  readonly runnerConfigPath: string;
  /** This replica's identity in the jobs Lease (the pod's name, from the downward API). */
  readonly podName?: string;
  /** In a pod: the API server's address, set by the kubelet. */
  readonly serviceHost?: string;
  readonly servicePort?: string;
  /** Outside a cluster: a kubeconfig and, optionally, its context. */
  readonly kubeconfig?: string;
  readonly context?: string;
}

/**
 * Every environment variable `loadConfig` reads (a test checks this is exactly the set it reads):
 * the deployment checks match the env names of `k8s/` against it.
 */
export const CONFIG_ENV_NAMES = Object.freeze([
  'PORT',
  'HOST',
  'MODELS_DIR',
  'GIM_BACKEND',
  'LOG_LEVEL',
  'PRELOAD',
  'MAX_BATCH_SIZE',
  'MAX_BATCH_DELAY_MS',
  'REF_CACHE_MS',
  'MAX_QUEUE',
  'REQUEST_TIMEOUT_MS',
  'MAX_AUDIO_SECONDS_PER_REQUEST',
  'MAX_BODY_BYTES',
  'MAX_ITEMS',
  'AUDIO_DECODE_THREADS',
  'MAX_INPUT_PIXELS',
  'ADMIN_TOKEN',
  'SHUTDOWN_DELAY_MS',
  'SHUTDOWN_TIMEOUT_MS',
  'JOB_RUNNER',
  'DATA_ROOT',
  'JOB_MAX_RUNNING',
  'JOB_TIMEOUT_SECONDS',
  'JOB_MAX_RESUMES',
  'JOB_STOP_GRACE_MS',
  'JOB_NICENESS',
  'KUBERNETES_RUNNER_CONFIG',
  'POD_NAME',
  'KUBERNETES_SERVICE_HOST',
  'KUBERNETES_SERVICE_PORT',
  'KUBECONFIG',
  'KUBE_CONTEXT',
] as const);

/**
 * Seconds of audio per request by default (one clip of the longest `max_seconds`, or 32 of ~2 s)
 * is embedded well within the default REQUEST_TIMEOUT_MS (10 s) by a stack of the default audio
 * recipe on a 2-core machine (bench:overload, fit).
 */
export const DEFAULT_MAX_AUDIO_SECONDS_PER_REQUEST = 60;

/** Nest injection token of the `AppConfig`. */
export const APP_CONFIG = Symbol('APP_CONFIG');

/** From the most to the least severe: a level enables itself and every level before it. */
export const LOG_LEVEL_NAMES = ['error', 'warn', 'log', 'debug', 'verbose'] as const;
export type LogLevelName = (typeof LOG_LEVEL_NAMES)[number];

/** Thrown by `loadConfig`; its message lists every bad variable, one a line. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';

  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const problems: string[] = [];
  // Reads one variable: unset or blank gives the fallback, a value `parse` rejects is recorded.
  const setting = <T>(
    name: string,
    expected: string,
    fallback: T,
    parse: (text: string) => T | undefined,
  ): T => {
    const text = env[name]?.trim();
    if (!text) return fallback;
    const value = parse(text);
    if (value === undefined) problems.push(`${name}: expected ${expected}, got "${text}"`);
    return value ?? fallback;
  };

  // Read first, in the order of CONFIG_ENV_NAMES (problems are listed in that order): the
  // trainers' environment needs MODELS_DIR and GIM_BACKEND.
  const port = setting('PORT', 'an integer from 1 to 65535', 8080, parsePort);
  const host = setting('HOST', 'a host name or address', '0.0.0.0', (text) => text);
  const modelsDir = resolve(
    process.cwd(),
    setting('MODELS_DIR', 'a directory path', 'models', (text) => text),
  );
  const backend = setting<BackendName | undefined>(
    'GIM_BACKEND',
    `one of ${BACKEND_NAMES.join(', ')}`,
    undefined,
    (text) => oneOf(BACKEND_NAMES, text),
  );
  const config: AppConfig = {
    port,
    host,
    modelsDir,
    backend,
    logLevel: setting('LOG_LEVEL', `one of ${LOG_LEVEL_NAMES.join(', ')}`, 'log', (text) =>
      oneOf(LOG_LEVEL_NAMES, text),
    ),
    preload: setting<readonly string[] | undefined>(
      'PRELOAD',
      'a comma-separated list of stack refs (name, name@<version>, name@<label>) or "none"',
      undefined,
      parseRefList,
    ),
    maxBatchSize: setting('MAX_BATCH_SIZE', 'an integer from 1 to 1024', 32, int(1, 1024)),
    maxBatchDelayMs: setting('MAX_BATCH_DELAY_MS', 'an integer from 0 to 60000', 0, int(0, 60_000)),
    refCacheMs: setting('REF_CACHE_MS', 'an integer from 0 to 3600000', 1000, int(0, 3_600_000)),
    maxQueue: setting('MAX_QUEUE', 'an integer from 1 to 1000000', 256, int(1, 1_000_000)),
    requestTimeoutMs: setting(
      'REQUEST_TIMEOUT_MS',
      'an integer from 1 to 3600000',
      10_000,
      int(1, 3_600_000),
    ),
    maxAudioSecondsPerRequest: setting(
      'MAX_AUDIO_SECONDS_PER_REQUEST',
      'an integer from 1 to 86400',
      DEFAULT_MAX_AUDIO_SECONDS_PER_REQUEST,
      int(1, 86_400),
    ),
    maxBodyBytes: setting(
      'MAX_BODY_BYTES',
      'an integer from 1024 to 1073741824',
      10 * 1024 * 1024,
      int(1024, 1024 ** 3),
    ),
    maxItems: setting('MAX_ITEMS', 'an integer from 1 to 4096', 64, int(1, 4096)),
    audioDecodeThreads: setting(
      'AUDIO_DECODE_THREADS',
      'an integer from 1 to 64',
      Math.min(4, Math.max(1, availableParallelism() - 1)),
      int(1, 64),
    ),
    maxInputPixels: setting(
      'MAX_INPUT_PIXELS',
      'an integer from 1 to 1000000000',
      25_000_000,
      int(1, 1_000_000_000),
    ),
    adminToken: adminToken(env.ADMIN_TOKEN, problems),
    shutdownDelayMs: setting(
      'SHUTDOWN_DELAY_MS',
      'an integer from 0 to 600000',
      0,
      int(0, 600_000),
    ),
    shutdownTimeoutMs: setting(
      'SHUTDOWN_TIMEOUT_MS',
      'an integer from 1000 to 3600000',
      20_000,
      int(1000, 3_600_000),
    ),
    jobs: {
      runner: setting('JOB_RUNNER', 'local or kubernetes', 'local', (text) =>
        oneOf(['local', 'kubernetes'] as const, text),
      ),
      dataRoot: resolve(
        process.cwd(),
        setting('DATA_ROOT', 'a directory path', 'data', (text) => text),
      ),
      maxRunning: setting('JOB_MAX_RUNNING', 'an integer from 1 to 64', 1, int(1, 64)),
      timeoutSeconds: setting(
        'JOB_TIMEOUT_SECONDS',
        'an integer from 1 to 604800',
        86_400,
        int(1, 604_800),
      ),
      maxResumes: setting('JOB_MAX_RESUMES', 'an integer from 0 to 10', 2, int(0, 10)),
      stopGraceMs: setting(
        'JOB_STOP_GRACE_MS',
        'an integer from 100 to 600000',
        60_000,
        int(100, 600_000),
      ),
      niceness: setting('JOB_NICENESS', 'an integer from 0 to 19', 10, int(0, 19)),
      trainerEnv: trainerEnv(env, modelsDir, backend),
      kubernetes: {
        runnerConfigPath: setting(
          'KUBERNETES_RUNNER_CONFIG',
          'a file path',
          '/etc/gim/training-runner.yaml',
          (text) => text,
        ),
        podName: optional(env.POD_NAME),
        serviceHost: optional(env.KUBERNETES_SERVICE_HOST),
        servicePort: optional(env.KUBERNETES_SERVICE_PORT),
        kubeconfig: optional(env.KUBECONFIG),
        context: optional(env.KUBE_CONTEXT),
      },
    },
  };
  if (config.jobs.runner === 'kubernetes') {
    const k = config.jobs.kubernetes;
    if (k.podName === undefined)
      problems.push(
        'POD_NAME: required with JOB_RUNNER=kubernetes (the pod name, from the downward API)',
      );
    if (k.serviceHost === undefined && k.kubeconfig === undefined)
      problems.push(
        'JOB_RUNNER=kubernetes: no Kubernetes API (KUBERNETES_SERVICE_HOST in a pod, or KUBECONFIG outside)',
      );
  }
  // Checked together: a queue smaller than a batch could never fill one.
  if (config.maxQueue < config.maxBatchSize) {
    problems.push(
      `MAX_QUEUE: expected at least MAX_BATCH_SIZE (${config.maxBatchSize}), got ${config.maxQueue}`,
    );
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/** The Nest logger levels enabled by a `LOG_LEVEL` (`fatal` is always on). */
export function nestLogLevels(level: LogLevelName): LogLevel[] {
  return ['fatal', ...LOG_LEVEL_NAMES.slice(0, LOG_LEVEL_NAMES.indexOf(level) + 1)];
}

/** See `JobsConfig.trainerEnv`. Copies the environment's entries: reads no setting by name. */
function trainerEnv(
  env: NodeJS.ProcessEnv,
  modelsDir: string,
  backend: BackendName | undefined,
): Readonly<Record<string, string>> {
  const settings: ReadonlySet<string> = new Set(CONFIG_ENV_NAMES);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env))
    if (value !== undefined && !settings.has(name)) out[name] = value;
  out.MODELS_DIR = modelsDir;
  if (backend !== undefined) out.GIM_BACKEND = backend;
  return Object.freeze(out);
}

function optional(raw: string | undefined): string | undefined {
  const text = raw?.trim();
  return text ? text : undefined;
}

/** A secret: its value never goes into a message. */
function adminToken(raw: string | undefined, problems: string[]): string | undefined {
  const text = raw?.trim();
  if (!text) return undefined;
  if (/^\S{16,}$/.test(text)) return text;
  problems.push('ADMIN_TOKEN: expected at least 16 characters without spaces (value not shown)');
  return undefined;
}

function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** A parser of decimal integers in [min, max] (no sign, no exponent, no fraction). */
function int(min: number, max: number): (text: string) => number | undefined {
  return (text) => {
    if (!/^\d{1,15}$/.test(text)) return undefined;
    const value = Number(text);
    return value >= min && value <= max ? value : undefined;
  };
}

const STACK_REF_RE = /^[a-z0-9][a-z0-9._-]{0,63}(@([1-9][0-9]*|[a-z][a-z0-9_-]{0,31}))?$/;

/** `a, b@2, c@stable` -> refs; `none` -> []. Whether they exist is checked when they load. */
function parseRefList(text: string): readonly string[] | undefined {
  if (text === 'none') return Object.freeze([]);
  const refs = text.split(',').map((ref) => ref.trim());
  if (refs.some((ref) => !STACK_REF_RE.test(ref))) return undefined;
  return Object.freeze([...new Set(refs)]);
}

function oneOf<T extends string>(values: readonly T[], text: string): T | undefined {
  return values.find((value) => value === text);
}
