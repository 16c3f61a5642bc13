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
