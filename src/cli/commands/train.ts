import { Command, InvalidArgumentError, Option } from 'commander';
import { openImageDataset, DATASET_SPEC_HELP } from '../../gim/data/open-dataset.js';
import { openAudioFolder, splitByUtterance } from '../../gim/data/audio-folder.js';
import { defaultAudioAdapter } from '../../gim/modality/audio.js';
import {
  CONV_ROUTES,
  DIRECTIONS,
  LOSS_NORMS,
  LR_SCHEDULES,
  NEGATIVE_SOURCES,
  SCHEDULES,
  type ConvRoute,
  type Direction,
  type LossNorm,
  type LrSchedule,
  type NegativeSource,
  type Schedule,
  type TrainConfig,
} from '../../gim/training/config.js';
import { trainImageStack } from '../../gim/training/train-image-stack.js';
import { trainAudioStack } from '../../gim/training/train-audio-stack.js';
import { audioManifest, imageManifest, type StackManifest } from '../../gim/store/manifest.js';
import {
  backendOption,
  int,
  intList,
  modelsDirOption,
  nonNegativeNumber,
  positiveNumber,
  startBackend,
} from '../shared.js';
import { runTrainJob } from '../train-job.js';
import { withProgressJsonOptions, type ProgressJsonOptions } from '../reported-run.js';

/** Options every `gim train <modality>` takes. */
interface CommonTrainOptions extends ProgressJsonOptions {
  data: string;
  name: string;
  modelsDir: string;
  schedule: Schedule;
  epochs: number;
  batchSize: number;
  lr: number;
  lrSchedule: LrSchedule;
  seed: number;
  negatives?: number;
  negativesFrom: NegativeSource;
  lossNorm: LossNorm;
  maxStepsPerEpoch?: number;
  parent?: string;
  fromModule?: number;
  checkpointDir?: string;
  resume?: boolean;
  label: string[];
  backend?: string;
}

interface TrainImageOptions extends CommonTrainOptions {
  channels?: number[];
  strides?: number[];
  residualKernels?: number[];
  modules?: number;
  convRoute: ConvRoute | 'auto';
  height?: number;
  width?: number;
  imageChannels?: '1' | '3';
  offsets?: number[];
  directions?: Direction[];
  patchJitter: number;
  patchFlip: boolean;
  patchBrightness: number;
  patchContrast: number;
  patchStride?: number;
}

function directionList(value: string): Direction[] {
  const parts = value.split(',').map((s) => s.trim());
  const bad = parts.filter((p) => !(DIRECTIONS as readonly string[]).includes(p));
  if (parts.length === 0 || bad.length > 0)
    throw new InvalidArgumentError(`expected a comma-separated list of ${DIRECTIONS.join(', ')}`);
  return parts as Direction[];
}

interface TrainAudioOptions extends CommonTrainOptions {
  channels: number;
  gruUnits: number;
  window: number;
  normalize: 'rms' | 'none';
  holdOut?: number;
}

const DEFAULT_CHANNELS = [16, 32, 64, 128, 256];

function withCommonOptions(
  cmd: Command,
  defaults: { batchSize: number; negatives: number },
): Command {
  return withProgressJsonOptions(cmd)
    .requiredOption('--name <name>', 'stack name under the models directory')
    .addOption(modelsDirOption())
    .addOption(
      new Option('--schedule <s>', 'training schedule').choices([...SCHEDULES]).default('parallel'),
    )
    .option(
      '--epochs <n>',
      'epochs (per module under sequential); 0 publishes the initial weights, untrained: the ' +
        'random-init baseline of the same settings and seed',
      int(0),
      1,
    )
    .option('--batch-size <n>', 'items per batch', int(2), defaults.batchSize)
    .option('--lr <rate>', 'Adam learning rate', positiveNumber, 1e-3)
    .addOption(
      new Option(
        '--lr-schedule <s>',
        'learning rate over the run: constant (the paper), or cosine decay from --lr to 0',
      )
        .choices([...LR_SCHEDULES])
        .default('constant'),
    )
    .option('--seed <n>', 'random seed', int(0), 1)
    .option('--negatives <n>', 'negatives per positive pair', int(1), defaults.negatives)
    .addOption(
      new Option(
        '--negatives-from <s>',
        'draw negatives from any item of the batch (the reference code) or the same item only',
      )
        .choices([...NEGATIVE_SOURCES])
        .default('batch'),
    )
    .addOption(
      new Option(
        '--loss-norm <n>',
        'patch (image) or frame (audio) vectors in the loss: as they are, or layer-normalised',
      )
        .choices([...LOSS_NORMS])
        .default('none'),
    )
    .option('--max-steps-per-epoch <n>', 'cap batches per epoch (short runs)', int(1))
    .option('--parent <ref>', 'retrain from a published stack (name@version); keeps its adapter')
    .option(
      '--from-module <k>',
      'with --parent: first module to retrain (earlier ones stay frozen; default 1, or the first new module when --channels grows the stack)',
      int(1),
    )
    .option(
      '--checkpoint-dir <dir>',
      'checkpoint after every epoch and on SIGTERM/SIGINT here (default: .checkpoints/<name>)',
    )
    .option(
      '--resume',
      'continue from the checkpoint in --checkpoint-dir (none there: start fresh)',
    )
    .option('--label <label...>', 'labels to point at the new version', ['latest'])
    .addOption(backendOption());
}

