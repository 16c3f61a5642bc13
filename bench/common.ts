import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import os from 'node:os';
import { loadFashionMnist, FASHION_MNIST_DEFAULT_DIR } from '../src/gim/data/idx.js';
import type { ImageDataset } from '../src/gim/data/dataset.js';
import type { TrainConfig } from '../src/gim/training/config.js';

export const FIXTURE_DIR = new URL('../test/fixtures/fashion-mnist-mini', import.meta.url).pathname;

/**
 * The full Fashion-MNIST from Debian's `dataset-fashion-mnist` when installed, else the committed
 * 600-image fixture (with a note, since results then are not comparable).
 */
export async function fashionMnist(
  split: 'train' | 'test',
  opts: { requireFull?: boolean } = {},
): Promise<{ dataset: ImageDataset; full: boolean }> {
  try {
    return { dataset: await loadFashionMnist(FASHION_MNIST_DEFAULT_DIR, split), full: true };
  } catch (e) {
    if (opts.requireFull)
      throw new Error(
        `this benchmark needs the full Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist' ` +
          `(it installs ${FASHION_MNIST_DEFAULT_DIR}). ${(e as Error).message}`,
        { cause: e },
      );
    process.stderr.write(
      `note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); using the test fixture\n`,
    );
    return { dataset: await loadFashionMnist(FIXTURE_DIR, split), full: false };
  }
}

/** Prints an aligned table. */
export function printTable(headers: string[], rows: (string | number)[][]): void {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i] as number)).join('  ');
  process.stdout.write(`${line(headers)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  for (const r of cells.slice(1)) process.stdout.write(`${line(r)}\n`);
}

export function machine() {
  return {
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    date: new Date().toISOString(),
  };
}

export async function writeResult(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, `${JSON.stringify(value, null, 2)}\n`);
  process.stdout.write(`wrote ${path}\n`);
}

export const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** Busy ticks of the whole machine (every CPU), from /proc/stat; null off Linux. */
export async function machineBusyTicks(): Promise<number | null> {
  const line = (await readFile('/proc/stat', 'utf8').catch(() => ''))
    .split('\n')
    .find((l) => l.startsWith('cpu '));
  if (line === undefined) return null;
  const [user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number);
  return [user, nice, system, irq, softirq, steal].reduce<number>((s, v) => s + (v ?? 0), 0);
}

/** CPU ticks (user + system, all threads) and nice value of a process; null when gone or off Linux. */
export async function processTicks(pid: number): Promise<{ ticks: number; nice: number } | null> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  if (text === null) return null;
  // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15, nice 19.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { ticks: Number(rest[11]) + Number(rest[12]), nice: Number(rest[16]) };
}

/**
 * The vision training-recipe flags bench:probe and bench:recipe share (`parseArgs` options), with
 * `recipeFromArgs` turning them into the stack's channels, adapter geometry and TrainConfig.
 */
export const RECIPE_OPTIONS = {
  channels: { type: 'string', default: '16,32,64' },
  lr: { type: 'string', default: '1e-3' },
  'lr-schedule': { type: 'string', default: 'constant' },
  'negatives-from': { type: 'string', default: 'batch' },
  seed: { type: 'string', default: '1' },
  'batch-size': { type: 'string', default: '32' },
  offsets: { type: 'string', default: '2,3,4,5' },
  directions: { type: 'string', default: 'down' },
  'patch-jitter': { type: 'string', default: '0' },
  'patch-flip': { type: 'boolean', default: false },
  'patch-brightness': { type: 'string', default: '0' },
  'patch-contrast': { type: 'string', default: '0' },
  'loss-norm': { type: 'string', default: 'none' },
  'patch-stride': { type: 'string', default: '4' },
  'residual-kernels': { type: 'string' },
} as const;

export function recipeFromArgs(values: Record<string, string | boolean | undefined>): {
  channels: number[];
  /** Residual conv kernel per module (absent: 1 each). */
  residualKernels?: number[];
  patchStride: number;
  train: Partial<TrainConfig>;
} {
  const nums = (v: unknown) => String(v).split(',').map(Number);
  const residual = values['residual-kernels'];
  return {
    channels: nums(values.channels),
    ...(residual !== undefined ? { residualKernels: nums(residual) } : {}),
    patchStride: Number(values['patch-stride']),
    train: {
      schedule: 'parallel',
      seed: Number(values.seed),
      learningRate: Number(values.lr),
      lrSchedule: values['lr-schedule'] as TrainConfig['lrSchedule'],
      negativesFrom: values['negatives-from'] as TrainConfig['negativesFrom'],
      batchSize: Number(values['batch-size']),
      offsets: nums(values.offsets),
      directions: String(values.directions).split(',') as TrainConfig['directions'],
      patchAugment: {
        jitter: Number(values['patch-jitter']),
        flip: values['patch-flip'] === true,
        brightness: Number(values['patch-brightness']),
        contrast: Number(values['patch-contrast']),
      },
      lossNorm: values['loss-norm'] as TrainConfig['lossNorm'],
    },
  };
}
