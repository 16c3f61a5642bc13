import type { GridShape } from '../../gim/encoders/pooling.js';
import { GimError } from '../../gim/errors.js';

/** One item queued for the inference worker: pixels [h, w, c] in [0, 1] and the layers it wants. */
export interface EmbedItem {
  pixels: Float32Array;
  layers: readonly number[];
}

/** One layer's grid for one item. */
export interface ItemGrid {
  /** [rows, cols, C], row-major. */
  data: Float32Array;
  /** `n` is 1. */
  shape: GridShape;
}

/** An item's grids, by layer (exactly the layers it asked for). */
export type ItemGrids = Map<number, ItemGrid>;

/** The worker's embed call, bound to one (model, version). */
export type EmbedGrids = (
  pixels: Float32Array,
  n: number,
  layers: number[],
) => Promise<{ grids: Map<number, { data: Float32Array; shape: GridShape }> }>;

/**
 * The batch function of a (model, version) Batcher: one forward pass for the whole batch, up to
 * the deepest layer any item asked for, then each item gets its own slices of the layers it asked
 * for. The slices share the batch's buffers (no copy).
 */
export function embeddingBatchRun(
  embed: EmbedGrids,
): (items: EmbedItem[]) => Promise<(ItemGrids | Error)[]> {
  return async (items) => {
    const first = items[0];
    if (first === undefined) return [];
    const itemLength = first.pixels.length;
    const bad = items.findIndex((item) => item.pixels.length !== itemLength);
    if (bad >= 0) {
      throw new GimError(
        'invalid_argument',
        `items of one batch differ in size: ${itemLength} and ${items[bad]?.pixels.length} values`,
      );
    }
    const pixels = new Float32Array(items.length * itemLength); // [n, h, w, c]
    items.forEach((item, i) => pixels.set(item.pixels, i * itemLength));
    const layers = [...new Set(items.flatMap((item) => item.layers))].sort((a, b) => a - b);

    const { grids } = await embed(pixels, items.length, layers);

    return items.map((item, i) => {
      const own: ItemGrids = new Map();
      for (const layer of item.layers) {
        const grid = grids.get(layer);
        if (grid === undefined || grid.shape.n !== items.length) {
          return new GimError(
            'backend_unavailable',
            `the inference worker returned no grid of ${items.length} items for layer ${layer}`,
          );
        }
        const { rows, cols, channels } = grid.shape;
        const size = rows * cols * channels;
        own.set(layer, {
          data: grid.data.subarray(i * size, (i + 1) * size), // [rows, cols, C]
          shape: { n: 1, rows, cols, channels },
        });
      }
      return own;
    });
  };
}
