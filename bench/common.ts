import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import os from 'node:os';
import { loadFashionMnist, FASHION_MNIST_DEFAULT_DIR } from '../src/gim/data/idx.js';
import type { ImageDataset } from '../src/gim/data/dataset.js';

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
