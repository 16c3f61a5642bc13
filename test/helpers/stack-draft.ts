import type * as tf from '@tensorflow/tfjs';
import type { AudioEncoderStack } from '../../src/gim/encoders/audio-stack.js';
import { EncoderStack } from '../../src/gim/encoders/encoder-stack.js';
import type { StackDraft } from '../../src/gim/store/stack-store.js';

/**
 * A publishable draft of an untrained stack (image or audio), laid out as the trainer writes
 * manifests: the tests' one way to put a tiny real stack on disk.
 */
export async function untrainedDraft(
  stack: EncoderStack | AudioEncoderStack,
  opts: { modules?: tf.io.ModelArtifacts[]; backend?: string; seed?: number } = {},
): Promise<StackDraft> {
  const shapes = stack.layerShapes();
  return {
    manifest: {
      modality: stack instanceof EncoderStack ? 'image' : 'audio',
      adapter: stack.adapter,
      modules: stack.moduleConfigs.map((config, i) => ({
        index: i + 1,
        dir: `module-${i + 1}`,
        config,
        ...shapes[i]!,
        finalLoss: null,
      })),
      training: {
        schedule: 'parallel',
        config: {},
        seed: opts.seed ?? 1,
        epochs: 0,
        steps: 0,
        durationSeconds: 0,
      },
      data: { source: 'test', fingerprint: '0'.repeat(64), items: 0 },
      backend: opts.backend ?? 'wasm',
      createdAt: new Date().toISOString(),
      parent: null,
    },
    modules: opts.modules ?? (await stack.artifacts()),
  };
}
