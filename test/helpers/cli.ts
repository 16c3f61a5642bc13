import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import sharp from 'sharp';
import type { Rng } from '../../src/gim/random.js';

const run = promisify(execFile);
const ROOT = new URL('../..', import.meta.url).pathname;

/** Runs the `gim` CLI from source on the wasm backend, as a user would; rejects on a non-zero exit. */
export function gim(args: string[]) {
  return run(
    process.execPath,
    ['--import', '@swc-node/register/esm-register', 'src/cli/main.ts', ...args],
    { cwd: ROOT, env: { ...process.env, GIM_BACKEND: 'wasm' }, maxBuffer: 16 << 20 },
  );
}

/** `gim train audio` options of a tiny stack that trains in seconds on the speaker fixture. */
export const TINY_AUDIO_STACK = [
  ...['--channels', '8', '--gru-units', '8'],
  ...['--window', '3200', '--batch-size', '2'],
];

/** A 28x28 grey PNG of horizontal (class 0) or vertical (class 1) stripes: a separable fixture. */
export async function stripesPng(file: string, orientation: number, rng: Rng): Promise<void> {
  const period = 4 + rng.int(3);
  const phase = rng.int(period);
  const pixels = Buffer.alloc(28 * 28);
  for (let i = 0; i < pixels.length; i++) {
    const at = orientation === 0 ? Math.floor(i / 28) : i % 28;
    pixels[i] = ((at + phase) % period < period / 2 ? 210 : 40) + rng.int(20);
  }
  await sharp(pixels, { raw: { width: 28, height: 28, channels: 1 } })
    .png()
    .toFile(file);
}

/**
 * Starts the `gim` CLI like `gim` does, without waiting: for tests that signal it. `exit` resolves
 * with its exit code (null when a signal killed it).
 */
export function spawnGim(args: string[]): { child: ChildProcess; exit: Promise<number | null> } {
  const child = spawn(
    process.execPath,
    ['--import', '@swc-node/register/esm-register', 'src/cli/main.ts', ...args],
    {
      cwd: ROOT,
      env: { ...process.env, GIM_BACKEND: 'wasm' },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  child.stderr?.resume();
  const exit = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => resolve(code));
  });
  return { child, exit };
}
