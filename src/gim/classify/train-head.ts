import * as tf from '@tensorflow/tfjs';
import { openAudioFolder, type AudioDataset } from '../data/audio-folder.js';
import type { ImageDataset } from '../data/dataset.js';
import {
  fileAudioClips,
  fileImageDataset,
  isFileListSpec,
  readLabelledFiles,
  type LabelledFiles,
} from '../data/labelled-files.js';
import { openImageDataset } from '../data/open-dataset.js';
import { AudioEncoderStack } from '../encoders/audio-stack.js';
import type { EncoderStack } from '../encoders/encoder-stack.js';
import { l2Normalize, timePooling, type Pooling } from '../encoders/pooling.js';
import { GimError } from '../errors.js';
import { cancellationPoint } from '../cancel.js';
import { embeddingSpaceId } from '../store/embedding-space.js';
import type { HeadDataSource } from '../store/head-manifest.js';
import type { HeadDraft } from '../store/head-store.js';
import type { StackManifest } from '../store/manifest.js';
import { extractAudioFeatures } from './audio-features.js';
import { extractFeatures, featureKey, type LayerFeatures } from './features.js';
import {
  fitHead,
  resolveHeadOptions,
  scoreHead,
  type HeadFit,
  type HeadReport,
  type HeadTrainingOptions,
} from './fit-head.js';
import type { LinearHead } from './linear-head.js';
import type { FeatureSet } from './linear-probe.js';

export type HeadStack = EncoderStack | AudioEncoderStack;
/** Labelled data a head trains on: an image dataset, a speaker folder, or a file list. */
export type HeadData = ImageDataset | AudioDataset | LabelledFiles;

export interface TrainHeadInput {
  stack: HeadStack;
  manifest: StackManifest;
  /** `layerDigests(manifest, modules)` of the stack. */
  spaceDigests: readonly string[];
  dataset: HeadData;
  /** Scored after training; its class names must be among the training data's. */
  testDataset?: HeadData;
  /** One layer, or several to choose from (see `LayerCandidate`). */
  layer: number | number[];
  /** One pooling, or several to choose from. */
  pooling: Pooling | Pooling[];
  /** L2-normalise each pooled vector before the head (and so at prediction time too). */
  normalize?: boolean;
  options?: Partial<HeadTrainingOptions>;
  onProgress?: (what: string, done: number, total: number) => void;
  /** Each epoch of each head fitted (`fit`: which candidate, 1-based, of how many). */
  onEpoch?: (
    epoch: number,
    loss: number,
    validationLoss: number | undefined,
    fit: { index: number; count: number; layer: number; pooling: Pooling },
  ) => void;
  /** Each (layer, pooling) scored when choosing among several. */
  onCandidate?: (candidate: LayerCandidate) => void;
  /** Aborting it stops the embedding pass, or before the next head fit, with `cancelled`. */
  signal?: AbortSignal;
}

/**
 * One (layer, pooling) tried when `trainHead` is given several: a head is fitted on each and the
 * one with the highest validation accuracy (then the lowest validation loss, then the shallowest)
 * is kept. The test set plays no part in the choice.
 */
export interface LayerCandidate {
  layer: number;
  pooling: Pooling;
  dim: number;
  validationAccuracy: number;
  validationLoss: number;
  bestEpoch: number;
}

export interface TrainedHead {
  head: LinearHead;
  report: HeadReport;
  /** Every candidate tried, when there were several; else null. */
  layerSearch: LayerCandidate[] | null;
  /** Ready for `HeadStore.publish(manifest.name, <head name>, draft)`. */
  draft: HeadDraft;
}

/**
 * Embeds the data with the stack (one pass for every layer and pooling asked for), fits a head on
 * one layer's pooled vectors (or on each candidate, keeping the best on validation), and drafts it.
 */
