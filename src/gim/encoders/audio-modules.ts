import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import { modelArtifacts, modelVariables, type GimModule } from './gim-module.js';

/**
 * The audio encoder of GIM.md: five strided 1-D convolutions (kernels 10, 8, 4, 4, 4; strides
 * 5, 4, 2, 2, 2; padding 2, 2, 2, 2, 1; ReLU, no norm: one frame per 10 ms at 16 kHz) and an
 * autoregressive GRU; GIM makes each of the six its own module.
 *
 * Sequences are laid out as conv2d input [batch, 1, time, channels] so the wasm backend's fast
 * conv kernels (and our registered gradients) serve them.
 */
export interface AudioConvModuleConfig {
  kind: 'audio-conv';
  inChannels: number;
  channels: number;
  kernel: number;
  stride: number;
  padding: number;
}

export interface AudioGruModuleConfig {
  kind: 'audio-gru';
  inChannels: number;
  units: number;
}

export type AudioModuleConfig = AudioConvModuleConfig | AudioGruModuleConfig;

/** GIM.md geometry; `channels` 512 in the paper, 32 in our scaled-down default. */
export const AUDIO_CONV_GEOMETRY = [
  { kernel: 10, stride: 5, padding: 2 },
  { kernel: 8, stride: 4, padding: 2 },
  { kernel: 4, stride: 2, padding: 2 },
  { kernel: 4, stride: 2, padding: 2 },
  { kernel: 4, stride: 2, padding: 1 },
] as const;

export function audioModuleConfigs(channels = 32, gruUnits = 32): AudioModuleConfig[] {
  const convs: AudioModuleConfig[] = AUDIO_CONV_GEOMETRY.map((g, i) => ({
    kind: 'audio-conv',
    inChannels: i === 0 ? 1 : channels,
    channels,
    ...g,
  }));
  return [...convs, { kind: 'audio-gru', inChannels: channels, units: gruUnits }];
}

/** Output length of a conv module for an input of `length` frames (PyTorch Conv1d arithmetic). */
export function convOutputLength(
  length: number,
  c: Pick<AudioConvModuleConfig, 'kernel' | 'stride' | 'padding'>,
): number {
  return Math.floor((length + 2 * c.padding - c.kernel) / c.stride) + 1;
}

/** Frames after each module for an input of `samples` samples (the GRU keeps the length). */
export function audioFrameCounts(samples: number, configs: AudioModuleConfig[]): number[] {
  const out: number[] = [];
  let length = samples;
  for (const c of configs) {
    if (c.kind === 'audio-conv') length = convOutputLength(length, c);
    out.push(length);
  }
  return out;
}

/**
 * The receptive field of one frame of the deepest conv module, in samples (465 for GIM.md's
 * kernels 10, 8, 4, 4, 4 and strides 5, 4, 2, 2, 2); the GRU keeps the frame rate.
 */
export function receptiveField(configs: AudioModuleConfig[]): number {
  let field = 1;
  let hop = 1;
  for (const c of configs) {
    if (c.kind !== 'audio-conv') continue;
    field += (c.kernel - 1) * hop;
    hop *= c.stride;
  }
  return field;
}

/**
 * The shortest clip (samples) the stack encodes: one whole receptive field, so that every frame
 * has seen some of the clip rather than mostly zero padding (padding alone would yield a frame
 * from far shorter clips).
 */
export function minimumSamples(configs: AudioModuleConfig[]): number {
  let lo = receptiveField(configs);
  while (audioFrameCounts(lo, configs).some((f) => f < 1)) lo++;
  return lo;
}

/** One audio module; its weights live in a standard tfjs LayersModel (loadable anywhere). */
export class AudioModule implements GimModule {
  private constructor(
    readonly config: AudioModuleConfig,
    readonly model: tf.LayersModel,
  ) {}

  static create(config: AudioModuleConfig, seed: number, name = 'module'): AudioModule {
    validateAudioModule(config);
    if (config.kind === 'audio-conv') {
      const input = tf.input({ shape: [1, null, config.inChannels], name: `${name}_input` });
      const padded = tf.layers
        .zeroPadding2d({
          padding: [
            [0, 0],
            [config.padding, config.padding],
          ],
          name: `${name}_pad`,
        })
        .apply(input) as tf.SymbolicTensor;
      const conv = tf.layers
        .conv2d({
          filters: config.channels,
          kernelSize: [1, config.kernel],
          strides: [1, config.stride],
          padding: 'valid',
          kernelInitializer: tf.initializers.heNormal({ seed }),
          name: `${name}_conv`,
        })
        .apply(padded) as tf.SymbolicTensor;
      const y = tf.layers.reLU({ name: `${name}_relu` }).apply(conv) as tf.SymbolicTensor;
      return new AudioModule(config, tf.model({ inputs: input, outputs: y, name }));
    }
    const input = tf.input({ shape: [null, config.inChannels], name: `${name}_input` });
    const y = tf.layers
      .gru({
        units: config.units,
        returnSequences: true,
        kernelInitializer: tf.initializers.glorotUniform({ seed }),
        recurrentInitializer: tf.initializers.orthogonal({ seed: seed + 1 }),
        name: `${name}_gru`,
      })
      .apply(input) as tf.SymbolicTensor;
    return new AudioModule(config, tf.model({ inputs: input, outputs: y, name }));
  }

  static async fromArtifacts(
    config: AudioModuleConfig,
    artifacts: tf.io.ModelArtifacts,
  ): Promise<AudioModule> {
    validateAudioModule(config);
    return new AudioModule(config, await tf.loadLayersModel(tf.io.fromMemory(artifacts)));
  }

  /** Channels of this module's output frames. */
  get channels(): number {
    return this.config.kind === 'audio-conv' ? this.config.channels : this.config.units;
  }

  get variables(): tf.Variable[] {
    return modelVariables(this.model);
  }

  artifacts(): Promise<tf.io.ModelArtifacts> {
    return modelArtifacts(this.model);
  }

  /**
   * Conv: x [B, 1, T, Cin] → [B, 1, T', C]. GRU: x [B, 1, T, Cin] → [B, 1, T, units] (the layout
   * is kept so every module takes and gives the same rank).
   */
  apply(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      if (this.config.kind === 'audio-conv')
        return this.model.apply(x, { training: true }) as tf.Tensor4D;
      const [b, , t, c] = x.shape;
      const seq = this.model.apply(tf.reshape(x, [b, t, c]), { training: true }) as tf.Tensor3D; // [B, T, H]
      return tf.reshape(seq, [b, 1, t, this.channels]);
    });
  }

  dispose(): void {
    this.model.dispose();
  }
}

export function validateAudioModule(c: AudioModuleConfig): void {
  const values: [string, unknown][] =
    c.kind === 'audio-conv'
      ? [
          ['inChannels', c.inChannels],
          ['channels', c.channels],
          ['kernel', c.kernel],
          ['stride', c.stride],
        ]
      : c.kind === 'audio-gru'
        ? [
            ['inChannels', c.inChannels],
            ['units', c.units],
          ]
        : [['kind', undefined]];
  const bad = values
    .filter(([, v]) => !(typeof v === 'number' && Number.isInteger(v) && v > 0))
    .map(([k]) => k);
  if (c.kind === 'audio-conv' && !(Number.isInteger(c.padding) && c.padding >= 0))
    bad.push('padding');
  if (bad.length > 0)
    throw new GimError('invalid_argument', `bad audio module config: ${bad.join(', ')}`);
}
