import type { BatchContext } from '../../gim/batching/batcher.js';
import type { GridShape } from '../../gim/encoders/pooling.js';
import { GimError } from '../../gim/errors.js';

/**
 * One item queued for the inference worker and the layers it wants. `input` is what the stack's
 * modality takes: an image's pixels [h, w, c] in [0, 1], or an audio clip's samples [T],
 * normalised as the stack's adapter says.
 */
export interface EmbedItem {
  input: Float32Array;
  layers: readonly number[];
}

/** One layer's grid for one item. */
export interface ItemGrid {
  /** [rows, cols, C], row-major (audio: rows 1, cols = frames). */
  data: Float32Array;
  /** `n` is 1. */
  shape: GridShape;
}

/** An item's grids, by layer (exactly the layers it asked for). */
export type ItemGrids = Map<number, ItemGrid>;

/**
 * The worker's embed call, bound to one (model, version): `n` items of equal size, wanted until
 * `deadline` (ms since the epoch; past it the call is refused rather than computed).
 */
export type EmbedGrids = (
  input: Float32Array,
  n: number,
  layers: number[],
  deadline?: number,
) => Promise<{ grids: Map<number, { data: Float32Array; shape: GridShape }> }>;

/** The result of an item left out of its group's pass: its caller had been answered already. */
const NOT_COMPUTED = new GimError('cancelled', 'not computed: the request was already answered');

/**
 * The batch function of a (model, version) Batcher. Items are grouped by size and each group is
 * one worker call (one forward pass, up to the deepest layer any of its items asked for); each
 * item then gets its own slices of the layers it asked for, sharing the group's buffers (no copy).
 *
 * Images all have the adapter's size: one group. Audio clips keep their own length, and clips of
 * different lengths are never padded into one pass: zero padding would change the frames near
 * the end (the convolutions see it, the GRU runs over it) and the pooled vectors with them, so a
 * clip would embed differently alone and in company. So the worker is called once per distinct
 * length in the batch, one group after another (the worker is serial anyway). A failing group
 * fails only its own items.
 *
 * A batch of many clip lengths takes many passes: before each, the items whose callers have been
 * answered since the batch started (timed out, cancelled, a sibling failed) are left out, and
 * the worker is told the latest deadline of the rest, so that it drops a pass that waited in its
 * queue past it.
 */
export function embeddingBatchRun(
  embed: EmbedGrids,
): (items: EmbedItem[], batch?: BatchContext) => Promise<(ItemGrids | Error)[]> {
  return async (items, batch) => {
    const groups = new Map<number, number[]>(); // item length -> indices in the batch
    items.forEach((item, i) => {
      const group = groups.get(item.input.length);
      if (group === undefined) groups.set(item.input.length, [i]);
      else group.push(i);
    });
    const out = new Array<ItemGrids | Error>(items.length);
    for (const [itemLength, all] of groups) {
      const indices = batch ? all.filter((i) => batch.wanted(i)) : all;
      for (const index of all) if (!indices.includes(index)) out[index] = NOT_COMPUTED;
      if (indices.length === 0) continue;
      const group = indices.map((i) => items[i] as EmbedItem);
      // The batcher's clock is performance.now(); the worker's thread has its own origin.
      const deadline = batch
        ? performance.timeOrigin + Math.max(...indices.map((i) => batch.deadline(i)))
        : undefined;
      try {
        const results = await runGroup(embed, group, itemLength, deadline);
        indices.forEach((index, k) => (out[index] = results[k] as ItemGrids | Error));
      } catch (error) {
        const failure = error instanceof Error ? error : new Error(String(error));
        for (const index of indices) out[index] = failure;
      }
    }
    return out;
  };
}

/** One worker call for items of equal length: [n, ...item] in, per item its grids out. */
async function runGroup(
  embed: EmbedGrids,
  items: EmbedItem[],
  itemLength: number,
  deadline: number | undefined,
): Promise<(ItemGrids | Error)[]> {
  const input = new Float32Array(items.length * itemLength); // [n, h, w, c] or [n, T]
  items.forEach((item, i) => input.set(item.input, i * itemLength));
  const layers = [...new Set(items.flatMap((item) => item.layers))].sort((a, b) => a - b);

  const { grids } = await embed(input, items.length, layers, deadline);

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
}
