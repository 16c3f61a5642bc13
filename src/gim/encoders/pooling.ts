import { GimError } from '../errors.js';
import { quoteInput } from '../quote-input.js';

/**
 * How a layer's patch grid [n, rows, cols, C] becomes one vector per item.
 * `mean`/`max` pool the whole grid (GIM's STL-10 protocol); `meanstd` concatenates the mean and the
 * standard deviation of the cells (2C: statistics pooling, as x-vector speaker embeddings pool
 * frames over time); `none` keeps every cell; `grid2` and `grid3` average 2x2 or 3x3 blocks of
 * cells, keeping a coarse spatial layout (GIM.md: on 28x28 images the layout is what the classes
 * differ by).
 *
 * Plain typed arrays: the grids are small (36 cells), pooling runs wherever the vectors are needed
 * (the API's main thread, the CLI, the probe) and gives the same numbers everywhere.
 */
export const POOLINGS = ['mean', 'max', 'meanstd', 'none', 'grid2', 'grid3'] as const;
export type Pooling = (typeof POOLINGS)[number];

export function parsePooling(value: string): Pooling {
  if ((POOLINGS as readonly string[]).includes(value)) return value as Pooling;
  throw new GimError(
    'invalid_argument',
    `unknown pooling ${quoteInput(value)}: use one of ${POOLINGS.join(', ')}`,
  );
}

/**
 * Poolings that make one vector of a whole utterance: its frames averaged or maxed over time, or
 * their mean and standard deviation (`meanstd`, 2C).
 */
export type TimePooling = Extract<Pooling, 'mean' | 'max' | 'meanstd'>;
export const TIME_POOLINGS: readonly TimePooling[] = ['mean', 'max', 'meanstd'];

/** `pooling` if it pools an audio layer's frames over time; else a GimError naming `what`. */
export function timePooling(pooling: Pooling, what: string): TimePooling {
  if ((TIME_POOLINGS as readonly Pooling[]).includes(pooling)) return pooling as TimePooling;
  throw new GimError(
    'invalid_argument',
    `${what} pool over time with ${TIME_POOLINGS.join(', ')}, not ${pooling}`,
  );
}

/** Shape of a grid: `n` items of rows x cols cells of `channels` values, row-major. */
export interface GridShape {
  n: number;
  rows: number;
  cols: number;
  channels: number;
}

const blockOf = (pooling: Pooling) => (pooling === 'grid2' ? 2 : pooling === 'grid3' ? 3 : 0);

/** Output dimension of a pooling for a grid of rows x cols cells of C channels. */
export function pooledDim(pooling: Pooling, rows: number, cols: number, channels: number): number {
  switch (pooling) {
    case 'mean':
    case 'max':
      return channels;
    case 'meanstd':
      return 2 * channels;
    case 'none':
      return rows * cols * channels;
    case 'grid2':
    case 'grid3': {
      const b = blockOf(pooling);
      return Math.floor(rows / b) * Math.floor(cols / b) * channels;
    }
  }
}

/** grid [n, rows, cols, C] → [n, D] (D = pooledDim). */
export function poolGrid(grid: Float32Array, shape: GridShape, pooling: Pooling): Float32Array {
  const { n, rows, cols, channels: C } = shape;
  const cells = rows * cols;
  if (grid.length !== n * cells * C)
    throw new GimError(
      'invalid_argument',
      `grid has ${grid.length} values, not ${n}x${rows}x${cols}x${C}`,
    );
  if (pooling === 'none') return grid.slice();
  const dim = pooledDim(pooling, rows, cols, C);
  if (dim === 0)
    throw new GimError(
      'invalid_argument',
      `pooling ${pooling} needs a grid of at least ${blockOf(pooling)}x${blockOf(pooling)} cells, this layer has ${rows}x${cols}`,
    );
  const out = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    const src = i * cells * C;
    const dst = i * dim;
    if (pooling === 'mean' || pooling === 'max') {
      const acc = new Float64Array(C).fill(pooling === 'max' ? -Infinity : 0);
      for (let cell = 0; cell < cells; cell++)
        for (let c = 0; c < C; c++) {
          const v = grid[src + cell * C + c] as number;
          acc[c] = pooling === 'max' ? Math.max(acc[c] as number, v) : (acc[c] as number) + v;
        }
      for (let c = 0; c < C; c++)
        out[dst + c] = pooling === 'max' ? (acc[c] as number) : (acc[c] as number) / cells;
      continue;
    }
    if (pooling === 'meanstd') {
      // Two passes (mean, then squared deviations): stable where E[x²] - E[x]² would cancel.
      for (let c = 0; c < C; c++) {
        let sum = 0;
        for (let cell = 0; cell < cells; cell++) sum += grid[src + cell * C + c] as number;
        const mean = sum / cells;
        let sq = 0;
        for (let cell = 0; cell < cells; cell++)
          sq += ((grid[src + cell * C + c] as number) - mean) ** 2;
        out[dst + c] = mean;
        out[dst + C + c] = Math.sqrt(sq / cells);
      }
      continue;
    }
    // grid2 / grid3: average non-overlapping b x b blocks of cells (a ragged edge is dropped).
    const b = blockOf(pooling);
    const outCols = Math.floor(cols / b);
    const outRows = Math.floor(rows / b);
    for (let br = 0; br < outRows; br++)
      for (let bc = 0; bc < outCols; bc++) {
        const o = dst + (br * outCols + bc) * C;
        for (let c = 0; c < C; c++) {
          let sum = 0;
          for (let r = br * b; r < (br + 1) * b; r++)
            for (let q = bc * b; q < (bc + 1) * b; q++)
              sum += grid[src + (r * cols + q) * C + c] as number;
          out[o + c] = sum / (b * b);
        }
      }
  }
  return out;
}

/** Scales each of the n rows of [n, dim] to unit L2 norm, in place (zero rows stay zero). */
export function l2Normalize(v: Float32Array, n: number, dim: number): Float32Array {
  for (let i = 0; i < n; i++) {
    let sq = 0;
    for (let d = 0; d < dim; d++) sq += (v[i * dim + d] as number) ** 2;
    const inv = sq > 0 ? 1 / Math.sqrt(sq) : 0;
    for (let d = 0; d < dim; d++) v[i * dim + d] = (v[i * dim + d] as number) * inv;
  }
  return v;
}
