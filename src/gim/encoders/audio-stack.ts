import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import type { AudioAdapterConfig } from '../modality/audio.js';
import { audioManifest, type StackManifest } from '../store/manifest.js';
import { loadModules, ModuleStack, type LayerShape } from './gim-module.js';
import {
  AudioModule,
  audioFrameCounts,
  minimumSamples,
  type AudioModuleConfig,
} from './audio-modules.js';

/**
 * A stack of audio modules over raw 16 kHz clips: every module's output frames are an embedding
 * (conv modules at their own frame rate, the GRU at 100 frames/s); `embed` runs only up to the
 * deepest layer asked for.
 */
export class AudioEncoderStack extends ModuleStack<AudioModule, AudioModuleConfig> {
  readonly modality = 'audio' as const;

  constructor(
    readonly adapter: AudioAdapterConfig,
    modules: AudioModule[],
  ) {
    super(modules);
    modules.forEach((m, i) => {
      const below = i === 0 ? 1 : (modules[i - 1] as AudioModule).channels;
      if (m.config.inChannels !== below)
        throw new GimError(
          'invalid_argument',
          `audio module ${i + 1} expects ${m.config.inChannels} input channels, the layer below gives ${below}`,
        );
    });
  }

  static create(
    adapter: AudioAdapterConfig,
    configs: AudioModuleConfig[],
    seed: number,
  ): AudioEncoderStack {
    return new AudioEncoderStack(
      adapter,
      configs.map((c, i) => AudioModule.create(c, seed + 7919 * (i + 1), `audio${i + 1}`)),
    );
  }

  /** Rebuilds a published audio stack (invalid_argument if the manifest is another modality's). */
  static fromManifest(
    manifest: StackManifest,
    artifacts: tf.io.ModelArtifacts[],
  ): Promise<AudioEncoderStack> {
    const m = audioManifest(manifest);
    return AudioEncoderStack.fromArtifacts(
      m.adapter,
      m.modules.map((x) => x.config),
      artifacts,
    );
  }

  static async fromArtifacts(
    adapter: AudioAdapterConfig,
    configs: AudioModuleConfig[],
    artifacts: tf.io.ModelArtifacts[],
  ): Promise<AudioEncoderStack> {
    const modules = await loadModules(configs, artifacts, (c, a) =>
      AudioModule.fromArtifacts(c, a),
    );
    return new AudioEncoderStack(adapter, modules);
  }

  /** Per layer the frames of one training window and their channels (no grid). */
  layerShapes(): LayerShape[] {
    const frames = this.frames(this.adapter.windowSamples);
    return this.modules.map((m, i) => ({
      outputShape: [frames[i] as number, m.channels],
      gridShape: [],
      embeddingDim: m.channels,
    }));
  }

  /** Frames each layer gives for a clip of `samples` samples. */
  frames(samples: number): number[] {
    return audioFrameCounts(samples, this.moduleConfigs);
  }

  /** The shortest clip (samples) every layer can encode: the receptive field. */
  get minimumSamples(): number {
    return minimumSamples(this.moduleConfigs);
  }

  /**
   * Frame embeddings of n equal-length clips [n, T] (already normalised): layer → [n, frames, C].
   * One forward pass up to the deepest layer.
   */
  embed(samples: Float32Array, n: number, layers: number[]): Map<number, tf.Tensor3D> {
    if (layers.length === 0) throw new GimError('invalid_argument', 'ask for at least one layer');
    layers.forEach((l) => this.layer(l));
    const T = samples.length / n;
    if (!Number.isInteger(T) || T < this.minimumSamples)
      throw new GimError(
        'invalid_data',
        `clips must be at least ${this.minimumSamples} samples (${((1000 * this.minimumSamples) / 16000).toFixed(1)} ms)`,
      );
    const deepest = Math.max(...layers);
    const out = new Map<number, tf.Tensor3D>();
    tf.tidy(() => {
      let x = tf.tensor4d(samples, [n, 1, T, 1]);
      for (let l = 1; l <= deepest; l++) {
        x = this.layer(l).apply(x);
        if (layers.includes(l)) out.set(l, tf.keep(tf.reshape(x, [n, x.shape[2], x.shape[3]])));
      }
    });
    return out;
  }
}
