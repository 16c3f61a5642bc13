import { Command, Option } from 'commander';
import { readFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import { decodeImage } from '../../gim/data/decode-image.js';
import { POOLINGS, l2Normalize, parsePooling, poolGrid } from '../../gim/encoders/pooling.js';
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
    .description('embed image files with a published stack; prints JSON to stdout')
    .argument('<files...>', 'image files (PNG, JPEG, WebP, ...)')
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
