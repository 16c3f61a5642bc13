import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';

/**
 * How a layer's patch grid [n, rows, cols, C] becomes one vector per item.
 * `mean`/`max` pool the whole grid (GIM's STL-10 protocol); `none` keeps every cell; `grid2` and
 * `grid3` average 2x2 or 3x3 blocks of cells, keeping a coarse spatial layout (GIM.md: on 28x28
 * images the layout is what the classes differ by).
 */
export const POOLINGS = ['mean', 'max', 'none', 'grid2', 'grid3'] as const;
export type Pooling = (typeof POOLINGS)[number];

export function parsePooling(value: string): Pooling {
  if ((POOLINGS as readonly string[]).includes(value)) return value as Pooling;
  throw new GimError(
    'invalid_argument',
    `unknown pooling "${value}": use one of ${POOLINGS.join(', ')}`,
  );
}

/** Output dimension of a pooling for a grid of rows x cols cells of C channels. */
export function pooledDim(pooling: Pooling, rows: number, cols: number, channels: number): number {
  switch (pooling) {
    case 'mean':
    case 'max':
      return channels;
    case 'none':
      return rows * cols * channels;
    case 'grid2':
    case 'grid3': {
      const b = pooling === 'grid2' ? 2 : 3;
      return Math.floor(rows / b) * Math.floor(cols / b) * channels;
    }
  }
}

/** grid [n, rows, cols, C] → [n, D]. */
export function poolGrid(grid: tf.Tensor4D, pooling: Pooling): tf.Tensor2D {
  const [n, rows, cols, c] = grid.shape;
  return tf.tidy(() => {
    switch (pooling) {
      case 'mean':
        return tf.mean(grid, [1, 2]) as tf.Tensor2D;
      case 'max':
        return tf.max(grid, [1, 2]) as tf.Tensor2D;
      case 'none':
        return tf.reshape(grid, [n, rows * cols * c]);
      case 'grid2':
      case 'grid3': {
        const b = pooling === 'grid2' ? 2 : 3;
        if (rows < b || cols < b)
          throw new GimError(
            'invalid_argument',
            `pooling ${pooling} needs a grid of at least ${b}x${b} cells, this layer has ${rows}x${cols}`,
          );
        const pooled = tf.avgPool(grid, b, b, 'valid');
        return tf.reshape(pooled, [n, pooledDim(pooling, rows, cols, c)]);
      }
    }
  });
}