export async function trainHead(input: TrainHeadInput): Promise<TrainedHead> {
  const { stack, manifest, normalize = false } = input;
  const layers = [...new Set([input.layer].flat())].sort((a, b) => a - b);
  const poolings = [...new Set([input.pooling].flat())];
  if (input.spaceDigests.length !== manifest.modules.length)
    throw new GimError('invalid_argument', `need one space digest per layer of ${manifest.name}`);
  if (layers.length === 0 || poolings.length === 0)
    throw new GimError('invalid_argument', 'give at least one layer and one pooling');
  layers.forEach((l) => stack.layer(l)); // not_found for a layer the stack lacks
  const candidates = layers.flatMap((layer) => poolings.map((pooling) => ({ layer, pooling })));
  const search = candidates.length > 1;
  // Checked before the (long) embedding pass.
  const options = resolveHeadOptions(input.options ?? {}, classNamesOf(input.dataset).length);
  if (search && options.validationFraction === 0)
    throw new GimError('invalid_argument', 'choosing among layers needs a validation split');
  const opts = { layers, poolings, normalize };
  const train = await layerFeatures(
    stack,
    input.dataset,
    opts,
    (d, t) => input.onProgress?.('embed train', d, t),
    input.signal,
  );
  const test = input.testDataset
    ? await layerFeatures(
        stack,
        input.testDataset,
        opts,
        (d, t) => input.onProgress?.('embed test', d, t),
        input.signal,
      )
    : undefined;
  let chosen: { row: LayerCandidate; fit: HeadFit } | undefined;
  const layerSearch: LayerCandidate[] = [];
  for (const [i, { layer, pooling }] of candidates.entries()) {
    await cancellationPoint(input.signal);
    const features = train.sets.get(featureKey(layer, pooling)) as FeatureSet;
    const at = { index: i + 1, count: candidates.length, layer, pooling };
    const fit = fitHead(features, train.classNames, options, {
      onEpoch: (epoch, loss, v) => input.onEpoch?.(epoch, loss, v, at),
    });
    const v = fit.report.validation;
    if (search && !v)
      throw new GimError(
        'invalid_argument',
        `${features.n} items leave no validation split at fraction ${options.validationFraction}: raise it to choose a layer`,
      );
    const row: LayerCandidate = {
      layer,
      pooling,
      dim: features.dim,
      validationAccuracy: v?.accuracy ?? NaN,
      validationLoss: v?.loss ?? NaN,
      bestEpoch: fit.report.bestEpoch,
    };
    layerSearch.push(row);
    if (search) input.onCandidate?.(row);
    if (!chosen || better(row, chosen.row)) chosen = { row, fit };
  }
  if (!chosen) throw new GimError('invalid_argument', 'no layer to train a head on');
  const { layer, pooling } = chosen.row;
  const { fit } = chosen;
  const key = featureKey(layer, pooling);
  const testSet = test
    ? relabel(test.sets.get(key) as FeatureSet, test.classNames, train.classNames)
    : undefined;
  if (testSet) fit.report.test = scoreHead(fit.head, testSet);
  const describe = async (data: HeadData, n: number): Promise<HeadDataSource> => ({
    source: dataSource(data),
    fingerprint: await dataFingerprint(data),
    items: n,
  });
  const dim = (train.sets.get(key) as FeatureSet).dim;
  const draft: HeadDraft = {
    manifest: {
      encoder: {
        name: manifest.name,
        version: manifest.version,
        modality: manifest.modality,
        layer,
        pooling,
        normalize,
        embeddingSpaceId: embeddingSpaceId(input.spaceDigests[layer - 1] as string, pooling),
      },
      classes: train.classNames,
      featureDim: dim,
      training: fit.training,
      metrics: fit.report,
      layerSearch: search ? layerSearch : null,
      data: {
        ...(await describe(input.dataset, train.count)),
        test: input.testDataset && test ? await describe(input.testDataset, test.count) : null,
      },
      backend: tf.getBackend(),
      createdAt: new Date().toISOString(),
    },
    params: fit.head.toParams(),
  };
  return { head: fit.head, report: fit.report, layerSearch: search ? layerSearch : null, draft };
}

/**
 * Pooled (and optionally L2-normalised) embeddings of every item of `data` at one layer, with
 * the data's labels: what a head trains on, or (for unlabelled files) what it classifies.
 */
export async function headFeatures(
  stack: HeadStack,
  data: HeadData,
  opts: { layer: number; pooling: Pooling; normalize: boolean },
  onProgress?: (done: number, total: number) => void,
): Promise<{ features: FeatureSet; classNames: string[] }> {
  const { layer, pooling, normalize } = opts;
  const out = await layerFeatures(
    stack,
    data,
    { layers: [layer], poolings: [pooling], normalize },
    onProgress,
  );
  return {
    features: out.sets.get(featureKey(layer, pooling)) as FeatureSet,
    classNames: out.classNames,
  };
}

