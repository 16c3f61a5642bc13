import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type * as tf from '@tensorflow/tfjs';

/**
 * Changes one float of a published module's weights.bin in place: the largest-magnitude value of
 * its first weight (a vision module's 3x3 conv kernel), by `change` (default: a sign flip, which
 * moves the golden error of the tiny test stacks by ~0.8-1.6, far past the tolerance). Returns the
 * index and the values before and after.
 */
export async function tamperWeight(
  moduleDir: string,
  change: (w: number) => number = (w) => -w,
): Promise<{ index: number; before: number; after: number }> {
  const modelJson = JSON.parse(
    await readFile(join(moduleDir, 'model.json'), 'utf8'),
  ) as tf.io.ModelJSON;
  const first = modelJson.weightsManifest[0]!.weights[0]!;
  const count = first.shape.reduce((a, b) => a * b, 1);
  const file = join(moduleDir, 'weights.bin');
  const bytes = await readFile(file);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let index = 0;
  for (let i = 0; i < count; i++)
    if (Math.abs(view.getFloat32(4 * i, true)) > Math.abs(view.getFloat32(4 * index, true)))
      index = i;
  const before = view.getFloat32(4 * index, true);
  view.setFloat32(4 * index, change(before), true);
  await writeFile(file, bytes);
  return { index, before, after: view.getFloat32(4 * index, true) };
}
