/**
 * The built service (`node dist/src/main.js`) in a child process, for the benchmarks that load it
 * over HTTP: rebuilt first when dist is stale, on a free port, killed when the benchmark exits.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type autocannon from 'autocannon';

const ROOT = new URL('..', import.meta.url).pathname;
const entryOf = (root: string) => join(root, 'dist/src/main.js');

const log = (line: string) => process.stderr.write(`${line}\n`);

/**
 * Runs `npm run build` when dist/src/main.js is missing or older than some file under src/, in
 * this checkout or in `root` (another checkout's, e.g. a base commit's, for before/after runs).
 */
export async function buildIfStale(root = ROOT): Promise<void> {
  const built = await stat(entryOf(root)).catch(() => null);
  let stale = built === null;
  if (built !== null) {
    for (const file of await readdir(join(root, 'src'), { recursive: true })) {
      if (file.endsWith('.ts') && (await stat(join(root, 'src', file))).mtimeMs > built.mtimeMs) {
        stale = true;
        break;
      }
    }
  }
  if (!stale) return;
  log(`${root}: dist is missing or older than src/: npm run build`);
  const build = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: ['ignore', 2, 2] });
  if (build.status !== 0) throw new Error(`npm run build failed (exit ${build.status})`);
}

/** A TCP port free on 127.0.0.1 right now (for a service started as a child process). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const children = new Set<ChildProcess>();
const killAll = () => children.forEach((c) => c.kill('SIGKILL'));
process.once('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping the server`);
    killAll();
    process.exit(130);
  });
}

export interface Server {
  base: string;
  pid: number;
  /** The variables the server got on top of this process's environment. */
  env: Record<string, string>;
  /** What /health/ready answered. */
  ready: { backend: { name: string; devices: string[] }; models: string[] };
  /** SIGTERM (SIGKILL after 5 s), resolved once the process has exited. */
  stop(): Promise<void>;
}

/**
 * Starts the server with `env` on top of this process's and waits until /health/ready is 200.
 * `root`: the checkout whose build to run (default this one).
 */
export async function startServer(env: Record<string, string>, root = ROOT): Promise<Server> {
  const port = await freePort();
  const fullEnv = { PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', ...env };
  const child = spawn(process.execPath, [entryOf(root)], {
    cwd: root,
    env: { ...process.env, ...fullEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let output = '';
  const keep = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4000));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', () => children.delete(child));

  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the server exited (${child.exitCode ?? child.signalCode}):\n${output}`);
    }
    const res = await fetch(`${base}/health/ready`).catch(() => null);
    if (res?.ok) {
      const ready = (await res.json()) as Server['ready'];
      const stop = async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
          await exited;
          clearTimeout(timer);
        }
      };
      return { base, pid: child.pid as number, env: fullEnv, ready, stop };
    }
    await res?.body?.cancel();
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the server was not ready within 60 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** What an autocannon run measured, in the benchmarks' JSON. */
export interface Load {
  /** Successful (2xx) requests per second. */
  requestsPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  latencyMeanMs: number;
  requests: number;
  non2xx: number;
  /** Connection errors, timeouts included. */
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  seconds: number;
}

export function loadOf(result: autocannon.Result): Load {
  const statusCodes: Record<string, number> = {};
  for (const [code, { count = 0 }] of Object.entries(result.statusCodeStats ?? {})) {
    statusCodes[code] = count;
  }
  return {
    requestsPerSecond: result['2xx'] / result.duration,
    latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99,
    latencyMeanMs: result.latency.mean,
    requests: result['2xx'] + result.non2xx,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    seconds: result.duration,
  };
}
