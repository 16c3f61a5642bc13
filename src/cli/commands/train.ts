import { Command, Option } from 'commander';
import { join } from 'node:path';
import { openImageDataset, DATASET_SPEC_HELP } from '../../gim/data/open-dataset.js';
import {
  CONV_ROUTES,
  SCHEDULES,
  type ConvRoute,
  type Schedule,
} from '../../gim/training/config.js';
import { trainImageStack } from '../../gim/training/train-image-stack.js';
import { StackStore } from '../../gim/store/stack-store.js';
import { imageManifest } from '../../gim/store/manifest.js';
import {
  backendOption,
  int,
  intList,
  modelsDirOption,
  positiveNumber,
  startBackend,
} from '../shared.js';
import { duration, Progress } from '../progress.js';

interface TrainImageOptions {
  data: string;
  name: string;
  modelsDir: string;
  channels?: number[];
  modules?: number;
  schedule: Schedule;
  epochs: number;
  batchSize: number;
  lr: number;
  seed: number;
  negatives: number;
  maxStepsPerEpoch?: number;
  convRoute: ConvRoute | 'auto';
  parent?: string;
  fromModule?: number;
  checkpointDir?: string;
  resume?: boolean;
  label: string[];
  backend?: string;
  height?: number;
  width?: number;
  imageChannels?: '1' | '3';
}

const DEFAULT_CHANNELS = [16, 32, 64, 128, 256];

export function trainCommand(): Command {
  const train = new Command('train').description(
    'train an encoder stack greedily (GIM) and publish it',
  );
  train
    .command('image')
    .description('train a vision stack on images')
    .requiredOption('--data <spec>', `training data: ${DATASET_SPEC_HELP}`)
    .requiredOption('--name <name>', 'stack name under the models directory')
    .addOption(modelsDirOption())
    .option('--channels <list>', 'channels per module (default 16,32,64)', intList)
    .option(
      '--modules <k>',
      'number of modules (default: one per --channels entry, else 3)',
      int(1, 5),
    )
    .addOption(
      new Option('--schedule <s>', 'training schedule').choices([...SCHEDULES]).default('parallel'),
    )
    .option('--epochs <n>', 'epochs (per module under sequential)', int(1), 1)
    .option('--batch-size <n>', 'images per batch', int(2), 32)
    .option('--lr <rate>', 'Adam learning rate', positiveNumber, 1e-3)
    .option('--seed <n>', 'random seed', int(0), 1)
    .option('--negatives <n>', 'negatives per positive pair', int(1), 16)
    .option('--max-steps-per-epoch <n>', 'cap batches per epoch (short runs)', int(1))
    .addOption(
      new Option('--conv-route <route>', 'how greedy steps compute convolutions')
        .choices([...CONV_ROUTES])
        .default('auto'),
    )
    .option('--parent <ref>', 'retrain from a published stack (name@version); keeps its adapter')
    .option(
      '--from-module <k>',
      'with --parent: first module to retrain (earlier ones stay frozen)',
      int(1),
    )
    .option(
      '--checkpoint-dir <dir>',
      'checkpoint after every epoch here (default: .checkpoints/<name>)',
    )
    .option('--resume', 'continue from the checkpoint in --checkpoint-dir')
    .option('--label <label...>', 'labels to point at the new version', ['latest'])
    .option('--height <px>', 'image folders: decode images to this height', int(1))
    .option('--width <px>', 'image folders: decode images to this width', int(1))
    .addOption(
      new Option('--image-channels <c>', 'image folders: 1 (grayscale) or 3 (RGB)').choices([
        '1',
        '3',
      ]),
    )
    .addOption(backendOption())
    .action(async (o: TrainImageOptions) => {
      const backend = await startBackend(o.backend);
      const store = new StackStore(o.modelsDir);
      const parent = o.parent ? await store.load(o.parent) : undefined;
      const parentAdapter = parent ? imageManifest(parent.manifest).adapter : undefined;
      const dataset = await openImageDataset(o.data, {
        height: o.height ?? parentAdapter?.height,
        width: o.width ?? parentAdapter?.width,
        channels: o.imageChannels ? (Number(o.imageChannels) as 1 | 3) : parentAdapter?.channels,
      });
      const channels = o.channels ?? DEFAULT_CHANNELS.slice(0, o.modules ?? 3);
      const strides = channels.map((_, i) => (i === 0 ? 1 : 2));
      const checkpointDir = o.checkpointDir ?? join('.checkpoints', o.name);
      const progress = new Progress('train');
      const info = dataset.info;
      progress.log(
        `training ${o.name} on ${info.source} (${info.count} images ${info.height}x${info.width}x${info.channels}), ` +
          `${o.schedule}, channels ${channels.join('/')}, ${o.epochs} epoch(s), batch ${o.batchSize}, backend ${backend.name}`,
      );
      let started = false;
      const outcome = await trainImageStack({
        dataset,
        channels,
        strides,
        train: {
          schedule: o.schedule,
          epochs: o.epochs,
          batchSize: o.batchSize,
          learningRate: o.lr,
          seed: o.seed,
          negatives: o.negatives,
          maxStepsPerEpoch: o.maxStepsPerEpoch,
          convRoute: o.convRoute,
          fromModule: o.fromModule ?? 1,
        },
        parent,
        checkpointDir,
        resume: o.resume,
        backend: backend.name,
        callbacks: {
          onLog: (line) => progress.log(line),
          onStep: (p) => {
            if (!started) {
              progress.start(p.totalSteps);
              started = true;
            }
            const losses = p.losses
              .map((l, i) => `m${i + 1} ${l === null ? '-' : l.toFixed(3)}`)
              .join(' ');
            const phase = p.module === null ? '' : `module ${p.module} `;
            progress.update(
              p.globalStep,
              p.totalSteps,
              `${phase}epoch ${p.epoch}/${p.epochs} | ${losses} | ${Math.round(p.unitsPerSecond)} ${p.unitName}/s`,
              p.etaSeconds,
            );
          },
          onEpochEnd: (e) =>
            progress.log(
              `epoch ${e.epoch}${e.module === null ? '' : ` (module ${e.module})`} done in ${duration(e.seconds)}: ` +
                e.losses.map((l, i) => `m${i + 1} ${l === null ? '-' : l.toFixed(4)}`).join(' '),
            ),
        },
      });
      progress.stop();
      const manifest = await store.publish(o.name, outcome.draft, { labels: o.label });
      outcome.stack.dispose();
      process.stdout.write(
        `published ${manifest.name}@${manifest.version} (labels: ${o.label.join(', ')}) in ${store.root}; ` +
          `final losses ${manifest.modules.map((m) => m.finalLoss?.toFixed(4) ?? '-').join(' / ')}; ` +
          `${outcome.result.steps} steps in ${duration(outcome.result.durationSeconds)}\n`,
      );
    });
  return train;
}
