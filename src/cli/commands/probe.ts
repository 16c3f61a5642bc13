import { Command } from 'commander';
import { openImageDataset, DATASET_SPEC_HELP } from '../../gim/data/open-dataset.js';
import { stratifiedSplit } from '../../gim/data/dataset.js';
import { parsePooling, timePooling } from '../../gim/encoders/pooling.js';
import {
  probeFeatureSets,
  probeLayers,
  type ProbeEpochCallback,
  type ProbeRow,
} from '../../gim/classify/probe-layers.js';
import { extractAudioFeatures } from '../../gim/classify/audio-features.js';
import { openAudioFolder, splitByUtterance } from '../../gim/data/audio-folder.js';
import { AudioEncoderStack } from '../../gim/encoders/audio-stack.js';
import { StackStore } from '../../gim/store/stack-store.js';
import type { ProbeScore, ProbeSettings, StackManifest } from '../../gim/store/manifest.js';
import {
  backendOption,
  int,
  loadStack,
  modelsDirOption,
  parseLayers,
  positiveNumber,
  startBackend,
} from '../shared.js';
import { Progress } from '../progress.js';
import { fitProgress } from '../fit-progress.js';
import {
  reportedRun,
  withProgressJsonOptions,
  type ProgressJsonOptions,
  type RunContext,
} from '../reported-run.js';

export interface ProbeOptions extends ProgressJsonOptions {
  model: string;
  data: string;
  testData?: string;
  layers: string;
  pooling?: string;
  testFraction: number;
  epochs: number;
  limit?: number;
  seed: number;
  json?: boolean;
  /** Append the sweep to the version's manifest (`evaluations`, kind `probe`). */
  record?: boolean;
  modelsDir: string;
  backend?: string;
}

export function probeCommand(): Command {
  return withProgressJsonOptions(new Command('probe'))
    .description(
      'fit a linear (logistic-regression) probe on frozen embeddings of each layer; print accuracy',
    )
    .requiredOption('--model <ref>', 'stack: name, name@version or name@label')
    .requiredOption('--data <spec>', `labelled training data: ${DATASET_SPEC_HELP}`)
    .option('--test-data <spec>', 'labelled test data (default: a stratified 20% split of --data)')
    .option('--layers <list>', 'all, last, or a comma-separated list of layers', 'all')
    .option(
      '--pooling <list>',
      'comma-separated poolings: images mean, max, none, grid2, grid3 (default mean,grid2,none); audio mean, max, meanstd over time (default mean,max)',
    )
    .option(
      '--test-fraction <f>',
      "audio: share of each speaker's utterances held out for testing",
      positiveNumber,
      0.2,
    )
    .option('--epochs <n>', 'probe training epochs', int(1), 20)
    .option('--limit <n>', 'use at most n training items (stratified)', int(10))
    .option('--seed <n>', 'split and probe seed', int(0), 1)
    .option('--json', 'print the rows as JSON')
    .option(
      '--record',
      "append the rows to the version's manifest (evaluations), for `gim models` and the API",
    )
    .addOption(modelsDirOption())
    .addOption(backendOption())
    .action((o: ProbeOptions) =>
      reportedRun({ ...o, command: 'probe', name: o.model }, async (ctx) => {
        await startBackend(o.backend, false, ctx.log);
        const rows = await probeStack(o, ctx);
        report(o, rows, ctx);
        if (o.record) await record(o, rows, ctx);
      }),
    );
}

/**
 * The layer sweep of `o.model` (image or audio): one probe row per (layer, pooling), each printed
 * as it is scored. The backend must be started; a stop request ends it with `cancelled`.
 */
export async function probeStack(
  o: ProbeOptions,
  ctx: RunContext,
): Promise<{ manifest: StackManifest; rows: ProbeRow[] }> {
  const rows =
    (await new StackStore(o.modelsDir).loadManifest(o.model)).modality === 'audio'
      ? await probeAudio(o, ctx)
      : await probeImage(o, ctx);
  ctx.throwIfStopped();
  return rows;
}

/** Prints the rows (or JSON) and the best layer; the `result` event. */
function report(
  o: ProbeOptions,
  r: { manifest: StackManifest; rows: ProbeRow[] },
  ctx: RunContext,
): void {
  const best = r.rows.reduce((a, b) => (b.testAccuracy > a.testAccuracy ? b : a));
  const result = { model: r.manifest.name, version: r.manifest.version, rows: r.rows, best };
  ctx.events.emit({ type: 'result', ...result });
  if (o.json) ctx.out.write(`${JSON.stringify(result, null, 2)}\n`);
  else
    say(ctx, `best: layer ${best.layer} ${best.pooling} ${(100 * best.testAccuracy).toFixed(2)}%`);
}

/** The rows as a manifest records them: the best test accuracy and every row. */
export function probeScore(version: number, rows: ProbeRow[]): ProbeScore {
  const best = rows.reduce((a, b) => (b.testAccuracy > a.testAccuracy ? b : a));
  return {
    version,
    accuracy: best.testAccuracy,
    best: { layer: best.layer, pooling: best.pooling },
    rows: rows.map((r) => ({
      layer: r.layer,
      pooling: r.pooling,
      dim: r.dim,
      testAccuracy: r.testAccuracy,
    })),
  };
}

/** The options a sweep ran with, as manifests record them (probe records and promotion gates). */
export function probeSettings(o: ProbeOptions): ProbeSettings {
  return {
    layers: o.layers,
    pooling: o.pooling ?? null,
    epochs: o.epochs,
    limit: o.limit ?? null,
    seed: o.seed,
    testFraction: o.testData === undefined ? o.testFraction : null,
  };
}

