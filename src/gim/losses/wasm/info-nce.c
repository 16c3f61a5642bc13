/*
 * InfoNCE's loss and analytic gradient for one prediction step, in WebAssembly SIMD: the same
 * loop as infoNceArrays in ../info-nce.ts (which documents the maths), four float32 lanes wide.
 * exp and log come from the host (Math.exp, Math.log), so the softmax is the JavaScript one.
 *
 * Built by `npm run build:wasm` into info-nce-wasm.ts (base64); needs clang and wasm-ld
 * (Debian: apt-get install clang lld). Freestanding: no libc, no allocation; the caller places
 * every array in this module's memory and passes byte offsets.
 */
#include <wasm_simd128.h>

__attribute__((import_module("env"), import_name("exp"))) double host_exp(double);
__attribute__((import_module("env"), import_name("log"))) double host_log(double);

#define MAX_CANDIDATES 4097

static double scores[MAX_CANDIDATES];
static int rows[MAX_CANDIDATES];

static inline float dot(const float *a, const float *b, int C) {
  v128_t acc = wasm_f32x4_splat(0.0f);
  int c = 0;
  for (; c + 4 <= C; c += 4)
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_v128_load(a + c), wasm_v128_load(b + c)));
  float d = wasm_f32x4_extract_lane(acc, 0) + wasm_f32x4_extract_lane(acc, 1) +
            (wasm_f32x4_extract_lane(acc, 2) + wasm_f32x4_extract_lane(acc, 3));
  for (; c < C; c++) d += a[c] * b[c];
  return d;
}

/* y += g * x over C floats. */
static inline void axpy(float *y, const float *x, float g, int C) {
  const v128_t gv = wasm_f32x4_splat(g);
  int c = 0;
  for (; c + 4 <= C; c += 4)
    wasm_v128_store(y + c, wasm_f32x4_add(wasm_v128_load(y + c), wasm_f32x4_mul(gv, wasm_v128_load(x + c))));
  for (; c < C; c++) y[c] += g * x[c];
}

/*
 * P [M, K*C], Z [M, C]; step k's n pairs (context[i] predicts target[i]) with N negatives each
 * (neg [n*N]); accumulates into dP and dZ; returns the step's share of the loss, sum_i w (lse - s0)
 * with w = 1 / (K * n). Returns -1 if N + 1 exceeds MAX_CANDIDATES.
 */
__attribute__((export_name("info_nce_step"))) double info_nce_step(
    const float *P, const float *Z, int C, int K, int k, int n, int N, const int *context,
    const int *target, const int *neg, float *dP, float *dZ) {
  if (N + 1 > MAX_CANDIDATES) return -1.0;
  const int rowP = K * C;
  const double w = 1.0 / ((double)K * (double)n);
  double total = 0.0;
  for (int i = 0; i < n; i++) {
    const int pOff = context[i] * rowP + k * C;
    const float *p = P + pOff;
    rows[0] = target[i];
    for (int j = 0; j < N; j++) rows[j + 1] = neg[i * N + j];
    double max = -1.0 / 0.0;
    for (int j = 0; j <= N; j++) {
      const double s = dot(p, Z + rows[j] * C, C);
      scores[j] = s;
      if (s > max) max = s;
    }
    const double positive = scores[0];
    double sum = 0.0;
    for (int j = 0; j <= N; j++) {
      const double e = host_exp(scores[j] - max);
      scores[j] = e;
      sum += e;
    }
    total += w * (max + host_log(sum) - positive);
    float *gp = dP + pOff;
    for (int j = 0; j <= N; j++) {
      const float g = (float)(w * (scores[j] / sum - (j == 0 ? 1.0 : 0.0)));
      const int zOff = rows[j] * C;
      axpy(gp, Z + zOff, g, C);
      axpy(dZ + zOff, p, g, C);
    }
  }
  return total;
}
