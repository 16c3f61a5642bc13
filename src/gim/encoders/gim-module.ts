import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';

/**
 * What the trainer, the store and the inference worker need of a module, whatever the modality:
 * its trainable variables, a forward pass on rank-4 input, and its weights as a standard tfjs
 * LayersModel.
 */
export interface GimModule {
  readonly model: tf.LayersModel;
  /** Channels of the module's output (its embedding dimension). */
  readonly channels: number;
  readonly variables: tf.Variable[];
  apply(x: tf.Tensor4D): tf.Tensor4D;
  artifacts(): Promise<tf.io.ModelArtifacts>;
  dispose(): void;
}

/** A LayersModel as standard tfjs model artifacts (model.json topology + weights). */
export async function modelArtifacts(model: tf.LayersModel): Promise<tf.io.ModelArtifacts> {
  let saved: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      saved = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  if (!saved) throw new GimError('io_error', 'tfjs returned no model artifacts');
  return saved;
}

/** The trainable variables of a LayersModel, in its fixed layer order. */
export function modelVariables(model: tf.LayersModel): tf.Variable[] {
  return model.trainableWeights.map((w) => w.read() as tf.Variable);
}

/** What a manifest records of one layer (see ModuleManifest). */
export interface LayerShape {
  outputShape: number[];
  gridShape: number[];
  embeddingDim: number;
}

/**
 * What every stack of modules shares, whatever the modality: 1-based layer lookup, the modules'
 * configs and artifacts, disposal.
 */
export abstract class ModuleStack<M extends GimModule & { readonly config: C }, C> {
  constructor(readonly modules: M[]) {}

  get depth(): number {
    return this.modules.length;
  }

  get moduleConfigs(): C[] {
    return this.modules.map((m) => m.config);
  }

  /** The module of a 1-based layer number (not_found otherwise). */
  layer(index: number): M {
    const m = Number.isInteger(index) ? this.modules[index - 1] : undefined;
    if (!m)
      throw new GimError(
        'not_found',
        `layer ${index} does not exist: this stack has layers 1..${this.depth}`,
      );
    return m;
  }

  artifacts(): Promise<tf.io.ModelArtifacts[]> {
    return Promise.all(this.modules.map((m) => m.artifacts()));
  }

  /** Per layer, what a manifest records: output shape of one unit, unit layout, embedding dim. */
  abstract layerShapes(): LayerShape[];

  dispose(): void {
    this.modules.forEach((m) => m.dispose());
  }
}

/** Rebuilds modules from saved artifacts, disposing the ones built so far if one fails. */
export async function loadModules<M extends GimModule, C>(
  configs: C[],
  artifacts: tf.io.ModelArtifacts[],
  load: (config: C, artifacts: tf.io.ModelArtifacts) => Promise<M>,
): Promise<M[]> {
  if (configs.length !== artifacts.length)
    throw new GimError(
      'invalid_data',
      `${configs.length} module configs but ${artifacts.length} modules`,
    );
  const modules: M[] = [];
  try {
    for (let i = 0; i < configs.length; i++)
      modules.push(await load(configs[i] as C, artifacts[i] as tf.io.ModelArtifacts));
    return modules;
  } catch (e) {
    modules.forEach((m) => m.dispose());
    throw e;
  }
}
