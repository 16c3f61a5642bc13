import { Command } from 'commander';
import { headFeatures } from '../../gim/classify/train-head.js';
import { unlabelledFiles } from '../../gim/data/labelled-files.js';
import { HeadStore } from '../../gim/store/head-store.js';
import { bindHead } from '../../gim/store/head-manifest.js';
import { backendOption, int, loadAnyStack, modelsDirOption, startBackend } from '../shared.js';

interface ClassifyOptions {
  model: string;
  head: string;
  topK: number;
  modelsDir: string;
  backend?: string;
}

export function classifyCommand(): Command {
  return new Command('classify')
    .description(
      'classify image or audio files with a head on a stack version; prints JSON to stdout',
    )
    .argument('<files...>', 'image files or, for an audio stack, WAV/FLAC/MP3/OGG')
    .requiredOption('--model <ref>', 'stack: name, name@version or name@label')
    .requiredOption('--head <ref>', 'head of that stack: head, head@version or head@label')
    .option('--top-k <k>', 'classes per file, most probable first', int(1), 3)
    .addOption(modelsDirOption())
    .addOption(backendOption())
    .action(async (files: string[], o: ClassifyOptions) => {
      await startBackend(o.backend, true);
      const { manifest, stack, spaceDigests } = await loadAnyStack(o.modelsDir, o.model);
      try {
        const { manifest: headManifest, head } = await new HeadStore(o.modelsDir).load(
          manifest.name,
          o.head,
        );
        // A conflict (exit 2) unless this version gives the head's embedding space.
        const binding = bindHead(headManifest, manifest, spaceDigests);
        const { features } = await headFeatures(stack, unlabelledFiles(files), binding);
        const ranked = head.topK(head.predict(features.x, features.n), o.topK);
        process.stdout.write(
          `${JSON.stringify({
            model: manifest.name,
            version: manifest.version,
            head: headManifest.name,
            headVersion: headManifest.version,
            layer: binding.layer,
            pooling: binding.pooling,
            normalize: binding.normalize,
            items: files.map((file, i) => ({ file, predictions: ranked[i] })),
          })}\n`,
        );
      } finally {
        stack.dispose();
      }
    });
}
