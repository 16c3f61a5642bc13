// ci:every-backend: CI installs clang and lld after its first pass, so the rebuild check runs in
// the second.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gridPairs, infoNceArrays, sampleNegatives } from '../../src/gim/losses/info-nce.js';
import { infoNceSimd, infoNceSimdAvailable } from '../../src/gim/losses/info-nce-simd.js';
import {
  INFO_NCE_SOURCE_SHA256,
  INFO_NCE_WASM_BASE64,
} from '../../src/gim/losses/wasm/info-nce-wasm.js';
import { compile } from '../../scripts/build-info-nce-wasm.js';
import { Rng } from '../../src/gim/random.js';

const SOURCE = new URL('../../src/gim/losses/wasm/info-nce.c', import.meta.url).pathname;
/** float32 scores and updates in the kernel vs float64 in JavaScript. */
const TOLERANCE = 1e-5;

function compare(C: number, images: number, negatives: number, seed: number) {
  const rng = new Rng(seed);
  const pairs = gridPairs(images, 6, 6, [2, 3, 4, 5]);
  const K = 4;
  const M = images * 36;
  const P = Float32Array.from({ length: M * K * C }, () => rng.next() - 0.5);
  const Z = Float32Array.from({ length: M * C }, () => rng.next() - 0.5);
  const neg = sampleNegatives(pairs, negatives, rng);
  // Non-zero starting gradients: both must accumulate, not overwrite.
  const start = (n: number) => Float32Array.from({ length: n }, (_, i) => (i % 7) * 1e-3);
  const [dPa, dZa, dPb, dZb] = [start(P.length), start(Z.length), start(P.length), start(Z.length)];
  const js = infoNceArrays(P, Z, C, K, pairs, neg, dPa, dZa);
  const simd = infoNceSimd(P, Z, C, K, pairs, neg, dPb, dZb);
  assert.ok(simd !== null, 'the kernel loads');
  assert.ok(Math.abs(js - simd) / js < TOLERANCE, `loss ${simd} vs ${js}`);
  for (const [a, b, name] of [
    [dPa, dPb, 'dP'],
    [dZa, dZb, 'dZ'],
  ] as const) {
    // Differences relative to the largest gradient the call added (not to the starting values).
    const base = start(a.length);
    let d = 0;
    let moved = 0;
    for (let i = 0; i < a.length; i++) {
      d = Math.max(d, Math.abs((a[i] as number) - (b[i] as number)));
      moved = Math.max(moved, Math.abs((a[i] as number) - (base[i] as number)));
    }
    assert.ok(moved > 0, `${name}: the call added no gradient`);
    assert.ok(
      d / moved < TOLERANCE,
      `${name}: max difference ${d / moved} of the largest gradient`,
    );
  }
}

describe('InfoNCE WebAssembly SIMD kernel', () => {
  test('loads here', () => assert.equal(infoNceSimdAvailable(), true));

  test('gives the JavaScript loop loss and gradients (C = 16, 64, and 13: not a multiple of 4)', () => {
    compare(16, 4, 16, 1);
    compare(64, 4, 16, 2);
    compare(13, 3, 10, 3);
  });

  test('grows its memory for a large batch (256 images of C = 64: ~19 MB)', () => {
    compare(64, 256, 16, 4);
  });

  test('is built from the committed source (sha256 recorded by npm run build:wasm)', () => {
    const sha = createHash('sha256').update(readFileSync(SOURCE)).digest('hex');
    assert.equal(INFO_NCE_SOURCE_SHA256, sha, 'info-nce.c changed: run npm run build:wasm');
  });

  const clang = (() => {
    try {
      execFileSync('wasm-ld', ['--version'], { stdio: 'ignore' });
      execFileSync('clang', ['--version'], { stdio: 'ignore' });
      return null;
    } catch {
      return 'clang/wasm-ld not installed (apt-get install clang lld)';
    }
  })();
  test('rebuilding the source gives the committed bytes', { skip: clang ?? false }, async () => {
    const rebuilt = await compile(SOURCE);
    assert.equal(rebuilt.toString('base64'), INFO_NCE_WASM_BASE64);
  });
});
