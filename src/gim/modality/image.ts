import type { PatchAugment } from '../training/config.js';
import { GimError } from '../errors.js';
import type { Rng } from '../random.js';

/** How raw images become model input. Saved in every manifest. */
export interface ImageAdapterConfig {
  kind: 'image';
  /** Model input size; images of another size are resized to it. */
  height: number;
  width: number;
  channels: 1 | 3;
  /** Per-channel normalisation of pixels scaled to [0, 1]. */
  mean: number[];
  std: number[];
  /** Square patches of `patchSize` pixels every `patchStride` pixels: the patch grid. */
  patchSize: number;
  patchStride: number;
  /** Training augmentation: random crop of the image padded by `cropPad`, horizontal flip. */
  cropPad: number;
  flip: boolean;
}

/** The scaled-down default of GIM.md for 28x28 grayscale images: 8x8 patches, stride 4, 6x6 grid. */
export function defaultImageAdapter(
  overrides: Partial<ImageAdapterConfig> & Pick<ImageAdapterConfig, 'mean' | 'std'>,
): ImageAdapterConfig {
  const cfg: ImageAdapterConfig = {
    kind: 'image',
    height: 28,
    width: 28,
    channels: 1,
    patchSize: 8,
    patchStride: 4,
    cropPad: 2,
    flip: true,
    ...overrides,
  };
  validateImageAdapter(cfg);
  return cfg;
}

export function validateImageAdapter(cfg: ImageAdapterConfig): void {
  const problems: string[] = [];
  const { height, width, channels, patchSize, patchStride } = cfg;
  if (!(Number.isInteger(height) && height > 0)) problems.push('height must be a positive integer');
  if (!(Number.isInteger(width) && width > 0)) problems.push('width must be a positive integer');
  if (channels !== 1 && channels !== 3) problems.push('channels must be 1 or 3');
  if (!(Number.isInteger(patchSize) && patchSize > 0 && patchSize <= Math.min(height, width)))
    problems.push('patchSize must be an integer in 1..min(height, width)');
  if (!(Number.isInteger(patchStride) && patchStride > 0))
    problems.push('patchStride must be a positive integer');
  if (cfg.mean.length !== channels || cfg.std.length !== channels)
    problems.push('mean and std need one value per channel');
  if (cfg.std.some((s) => !(s > 0))) problems.push('std values must be > 0');
  if (problems.length > 0)
    throw new GimError('invalid_argument', `bad image adapter: ${problems.join('; ')}`);
}

/** Rows and columns of the patch grid. */
export function patchGrid(cfg: ImageAdapterConfig): { rows: number; cols: number } {
  return {
    rows: Math.floor((cfg.height - cfg.patchSize) / cfg.patchStride) + 1,
    cols: Math.floor((cfg.width - cfg.patchSize) / cfg.patchStride) + 1,
  };
}

/** Per-channel mean and std of pixels [n, h, w, c] in [0, 1]. */
export function channelStats(
  pixels: Float32Array,
  channels: number,
): { mean: number[]; std: number[] } {
  const sum = new Float64Array(channels);
  const sq = new Float64Array(channels);
  for (let i = 0; i < pixels.length; i++) {
    const v = pixels[i] as number;
    const c = i % channels;
    sum[c] = (sum[c] as number) + v;
    sq[c] = (sq[c] as number) + v * v;
  }
  const count = pixels.length / channels;
  const mean = Array.from(sum, (s) => s / count);
  const std = Array.from(sq, (s, c) =>
    Math.sqrt(Math.max(s / count - (mean[c] as number) ** 2, 1e-12)),
  );
  return { mean, std };
}

/**
 * Normalises images [n, h, w, c] (pixels in [0, 1]) and cuts each into its patch grid.
 * With `augment`, each image is first randomly cropped from a copy padded by `cropPad` (zero
 * pixels) and flipped horizontally with p = 0.5, as in GIM's training; with `patchAugment` too,
 * every patch is then augmented on its own (its draws follow the image's, patch by patch).
 * Returns patches [n * rows * cols, p, p, c], grid row-major, images in order.
 */
