import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';

type NamedTensor = Awaited<ReturnType<tf.Optimizer['getWeights']>>[number];

interface Slot {
  name: string;
  shape: number[];
  m: Float32Array;
  v: Float32Array;
}

/**
 * Adam with its moments in host memory and the update in one pass over typed arrays.
 *
 * `tf.train.adam` spends about 13 tensor ops per variable and step (moments, bias correction,
 * update): with GIM's many small variables (a vision module has four, its predictor one) those
 * ops cost far more in per-op overhead than in arithmetic, most of all on the native backend
 * (about 0.1 ms per op in tfjs-node). Here each variable costs one read of its gradient and value
 * and one write of its new value. Same update as tfjs's AdamOptimizer (bias-corrected moments,
 * epsilon added to sqrt(v-hat)), same state names (`<var>/m`, `<var>/v`, `iter`) so checkpoints
 * move between the two; tested against it in test/unit/host-adam.test.ts.
 */
export class HostAdam extends tf.Optimizer {
  static get className(): string {
    return 'HostAdam';
  }

  private slots: (Slot | undefined)[] = [];

  constructor(
    /** Mutable: a schedule sets it before each step. */
    public learningRate: number,
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    readonly epsilon = 1e-7,
  ) {
    super();
  }

  override applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    const entries: [string, tf.Tensor | undefined][] = Array.isArray(variableGradients)
      ? variableGradients.map((g) => [g.name, g.tensor])
      : Object.entries(variableGradients);
    const t = this.iterations + 1;
    const correct1 = 1 - Math.pow(this.beta1, t);
    const correct2 = 1 - Math.pow(this.beta2, t);
    const { beta1, beta2, epsilon, learningRate } = this;
    entries.forEach(([name, gradient], i) => {
      if (gradient === undefined || gradient === null) return;
      const variable = tf.engine().registeredVariables[name];
      if (variable === undefined)
        throw new GimError('invalid_argument', `HostAdam: no variable named ${name}`);
      const size = variable.size;
      let slot = this.slots[i];
      if (slot === undefined) {
        slot = {
          name,
          shape: variable.shape,
          m: new Float32Array(size),
          v: new Float32Array(size),
        };
        this.slots[i] = slot;
      } else if (slot.m.length !== size) {
        throw new GimError('invalid_argument', `HostAdam: variable ${name} changed size`);
      }
      const g = gradient.dataSync() as Float32Array;
      const w = Float32Array.from(variable.dataSync() as Float32Array);
      const { m, v } = slot;
      for (let j = 0; j < size; j++) {
        const gj = g[j] as number;
        const mj = beta1 * (m[j] as number) + (1 - beta1) * gj;
        const vj = beta2 * (v[j] as number) + (1 - beta2) * gj * gj;
        m[j] = mj;
        v[j] = vj;
        w[j] =
          (w[j] as number) -
          (learningRate * (mj / correct1)) / (Math.sqrt(vj / correct2) + epsilon);
      }
      const next = tf.tensor(w, variable.shape, 'float32');
      variable.assign(next);
      next.dispose();
    });
    this.incrementIterations();
  }

  /** `iter`, then every `<var>/m`, then every `<var>/v`: new tensors the caller owns. */
  override async getWeights(): Promise<NamedTensor[]> {
    const slots = this.slots.filter((s): s is Slot => s !== undefined);
    return [
      await this.saveIterations(),
      ...slots.map((s) => ({ name: `${s.name}/m`, tensor: tf.tensor(s.m, s.shape) })),
      ...slots.map((s) => ({ name: `${s.name}/v`, tensor: tf.tensor(s.v, s.shape) })),
    ];
  }

  /** Copies the state (the tensors stay the caller's). */
  override async setWeights(weightValues: NamedTensor[]): Promise<void> {
    const rest = await this.extractIterations(weightValues);
    if (rest.length % 2 !== 0)
      throw new GimError('invalid_data', `Adam state needs as many /m as /v tensors`);
    const count = rest.length / 2;
    this.slots = rest.slice(0, count).map((mw, i) => {
      const vw = rest[count + i] as NamedTensor;
      if (!mw.name.endsWith('/m') || !vw.name.endsWith('/v'))
        throw new GimError(
          'invalid_data',
          `Adam state: expected <var>/m and <var>/v, got ${mw.name}, ${vw.name}`,
        );
      return {
        name: mw.name.slice(0, -2),
        shape: mw.tensor.shape,
        m: Float32Array.from(mw.tensor.dataSync() as Float32Array),
        v: Float32Array.from(vw.tensor.dataSync() as Float32Array),
      };
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      learningRate: this.learningRate,
      beta1: this.beta1,
      beta2: this.beta2,
      epsilon: this.epsilon,
    };
  }

  override dispose(): void {
    this.slots = [];
    super.dispose();
  }
}
