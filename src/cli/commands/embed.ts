import { Command, Option } from 'commander';
import { readFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import { decodeImage } from '../../gim/data/decode-image.js';
import {
  POOLINGS,
  l2Normalize,
  parsePooling,
  poolGrid,
  timePooling,
  type Pooling,
} from '../../gim/encoders/pooling.js';
import { decodeAudio } from '../../gim/data/decode-audio.js';
import { normalizeAudio } from '../../gim/modality/audio.js';
import { AudioEncoderStack } from '../../gim/encoders/audio-stack.js';
import { StackStore } from '../../gim/store/stack-store.js';
import { gridShape } from '../../gim/encoders/encoder-stack.js';
import { backendOption, loadStack, modelsDirOption, parseLayers, startBackend } from '../shared.js';

interface EmbedOptions {
  model: string;
  layer: string;
  pooling: string;
  normalize?: boolean;
  modelsDir: string;
  backend?: string;
}

export function embedCommand(): Command {
  return new Command('embed')
    .description('embed image or audio files with a published stack; prints JSON to stdout')
    .argument(
      '<files...>',
      'image files (PNG, JPEG, WebP, ...) or, for an audio stack, WAV/FLAC/MP3/OGG',
    )
    .requiredOption('--model <ref>', 'stack: name, name@version or name@label')
    .option('--layer <k>', 'layer 1..K, last, or a comma-separated list', 'last')
    .addOption(
      new Option('--pooling <p>', 'how the patch grid becomes a vector')
        .choices([...POOLINGS])
        .default('mean'),
    )
    .option('--normalize', 'L2-normalise each vector')
    .addOption(modelsDirOption())
    .addOption(backendOption())
    .action(async (files: string[], o: EmbedOptions) => {
      await startBackend(o.backend, true);
      const pooling = parsePooling(o.pooling);
      if ((await new StackStore(o.modelsDir).loadManifest(o.model)).modality === 'audio') {
        await embedAudio(files, o, pooling);
        return;
      }
      const { manifest, stack } = await loadStack(o.modelsDir, o.model);
      try {
        const layers = parseLayers(o.layer, stack.depth);
        const a = stack.adapter;
        const pixels = new Float32Array(files.length * a.height * a.width * a.channels);
        for (let i = 0; i < files.length; i++) {
          const img = await decodeImage(await readFile(files[i] as string), {
            height: a.height,
            width: a.width,
            channels: a.channels,
          });
          pixels.set(img, i * img.length);
        }
        const grids = stack.embed(pixels, files.length, layers);
        const items = files.map((file) => ({ file, layers: {} as Record<string, number[]> }));
        for (const [layer, grid] of grids) {
          const v = poolGrid(grid.dataSync() as Float32Array, gridShape(grid), pooling);
          const dim = v.length / files.length;
          if (o.normalize) l2Normalize(v, files.length, dim);
          items.forEach(
            (item, i) =>
              (item.layers[String(layer)] = Array.from(v.subarray(i * dim, (i + 1) * dim))),
          );
        }
        tf.dispose([...grids.values()]);
        const { rows, cols } = stack.grid;
        process.stdout.write(
          `${JSON.stringify({
            model: manifest.name,
            version: manifest.version,
            layers,
            pooling,
            normalize: Boolean(o.normalize),
            dims: Object.fromEntries(
              layers.map((l) => [l, items[0]?.layers[String(l)]?.length ?? 0]),
            ),
            grid: [rows, cols],
            items,
          })}\n`,
        );
      } finally {
        stack.dispose();
      }
    });
}

/**
 * Audio: each file decoded to 16 kHz mono, normalised as the stack's adapter says, and encoded at
 * its own length; `mean`/`max`/`meanstd` pool over time, `none` returns the frame sequence of the layer.
 */
async function embedAudio(files: string[], o: EmbedOptions, pooling: Pooling): Promise<void> {
  if (pooling !== 'none') timePooling(pooling, 'audio embeddings (or none: the frame sequence)');
  const { manifest, modules } = await new StackStore(o.modelsDir).load(o.model);
  const stack = await AudioEncoderStack.fromManifest(manifest, modules);
  try {
    const layers = parseLayers(o.layer, stack.depth);
    const items = [];
    for (const file of files) {
      const decoded = await decodeAudio(await readFile(file), {
        maxSeconds: stack.adapter.maxSeconds,
        minSamples: stack.minimumSamples,
      });
      const samples = normalizeAudio(decoded.samples, stack.adapter);
      const seqs = stack.embed(samples, 1, layers);
      const out: Record<
        string,
        { frames: number; frameRateHz: number; embedding: number[] | number[][] }
      > = {};
      for (const [layer, seq] of seqs) {
        const [, t, c] = seq.shape;
        const values = seq.dataSync() as Float32Array;
        const frameRateHz = (16000 * t) / samples.length;
        if (pooling === 'none') {
          if (o.normalize) l2Normalize(values, t, c);
          out[String(layer)] = {
            frames: t,
            frameRateHz,
            embedding: Array.from({ length: t }, (_, i) =>
              Array.from(values.subarray(i * c, (i + 1) * c)),
            ),
          };
        } else {
          const v = poolGrid(values, { n: 1, rows: 1, cols: t, channels: c }, pooling);
          if (o.normalize) l2Normalize(v, 1, v.length);
          out[String(layer)] = { frames: t, frameRateHz, embedding: Array.from(v) };
        }
      }
      tf.dispose([...seqs.values()]);
      items.push({ file, seconds: samples.length / 16000, layers: out });
    }
    process.stdout.write(
      `${JSON.stringify({ model: manifest.name, version: manifest.version, modality: 'audio', layers, pooling, normalize: Boolean(o.normalize), items })}\n`,
    );
  } finally {
    stack.dispose();
  }
}
