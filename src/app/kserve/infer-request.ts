import { GimError } from '../../gim/errors.js';
import {
  type EmbedOptions,
  type LayerSelector,
  type OptionSource,
  parseEmbedOptions,
} from '../embeddings/embedding-options.js';
import type { TensorInput } from '../embeddings/input-decoders.js';
import { quoteInput } from '../../gim/quote-input.js';

/** A KServe v2 inference request, checked against one stack's input. */
export interface InferRequest {
  id?: string;
  /** One view per item ([h, w, c] pixels or [T] samples), views of one buffer. */
  items: Float32Array[];
  options: EmbedOptions;
}

/** The name of the one input tensor, and of the output of layer k: `layer_k`. */
export const INPUT_NAME = 'input';
export const outputName = (layer: number): string => `layer_${layer}`;
const OUTPUT_RE = /^layer_([1-9][0-9]{0,3})$/;

/**
 * Parses `{id?, inputs: [{name, shape: [n, ...item], datatype: "FP32", data}], parameters?,
 * outputs?}`: an image stack's item is [h, w, c] pixels in [0, 1], an audio stack's [T] samples in
 * [-1, 1] (T any length, the same for every item of the tensor). `data` is flat or nested
 * row-major. The layers come from `outputs` (`layer_k`) or `parameters.layer`, not both; pooling
 * and normalize from `parameters`.
 */
export function parseInferRequest(
  body: unknown,
  spec: TensorInput,
  maxItems: number,
): InferRequest {
  const { itemShape } = spec;
  // Not parsed as JSON: no body, or the Buffer of any other media type (see createApp).
  if (body === undefined || Buffer.isBuffer(body)) {
    throw new GimError('unsupported_media', 'send the inference request as application/json');
  }
  const request = object(body, 'the request body');
  const { id, inputs, parameters, outputs } = request;
  const extra = Object.keys(request).filter(
    (k) => !['id', 'inputs', 'parameters', 'outputs'].includes(k),
  );
  if (extra.length > 0)
    throw bad(`unknown field ${quoteInput(extra.join(', '))}: use id, inputs, parameters, outputs`);
  if (id !== undefined && typeof id !== 'string') throw bad('"id" must be a string');

  if (!Array.isArray(inputs) || inputs.length !== 1) {
    throw bad(`"inputs" must hold exactly one tensor, "${INPUT_NAME}"`);
  }
  const input = object(inputs[0], 'inputs[0]');
  if (input.name !== INPUT_NAME) throw bad(`inputs[0].name must be "${INPUT_NAME}"`);
  if (input.datatype !== 'FP32') throw bad('inputs[0].datatype must be "FP32"');
  const expected = `[n, ${itemShape.map((d) => (d < 0 ? 'any' : d)).join(', ')}]`;
  const shape = input.shape;
  if (
    !Array.isArray(shape) ||
    shape.length !== itemShape.length + 1 ||
    !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 1) ||
    shape.slice(1).some((d, i) => (itemShape[i] as number) >= 0 && d !== itemShape[i])
  ) {
    throw bad(`inputs[0].shape must be ${expected}, got ${quoteInput(shape)}`);
  }
  const n = shape[0] as number;
  if (n > maxItems) {
    throw new GimError('too_large', `${n} items: at most ${maxItems} per request (MAX_ITEMS)`);
  }
  const itemLength = (shape.slice(1) as number[]).reduce((a, b) => a * b, 1);
  const values = flatValues(input.data, n * itemLength, spec);
  const items = Array.from({ length: n }, (_, i) =>
    values.subarray(i * itemLength, (i + 1) * itemLength),
  );

  const sources: OptionSource[] = [];
  if (parameters !== undefined) {
    sources.push({ where: 'parameters', values: object(parameters, '"parameters"') });
  }
  if (outputs !== undefined)
    sources.push({ where: 'outputs', values: { layer: outputLayers(outputs) } });
  const options = parseEmbedOptions(sources, ['layer', 'pooling', 'normalize']);
  return { id, items, options };
}

function outputLayers(outputs: unknown): LayerSelector[] {
  if (!Array.isArray(outputs) || outputs.length === 0) {
    throw bad('"outputs" must be a non-empty array of {"name": "layer_k"}');
  }
  return outputs.map((output, i) => {
    const name = object(output, `outputs[${i}]`).name;
    const match = typeof name === 'string' ? OUTPUT_RE.exec(name) : null;
    if (match === null)
      throw bad(`outputs[${i}].name must be "layer_<k>", got ${quoteInput(name)}`);
    return Number(match[1]);
  });
}

/** Flat (or nested) numbers in [spec.min, spec.max] -> one Float32Array [n, ...item]. */
function flatValues(data: unknown, length: number, spec: TensorInput): Float32Array {
  if (!Array.isArray(data)) throw bad('inputs[0].data must be an array of numbers');
  const flat: unknown[] = data.flat(8);
  if (flat.length !== length) {
    throw bad(`inputs[0].data has ${flat.length} values; its shape needs ${length}`);
  }
  const values = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    const v = flat[i];
    if (typeof v !== 'number') throw bad(`inputs[0].data[${i}] is not a number`);
    if (!(v >= spec.min && v <= spec.max)) {
      throw new GimError(
        'invalid_data',
        `inputs[0].data[${i}] = ${v} is outside [${spec.min}, ${spec.max}] (${spec.describe})`,
      );
    }
    values[i] = v;
  }
  return values;
}

function object(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw bad(`${what} must be a JSON object`);
  }
  return value as Record<string, unknown>;
}

function bad(message: string): GimError {
  return new GimError('invalid_argument', message);
}