/** `--record`: the sweep appended to the probed version's manifest, atomically. */
async function record(
  o: ProbeOptions,
  r: { manifest: StackManifest; rows: ProbeRow[] },
  ctx: RunContext,
): Promise<void> {
  const { name, version } = r.manifest;
  await new StackStore(o.modelsDir).recordEvaluation(`${name}@${version}`, {
    kind: 'probe',
    at: new Date().toISOString(),
    data: o.data,
    testData: o.testData ?? null,
    settings: probeSettings(o),
    score: probeScore(version, r.rows),
  });
  say(ctx, `recorded in the manifest of ${name}@${version}`);
}

function printRow(o: ProbeOptions, r: ProbeRow, ctx: RunContext): void {
  if (o.json) return;
  say(
    ctx,
    `layer ${r.layer}  ${r.pooling.padEnd(5)}  dim ${String(r.dim).padStart(5)}  ` +
      `train ${(100 * r.trainAccuracy).toFixed(2)}%  test ${(100 * r.testAccuracy).toFixed(2)}%`,
  );
}

/** A human result line: stdout (stderr under `--progress-json -`), and a `log` event. */
function say(ctx: RunContext, line: string): void {
  ctx.out.write(`${line}\n`);
  ctx.events.emit({ type: 'log', line });
}

/** Each probe fit's epochs as `progress` events. */
function onFitEpoch(o: ProbeOptions, items: number, ctx: RunContext): ProbeEpochCallback {
  const progress = fitProgress(o.epochs, items);
  return (epoch, loss, fit) => ctx.events.progress(progress(epoch, loss, undefined, fit), true);
}

/** Speaker identification: one probe per layer on time-pooled embeddings of whole utterances. */
async function probeAudio(
  o: ProbeOptions,
  ctx: RunContext,
): Promise<{ manifest: StackManifest; rows: ProbeRow[] }> {
  const { manifest, modules } = await new StackStore(o.modelsDir).load(o.model);
  const stack = await AudioEncoderStack.fromManifest(manifest, modules);
  try {
    const layers = parseLayers(o.layers, stack.depth);
    const poolings = (o.pooling ?? 'mean,max')
      .split(',')
      .map((p) => timePooling(parsePooling(p.trim()), 'audio probes'));
    const dataset = await openAudioFolder(o.data, { adapter: stack.adapter });
    const split = splitByUtterance(dataset, o.testFraction, o.seed);
    const progress = new Progress('probe', 5000, process.stderr, (line) =>
      ctx.events.emit({ type: 'log', line }),
    );
    progress.log(
      `probing ${manifest.name}@${manifest.version} on ${dataset.info.classNames.length} speakers: ` +
        `${split.train.length} train / ${split.test.length} held-out utterances`,
    );
    const train = await extractAudioFeatures(
      stack,
      dataset,
      split.train,
      layers,
      poolings,
      (d, t) => progress.update(d, t, 'embed train'),
      ctx.signal,
    );
    const test = await extractAudioFeatures(
      stack,
      dataset,
      split.test,
      layers,
      poolings,
      (d, t) => progress.update(d, t, 'embed test'),
      ctx.signal,
    );
    const rows = probeFeatureSets(train, test, layers, poolings, dataset.info.classNames.length, {
      probe: { epochs: o.epochs, seed: o.seed },
      onRow: (r) => printRow(o, r, ctx),
      onEpoch: onFitEpoch(o, split.train.length, ctx),
    });
    return { manifest, rows };
  } finally {
    stack.dispose();
  }
}

async function probeImage(
  o: ProbeOptions,
  ctx: RunContext,
): Promise<{ manifest: StackManifest; rows: ProbeRow[] }> {
  const { manifest, stack } = await loadStack(o.modelsDir, o.model);
  try {
    const layers = parseLayers(o.layers, stack.depth);
    const poolings = (o.pooling ?? 'mean,grid2,none').split(',').map((p) => parsePooling(p.trim()));
    const a = stack.adapter;
    const size = { height: a.height, width: a.width, channels: a.channels };
    const train = await openImageDataset(o.data, size);
    let test = train;
    let trainSubset: Int32Array | undefined;
    let testSubset: Int32Array | undefined;
    const labels = (await train.read(Int32Array.from({ length: train.info.count }, (_, i) => i)))
      .labels;
    if (o.testData) {
      test = await openImageDataset(o.testData, size);
    } else {
      const split = stratifiedSplit(labels, 0.2, o.seed);
      trainSubset = split.train;
      testSubset = split.test;
    }
    if (o.limit !== undefined && (trainSubset?.length ?? train.info.count) > o.limit) {
      const pool = trainSubset ?? Int32Array.from({ length: train.info.count }, (_, i) => i);
      const poolLabels = Int32Array.from(pool, (i) => labels[i] as number);
      const keep = stratifiedSplit(poolLabels, o.limit / pool.length, o.seed + 1).test;
      trainSubset = Int32Array.from(keep, (i) => pool[i] as number);
    }
    const progress = new Progress('probe', 5000, process.stderr, (line) =>
      ctx.events.emit({ type: 'log', line }),
    );
    progress.log(
      `probing ${manifest.name}@${manifest.version}, layers ${layers.join(',')}, poolings ${poolings.join(',')}`,
    );
    const rows = await probeLayers(stack, train, test, layers, poolings, {
      probe: { epochs: o.epochs, seed: o.seed },
      trainSubset,
      testSubset,
      onProgress: (what, d, t) => progress.update(d, t, what),
      onRow: (r) => printRow(o, r, ctx),
      onEpoch: onFitEpoch(o, trainSubset?.length ?? train.info.count, ctx),
      signal: ctx.signal,
    });
    return { manifest, rows };
  } finally {
    stack.dispose();
  }
}