function trainConfig(o: CommonTrainOptions): Partial<TrainConfig> {
  return {
    schedule: o.schedule,
    epochs: o.epochs,
    batchSize: o.batchSize,
    learningRate: o.lr,
    lrSchedule: o.lrSchedule,
    seed: o.seed,
    negatives: o.negatives,
    negativesFrom: o.negativesFrom,
    lossNorm: o.lossNorm,
    maxStepsPerEpoch: o.maxStepsPerEpoch,
    ...(o.fromModule !== undefined ? { fromModule: o.fromModule } : {}),
  };
}

export function trainCommand(): Command {
  const train = new Command('train').description(
    'train an encoder stack greedily (GIM) and publish it',
  );
  withCommonOptions(
    train
      .command('image')
      .description('train a vision stack on images')
      .requiredOption('--data <spec>', `training data: ${DATASET_SPEC_HELP}`),
    { batchSize: 32, negatives: 16 },
  )
    .option(
      '--channels <list>',
      "channels per module (default 16,32,64; with --parent its own, and more entries grow it: the parent's modules are kept and the new ones trained on top)",
      intList,
    )
    .option(
      '--strides <list>',
      'conv stride per module (default 1 for the first, 2 for the others; 1 keeps a module at the resolution of the one below)',
      intList,
    )
    .option(
      '--residual-kernels <list>',
      'residual conv kernel per module, 1 or 3 (default 1 each; 3 makes a module two 3x3 convs, up to about 3x the training time; with --parent its own for its modules)',
      intList,
    )
    .option(
      '--modules <k>',
      'number of modules (default: one per --channels entry, else 3)',
      int(1, 5),
    )
    .addOption(
      new Option('--conv-route <route>', 'how greedy steps compute convolutions')
        .choices([...CONV_ROUTES])
        .default('auto'),
    )
    .option('--height <px>', 'image folders: decode images to this height', int(1))
    .option('--width <px>', 'image folders: decode images to this width', int(1))
    .addOption(
      new Option('--image-channels <c>', 'image folders: 1 (grayscale) or 3 (RGB)').choices([
        '1',
        '3',
      ]),
    )
    .option(
      '--patch-stride <px>',
      'pixels between patches (default 4: a 6x6 grid on 28x28)',
      int(1),
    )
    .option('--offsets <list>', 'prediction offsets in grid cells (default 2,3,4,5)', intList)
    .option(
      '--directions <list>',
      `directions patches predict in: ${DIRECTIONS.join(', ')} (default down; CPC v2: all four)`,
      directionList,
    )
    .option(
      '--patch-jitter <px>',
      'per-patch augmentation: shift each patch by up to px',
      int(0),
      0,
    )
    .option('--patch-flip', 'per-patch augmentation: mirror each patch with p = 0.5', false)
    .option(
      '--patch-brightness <b>',
      'per-patch augmentation: add a uniform offset in [-b, b] (normalised units)',
      nonNegativeNumber,
      0,
    )
    .option(
      '--patch-contrast <c>',
      'per-patch augmentation: scale around the patch mean by [1 - c, 1 + c]',
      nonNegativeNumber,
      0,
    )
    .action((o: TrainImageOptions) =>
      runTrainJob(o, 'image', async ({ progress, callbacks, signal, checkpointDir, store }) => {
        const backend = await startBackend(o.backend, false, (line) => progress.log(line));
        const parent = o.parent ? await store.load(o.parent) : undefined;
        const parentAdapter = parent ? imageManifest(parent.manifest).adapter : undefined;
        const dataset = await openImageDataset(o.data, {
          height: o.height ?? parentAdapter?.height,
          width: o.width ?? parentAdapter?.width,
          channels: o.imageChannels ? (Number(o.imageChannels) as 1 | 3) : parentAdapter?.channels,
        });
        // A retrain keeps the parent's modules (more --channels than it has grow it).
        const parentChannels = parent?.manifest.modules.map((m) => m.embeddingDim);
        const channels = o.channels ?? parentChannels ?? DEFAULT_CHANNELS.slice(0, o.modules ?? 3);
        const info = dataset.info;
        const from = parent ? ` (from ${parentRef(parent.manifest)})` : '';
        progress.log(
          `${o.epochs === 0 ? 'initialising (untrained)' : 'training'} ${o.name} on ${info.source} ` +
            `(${info.count} images ${info.height}x${info.width}x${info.channels}), ` +
            `${o.schedule}, channels ${channels.join('/')}${from}, ${o.epochs} epoch(s), batch ${o.batchSize}, backend ${backend.name}`,
        );
        return trainImageStack({
          dataset,
          channels,
          ...(o.strides ? { strides: o.strides } : {}),
          ...(o.residualKernels ? { residualKernels: o.residualKernels } : {}),
          ...(o.patchStride !== undefined ? { adapter: { patchStride: o.patchStride } } : {}),
          train: {
            ...trainConfig(o),
            convRoute: o.convRoute,
            ...(o.offsets ? { offsets: o.offsets } : {}),
            ...(o.directions ? { directions: o.directions } : {}),
            patchAugment: {
              jitter: o.patchJitter,
              flip: o.patchFlip,
              brightness: o.patchBrightness,
              contrast: o.patchContrast,
            },
          },
          parent,
          checkpointDir,
          resume: o.resume,
          backend: backend.name,
          callbacks,
          signal,
        });
      }),
    );

  withCommonOptions(
    train
      .command('audio')
      .description('train an audio stack on raw 16 kHz speech (5 strided convs + a GRU, 6 modules)')
      .requiredOption(
        '--data <dir>',
        'a speaker folder: <speaker>/<chapter>/*.flac (LibriSpeech) or <speaker>/*.wav|flac|mp3|ogg',
      ),
    { batchSize: 8, negatives: 10 },
  )
    .option('--channels <n>', 'conv channels (GIM.md scaled-down: 32; paper: 512)', int(1), 32)
    .option('--gru-units <n>', 'GRU units (32; paper: 256)', int(1), 32)
    .option('--window <samples>', 'training window in samples (10240 = 0.64 s)', int(1600), 10240)
    .addOption(
      new Option('--normalize <how>', 'per-clip normalisation')
        .choices(['rms', 'none'])
        .default('rms'),
    )
    .option(
      '--hold-out <fraction>',
      "keep this fraction of each speaker's utterances out of training (for a probe)",
      positiveNumber,
    )
    .action((o: TrainAudioOptions) =>
      runTrainJob(o, 'audio', async ({ progress, callbacks, signal, checkpointDir, store }) => {
        const backend = await startBackend(o.backend, false, (line) => progress.log(line));
        const parent = o.parent ? await store.load(o.parent) : undefined;
        const adapter = parent
          ? audioManifest(parent.manifest).adapter
          : defaultAudioAdapter({ windowSamples: o.window, normalize: o.normalize });
        const dataset = await openAudioFolder(o.data, { adapter });
        const subset = o.holdOut ? splitByUtterance(dataset, o.holdOut, o.seed).train : undefined;
        progress.log(
          `${o.epochs === 0 ? 'initialising (untrained)' : 'training'} ${o.name} on ${dataset.info.source} ` +
            `(${subset?.length ?? dataset.info.count} utterances, ` +
            `${dataset.info.classNames.length} speakers), ${o.schedule}, ${audioShape(o, parent?.manifest)}, ` +
            `${o.epochs} epoch(s), batch ${o.batchSize}, backend ${backend.name}`,
        );
        return trainAudioStack({
          dataset,
          subset,
          channels: o.channels,
          gruUnits: o.gruUnits,
          adapter: { windowSamples: o.window, normalize: o.normalize },
          train: trainConfig(o),
          parent,
          checkpointDir,
          resume: o.resume,
          backend: backend.name,
          callbacks,
          signal,
        });
      }),
    );
  return train;
}

const parentRef = (m: StackManifest) => `${m.name}@${m.version}`;

/** The audio architecture a run trains: the parent's when it retrains one (its modules are kept). */
function audioShape(o: { channels: number; gruUnits: number }, parent?: StackManifest): string {
  if (!parent) return `${o.channels} channels + GRU ${o.gruUnits}`;
  const dims = parent.modules.map((m) => m.embeddingDim);
  return `${parentRef(parent)}'s ${dims[0]} channels + GRU ${dims.at(-1)}`;
}
