/**
 * im2col for square kernels with TensorFlow's `same` padding, in plain typed arrays.
 *
 * Greedy training computes a module's input outside the gradient computation, so the input is a
 * constant for that module: its patches can be extracted once, before the tape, and the module's
 * convolution becomes a single matMul whose gradient is another matMul.
 */
export interface ConvGeometry {
  /** Input spatial size (square) and channels. */
  size: number;
  channels: number;
  kernel: number;
  stride: number;
}

/** Output size and the (top/left) padding of TensorFlow's `same` padding. */
export function samePadding(size: number, kernel: number, stride: number) {
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + kernel - size, 0);
  return { out, before: Math.floor(total / 2) };
}

/**
 * x: [n, size, size, channels] → columns [n * out * out, kernel * kernel * channels], the
 * column order (ky, kx, c) matching a conv2d filter [kernel, kernel, channels, outChannels]
 * reshaped to [kernel * kernel * channels, outChannels].
 */
export function im2col(x: Float32Array, n: number, g: ConvGeometry): Float32Array {
  const { size: S, channels: C, kernel: K, stride } = g;
  const { out, before } = samePadding(S, K, stride);
  const rowLen = K * K * C;
  const cols = new Float32Array(n * out * out * rowLen); // zero-filled: padding stays 0
  let o = 0;
  for (let b = 0; b < n; b++) {
    const base = b * S * S * C;
    for (let oy = 0; oy < out; oy++) {
      for (let ox = 0; ox < out; ox++) {
        for (let ky = 0; ky < K; ky++) {
          const y = oy * stride - before + ky;
          if (y < 0 || y >= S) {
            o += K * C;
            continue;
          }
          for (let kx = 0; kx < K; kx++) {
            const xx = ox * stride - before + kx;
            if (xx >= 0 && xx < S) {
              const src = base + (y * S + xx) * C;
              cols.set(x.subarray(src, src + C), o);
            }
            o += C;
          }
        }
      }
    }
  }
  return cols;
}
