import { Command } from 'commander';
import { GimError } from '../../gim/errors.js';
import {
  compareGolden,
  computeGolden,
  DEFAULT_GOLDEN_COUNT,
  fmt,
  GOLDEN_TOLERANCE,
  goldenUnsupported,
  MAX_GOLDEN_COUNT,
  type GoldenComparison,
} from '../../gim/golden/golden.js';
import type { StackManifest } from '../../gim/store/manifest.js';
import { StackStore } from '../../gim/store/stack-store.js';
import {
  backendOption,
  int,
  loadAnyStack,
  modelsDirOption,
  positiveNumber,
  startBackend,
} from '../shared.js';

interface GoldenOptions {
  check?: boolean;
  record?: boolean;
  force?: boolean;
  count: number;
  tolerance: number;
  json?: boolean;
  modelsDir: string;
  backend?: string;
}

export function goldenCommand(): Command {
  return new Command('golden')
    .description(
      "check a stack version's golden embeddings on this backend, or record them for a version " +
        'published without (the service checks them before serving a version)',
    )
    .argument('<ref>', 'stack: name, name@version or name@label')
    .option('--check', 'compute them on this backend and compare; exit 1 on a mismatch')
    .option('--record', 'compute them on this backend and add them to the manifest')
    .option('--force', 'with --record: replace golden embeddings the version has already')
    .option(
      '--count <n>',
      `with --record: generated inputs (1..${MAX_GOLDEN_COUNT})`,
      int(1, MAX_GOLDEN_COUNT),
      DEFAULT_GOLDEN_COUNT,
    )
    .option(
      '--tolerance <rel>',
      'with --record: max relative error',
      positiveNumber,
      GOLDEN_TOLERANCE,
    )
    .option('--json', 'print JSON')
    .addOption(modelsDirOption())
    .addOption(backendOption())
    .action(async (ref: string, o: GoldenOptions) => {
      if (o.check && o.record) throw new GimError('invalid_argument', 'use --check or --record');
      if (o.force && !o.record)
        throw new GimError('invalid_argument', '--force goes with --record');
      const store = new StackStore(o.modelsDir);
      if (o.record) return record(store, ref, o);
      if (o.check) return check(ref, o);
      show(await store.loadManifest(ref), o);
    });
}

async function record(store: StackStore, ref: string, o: GoldenOptions): Promise<void> {
  const existing = (await store.loadManifest(ref)).golden;
  if (existing !== undefined && !o.force) {
    throw new GimError(
      'conflict',
      `${ref} has golden embeddings already (recorded on ${existing.backend}); replace them with --force`,
    );
  }
  const backend = await startBackend(o.backend, o.json);
  const { manifest, stack } = await loadAnyStack(o.modelsDir, ref);
  try {
    const golden = await computeGolden(stack, manifest, {
      count: o.count,
      tolerance: o.tolerance,
      backend: backend.name,
    });
    // The store refuses again if another writer recorded them meanwhile (without --force).
    const updated = await store.recordGolden(`${manifest.name}@${manifest.version}`, golden, {
      force: o.force,
    });
    const bytes = Buffer.byteLength(JSON.stringify(updated, null, 2));
    if (o.json) {
      process.stdout.write(`${JSON.stringify(golden)}\n`);
      return;
    }
    process.stdout.write(
      `recorded golden embeddings of ${manifest.name}@${manifest.version} on ${golden.backend}: ` +
        `${golden.inputs.count} inputs x ${golden.layers.length} layers, tolerance ` +
        `${fmt(golden.tolerance.maxRelError)}; manifest.json now ${(bytes / 1024).toFixed(1)} KB\n`,
    );
  } finally {
    stack.dispose();
  }
}

async function check(ref: string, o: GoldenOptions): Promise<void> {
  const backend = await startBackend(o.backend, o.json);
  const { manifest, stack } = await loadAnyStack(o.modelsDir, ref);
  const id = `${manifest.name}@${manifest.version}`;
  let result: GoldenComparison;
  try {
    const expected = manifest.golden;
    if (expected === undefined) {
      throw new GimError(
        'not_found',
        `${id} has no golden embeddings; record them with \`gim golden ${id} --record\``,
      );
    }
    const unsupported = goldenUnsupported(expected);
    if (unsupported !== null) throw new GimError('unsupported_media', `${id}: ${unsupported}`);
    const started = performance.now();
    const actual = await computeGolden(stack, manifest, {
      count: expected.inputs.count,
      backend: backend.name,
    });
    result = compareGolden(expected, actual);
    const ms = performance.now() - started;
    if (o.json) process.stdout.write(`${JSON.stringify({ stack: id, ...result, ms })}\n`);
    else printTable(id, manifest, result, ms);
  } finally {
    stack.dispose();
  }
  if (!result.ok) throw new GimError('golden_mismatch', `${id}: ${result.message}`);
}

function printTable(id: string, manifest: StackManifest, r: GoldenComparison, ms: number): void {
  const rows = [['layer', 'dim', 'max rel error', 'worst input', '']];
  for (const l of r.layers) {
    const dim = manifest.modules[l.layer - 1]?.embeddingDim ?? '';
    const verdict = l.maxRelError <= r.tolerance ? 'ok' : 'MISMATCH';
    rows.push([String(l.layer), String(dim), fmt(l.maxRelError), l.input, verdict]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
  const lines = rows.map((row) => row.map((cell, c) => cell.padEnd(widths[c]!)).join('  '));
  process.stdout.write(
    `${id}: golden embeddings recorded on ${r.expectedBackend}, computed on ${r.actualBackend} ` +
      `(tolerance ${fmt(r.tolerance)}, ${ms.toFixed(0)} ms)\n` +
      `${lines.map((l) => l.trimEnd()).join('\n')}\n${r.ok ? 'ok' : 'MISMATCH'}: ${r.message}\n`,
  );
}

function show(manifest: StackManifest, o: GoldenOptions): void {
  const id = `${manifest.name}@${manifest.version}`;
  const g = manifest.golden;
  if (o.json) {
    process.stdout.write(`${JSON.stringify(g ?? null)}\n`);
    return;
  }
  if (g === undefined) {
    process.stdout.write(
      `${id}: no golden embeddings (served unchecked); add them with --record\n`,
    );
    return;
  }
  const unsupported = goldenUnsupported(g);
  process.stdout.write(
    unsupported !== null
      ? `${id}: ${unsupported}\n`
      : `${id}: golden embeddings of ${g.inputs.count} inputs (${g.inputs.ids?.join(', ') ?? g.inputs.generator}) ` +
          `at layers ${g.layers.map((l) => l.layer).join(', ')}, recorded on ${g.backend}, ` +
          `tolerance ${fmt(g.tolerance.maxRelError)}; --check compares them on this backend\n`,
  );
}