/** Feature sets of every (layer, pooling), from one pass over the data. */
async function layerFeatures(
  stack: HeadStack,
  data: HeadData,
  opts: { layers: number[]; poolings: Pooling[]; normalize: boolean },
  onProgress?: (done: number, total: number) => void,
  signal?: AbortSignal,
): Promise<{ sets: LayerFeatures; classNames: string[]; count: number }> {
  const { layers, poolings } = opts;
  let sets: LayerFeatures;
  let classNames: string[];
  if (stack instanceof AudioEncoderStack) {
    const time = poolings.map((p) => timePooling(p, 'audio heads'));
    if (!('paths' in data) && !('readWindows' in data))
      throw new GimError(
        'invalid_argument',
        `${data.info.source} holds images; the stack takes audio`,
      );
    const clips = 'paths' in data ? fileAudioClips(data, stack.adapter) : data;
    const n = 'paths' in data ? data.paths.length : data.info.count;
    classNames = classNamesOf(data);
    const all = Int32Array.from({ length: n }, (_, i) => i);
    sets = await extractAudioFeatures(stack, clips, all, layers, time, onProgress, signal);
  } else {
    if ('readWindows' in data)
      throw new GimError(
        'invalid_argument',
        `${data.info.source} holds audio; the stack takes images`,
      );
    const { height, width, channels } = stack.adapter;
    const images = 'paths' in data ? fileImageDataset(data, { height, width, channels }) : data;
    const { info } = images;
    if (info.height !== height || info.width !== width || info.channels !== channels)
      throw new GimError(
        'invalid_argument',
        `${info.source} holds ${info.height}x${info.width}x${info.channels} images; the stack takes ${height}x${width}x${channels}`,
      );
    classNames = info.classNames;
    sets = await extractFeatures(stack, images, layers, poolings, { onProgress, signal });
  }
  let count = 0;
  for (const set of sets.values()) {
    if (opts.normalize) l2Normalize(set.x, set.n, set.dim);
    count = set.n;
  }
  return { sets, classNames, count };
}

/**
 * Opens a data spec for a stack: a `.csv`/`.json` file list, else a speaker folder (audio stacks)
 * or an image dataset spec (image stacks), decoded to the stack's input size.
 */
export async function openHeadData(spec: string, stack: HeadStack): Promise<HeadData> {
  if (isFileListSpec(spec)) return readLabelledFiles(spec);
  if (stack instanceof AudioEncoderStack) return openAudioFolder(spec, { adapter: stack.adapter });
  const { height, width, channels } = stack.adapter;
  return openImageDataset(spec, { height, width, channels });
}

/** Higher validation accuracy, then lower validation loss; a tie keeps the earlier candidate. */
function better(a: LayerCandidate, b: LayerCandidate): boolean {
  if (a.validationAccuracy !== b.validationAccuracy)
    return a.validationAccuracy > b.validationAccuracy;
  return a.validationLoss < b.validationLoss;
}

/** Test features relabelled into the training classes (by name). */
function relabel(test: FeatureSet, testClasses: string[], classNames: string[]): FeatureSet {
  const index = new Map(classNames.map((name, i) => [name, i]));
  const map = testClasses.map((name) => index.get(name));
  const y = Int32Array.from(test.y, (label) => {
    const mapped = map[label];
    if (mapped === undefined)
      throw new GimError(
        'invalid_data',
        `the test data has class '${testClasses[label]}', which the training data lacks; classes: ${classNames.join(', ')}`,
      );
    return mapped;
  });
  return { ...test, y };
}

function classNamesOf(data: HeadData): string[] {
  return 'paths' in data ? data.classNames : data.info.classNames;
}

/**
 * The dataset spec that opens the data a head recorded as its source again (`folder:<dir>` →
 * `<dir>`, `idx:<dir>:<split>` → `<dir>:<split>`, `fashion-mnist:train` as it is, ...), to retrain
 * the head on another stack version; undefined for a source that is no spec.
 */
export function dataSpecOfSource(source: string): string | undefined {
  if (/^fashion-mnist:(train|test)$/.test(source)) return source;
  const m = /^(idx|folder|audio-folder|files):(.+)$/.exec(source);
  return m?.[2];
}

function dataSource(data: HeadData): string {
  return 'paths' in data ? data.source : data.info.source;
}

function dataFingerprint(data: HeadData): Promise<string> {
  return 'paths' in data ? Promise.resolve(data.fingerprint) : data.fingerprint();
}