export function imagesToPatches(
  pixels: Float32Array,
  n: number,
  cfg: ImageAdapterConfig,
  augment?: Rng,
  patchAugment?: PatchAugment,
): Float32Array {
  const { height: H, width: W, channels: C, patchSize: P, patchStride: S } = cfg;
  if (pixels.length !== n * H * W * C)
    throw new GimError(
      'invalid_argument',
      `expected ${n} images of ${H}x${W}x${C} (${n * H * W * C} values), got ${pixels.length}`,
    );
  const { rows, cols } = patchGrid(cfg);
  const out = new Float32Array(n * rows * cols * P * P * C);
  const scale = cfg.std.map((s) => 1 / s);
  // A padded pixel is 0 before normalisation, like a black border.
  const padValue = cfg.mean.map((m, c) => -m * (scale[c] as number));
  const img = new Float32Array(H * W * C);
  let o = 0;
  for (let b = 0; b < n; b++) {
    const base = b * H * W * C;
    let dy = 0;
    let dx = 0;
    let flip = false;
    if (augment) {
      dy = augment.int(2 * cfg.cropPad + 1) - cfg.cropPad;
      dx = augment.int(2 * cfg.cropPad + 1) - cfg.cropPad;
      flip = cfg.flip && augment.next() < 0.5;
    }
    // Normalised, cropped and flipped image b into `img`.
    for (let y = 0; y < H; y++) {
      const sy = y + dy;
      for (let x = 0; x < W; x++) {
        const sx0 = x + dx;
        const sx = flip ? W - 1 - sx0 : sx0;
        const inside = sy >= 0 && sy < H && sx0 >= 0 && sx0 < W;
        for (let c = 0; c < C; c++) {
          img[(y * W + x) * C + c] = inside
            ? ((pixels[base + (sy * W + sx) * C + c] as number) - (cfg.mean[c] as number)) *
              (scale[c] as number)
            : (padValue[c] as number);
        }
      }
    }
    const perPatch = augment && patchAugment && isActive(patchAugment) ? patchAugment : null;
    for (let r = 0; r < rows; r++) {
      for (let q = 0; q < cols; q++) {
        if (perPatch) {
          augmentedPatch(img, H, W, C, r * S, q * S, P, perPatch, augment as Rng, padValue, out, o);
          o += P * P * C;
          continue;
        }
        for (let y = 0; y < P; y++) {
          const rowStart = ((r * S + y) * W + q * S) * C;
          out.set(img.subarray(rowStart, rowStart + P * C), o);
          o += P * C;
        }
      }
    }
  }
  return out;
}

function isActive(a: PatchAugment): boolean {
  return a.jitter > 0 || a.flip || a.brightness > 0 || a.contrast > 0;
}

/**
 * One P x P patch at (top, left) of the normalised image `img` [H, W, C] into `out` at `o`,
 * augmented: its window shifted by up to `a.jitter` pixels each way (pad value outside the
 * image), mirrored with p = 0.5 if `a.flip`, then (v - mean) * contrast + mean + brightness per
 * channel. Draws, in order: dy, dx, flip, contrast, brightness (only those enabled).
 */
function augmentedPatch(
  img: Float32Array,
  H: number,
  W: number,
  C: number,
  top: number,
  left: number,
  P: number,
  a: PatchAugment,
  rng: Rng,
  padValue: number[],
  out: Float32Array,
  o: number,
): void {
  let dy = 0;
  let dx = 0;
  if (a.jitter > 0) {
    dy = rng.int(2 * a.jitter + 1) - a.jitter;
    dx = rng.int(2 * a.jitter + 1) - a.jitter;
  }
  const flip = a.flip && rng.next() < 0.5;
  const factor = a.contrast > 0 ? 1 + a.contrast * (2 * rng.next() - 1) : 1;
  const offset = a.brightness > 0 ? a.brightness * (2 * rng.next() - 1) : 0;
  for (let y = 0; y < P; y++) {
    const sy = top + y + dy;
    for (let x = 0; x < P; x++) {
      const sx = left + (flip ? P - 1 - x : x) + dx;
      const inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
      for (let c = 0; c < C; c++)
        out[o + (y * P + x) * C + c] = inside
          ? (img[(sy * W + sx) * C + c] as number)
          : (padValue[c] as number);
    }
  }
  if (factor === 1 && offset === 0) return;
  for (let c = 0; c < C; c++) {
    let mean = 0;
    for (let i = 0; i < P * P; i++) mean += out[o + i * C + c] as number;
    mean /= P * P;
    for (let i = 0; i < P * P; i++) {
      const j = o + i * C + c;
      out[j] = ((out[j] as number) - mean) * factor + mean + offset;
    }
  }
}
