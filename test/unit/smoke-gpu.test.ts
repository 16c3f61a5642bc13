/**
 * `gim smoke-gpu` and the WebGPU smoke bundle. There is no GPU here: the CLI runs on wasm with
 * --allow-cpu (and must refuse without it), and the bundle runs on a CPU Vulkan driver when one
 * is available (`bash scripts/fetch-lavapipe.sh`, or VK_DRIVER_FILES naming an ICD); otherwise
 * only its failure without an adapter is checked and the WebGPU comparison is skipped.
 *
 * ci:every-backend: CI fetches lavapipe after its first pass, so the comparison runs in the second.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gim } from '../helpers/cli.js';
import type { SmokeReport } from '../../src/cli/commands/smoke-gpu.js';

const run = promisify(execFile);
const ROOT = new URL('../..', import.meta.url).pathname;
const LAVAPIPE_ICD = join(ROOT, '.tmp/lavapipe/lvp_icd.json');

interface ExecError {
  code: number;
  stdout: string;
  stderr: string;
}

function isExit(code: number, stderr: RegExp) {
  return (e: unknown) => {
    const err = e as ExecError;
    assert.equal(err.code, code, `exit status; stderr: ${err.stderr}`);
    assert.match(err.stderr, stderr);
    return true;
  };
}

async function readReport(file: string): Promise<SmokeReport> {
  return JSON.parse(await readFile(file, 'utf8')) as SmokeReport;
}

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gim-smoke-'));
});
after(() => rm(dir, { recursive: true, force: true }));

describe('gim smoke-gpu (wasm, no GPU)', () => {
  test('with --allow-cpu: a report whose golden comparison with cpu passes, and a sweep', async () => {
    const json = join(dir, 'cpu.json');
    const { stdout } = await gim([
      'smoke-gpu',
      '--allow-cpu',
      '--batch-sizes',
      '1,4',
      '--reps',
      '2',
      '--json',
      json,
    ]);
    assert.match(stdout, /backend +wasm/);
    assert.match(stdout, /on a GPU +no: backend wasm runs on the CPU/);
    assert.match(stdout, /vs cpu +ok: max relative error/);
    assert.match(stdout, /^result +ok$/m);
    const r = await readReport(json);
    assert.equal(r.ok, true, r.failures.join('; '));
    assert.equal(r.backend.name, 'wasm');
    assert.equal(r.backend.gpu.onGpu, false);
    assert.equal(r.allowCpu, true);
    assert.equal(r.model?.name, 'fashion-gim');
    const g = r.golden;
    assert.ok(g !== null);
    assert.equal(g.vsReference.ok, true, g.vsReference.message);
    assert.equal(g.vsReference.expectedBackend, 'cpu');
    assert.equal(g.vsReference.actualBackend, 'wasm');
    assert.ok(g.vsReference.maxRelError < 1e-5, `wasm vs cpu: ${g.vsReference.maxRelError}`);
    assert.equal(g.vsReference.layers.length, r.model?.layers);
    // The shipped stack records golden embeddings at publish; if not, the report says so.
    const stored = g.vsManifest;
    if ('ok' in stored) assert.equal(stored.ok, true, stored.message);
    else assert.match(stored.skipped, /golden/);
    assert.deepEqual(
      r.throughput.map((t) => [t.backend, t.batchSize, t.layer, t.reps]),
      [
        ['wasm', 1, 3, 2],
        ['wasm', 4, 3, 2],
      ],
    );
    for (const t of r.throughput) {
      assert.ok(t.msPerBatch > 0 && t.itemsPerSecond > 0);
      assert.ok(Math.abs(t.itemsPerSecond - (t.batchSize * 1000) / t.msPerBatch) < 1e-6);
    }
  });

  test('without --allow-cpu: exit 1, saying it is not on a GPU', async () => {
    const json = join(dir, 'refused.json');
    await assert.rejects(
      gim(['smoke-gpu', '--batch-sizes', '1', '--json', json]),
      isExit(1, /gim: not on a GPU: backend wasm runs on the CPU \(--allow-cpu/),
    );
    const r = await readReport(json);
    assert.equal(r.ok, false);
    assert.equal(r.golden, null, 'nothing is computed');
    assert.match(r.failures[0] ?? '', /not on a GPU/);
  });

  test('a stack whose weights were altered: exit 1, the stored golden record differs', async (t) => {
    const manifest = JSON.parse(
      await readFile(join(ROOT, 'models/fashion-gim/1/manifest.json'), 'utf8'),
    ) as { golden?: unknown };
    if (manifest.golden === undefined) {
      t.skip('the shipped fashion-gim@1 has no golden record to compare with');
      return;
    }
    const models = join(dir, 'tampered');
    await cp(join(ROOT, 'models/fashion-gim'), join(models, 'fashion-gim'), { recursive: true });
    // Flip the sign of module 1's largest weight: both backends then agree with each other, and
    // only the record made at publish can tell.
    const file = join(models, 'fashion-gim/1/module-1/weights.bin');
    const bytes = await readFile(file);
    const w = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    let at = 0;
    w.forEach((v, i) => {
      if (Math.abs(v) > Math.abs(w[at] as number)) at = i;
    });
    w[at] = -(w[at] as number);
    await writeFile(file, bytes);
    const json = join(dir, 'tampered.json');
    await assert.rejects(
      gim([
        'smoke-gpu',
        '--allow-cpu',
        '--models-dir',
        models,
        '--model',
        'fashion-gim@1', // the version altered above (the default is the stack's stable)
        '--batch-sizes',
        '1',
        '--reps',
        '1',
        '--json',
        json,
      ]),
      isExit(1, /golden embeddings differ|golden_mismatch/),
    );
    const r = await readReport(json);
    assert.equal(r.ok, false);
    assert.equal(r.golden?.vsReference.ok, true, 'wasm and cpu agree on the altered weights');
  });
});

describe('the WebGPU smoke bundle', () => {
  let bundle = '';
  /** A Vulkan driver for the bundle: the environment's, else the one fetch-lavapipe.sh unpacked. */
  const vulkan: NodeJS.ProcessEnv =
    process.env.VK_DRIVER_FILES || process.env.VK_ICD_FILENAMES || !existsSync(LAVAPIPE_ICD)
      ? {}
      : { VK_DRIVER_FILES: LAVAPIPE_ICD };
  let adapter: string | null = null;

  before(async () => {
    const out = join(dir, 'bundle');
    // Without Node (the bundle then runs on this one) and fast gzip: a build check, not the release.
    await run(
      process.execPath,
      [
        '--import',
        '@swc-node/register/esm-register',
        'scripts/build-smoke-bundle.ts',
        '--no-node',
        '--level',
        '1',
        '--out',
        out,
      ],
      { cwd: ROOT, maxBuffer: 16 << 20 },
    );
    bundle = join(out, 'gim-smoke-gpu');
    // Does Dawn find an adapter with this environment? (Its loader reads VK_* at start.)
    const probe = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "const { create } = await import('webgpu'); const a = await create([]).requestAdapter(); " +
          'console.log(JSON.stringify(a ? `${a.info.vendor} ${a.info.description}` : null)); process.exit(0);',
      ],
      { cwd: ROOT, env: { ...process.env, ...vulkan } },
    );
    adapter = JSON.parse(probe.stdout.trim()) as string | null;
  });

  test('the bundle is built: run, smoke.mjs, dawn.node, the stack, a tarball', async () => {
    assert.ok(existsSync(join(bundle, '..', 'gim-smoke-gpu.tar.gz')));
    for (const f of [
      'run',
      'smoke.mjs',
      'dist/linux-x64/dawn.node',
      'models/fashion-gim/labels.json',
    ])
      assert.ok(existsSync(join(bundle, f)), f);
    assert.ok(!existsSync(join(bundle, 'node')), 'built with --no-node');
  });

  test('without a Vulkan driver: exit 1, no WebGPU adapter', async () => {
    await assert.rejects(
      run(join(bundle, 'run'), ['--allow-cpu'], {
        env: { ...process.env, VK_DRIVER_FILES: join(dir, 'no-such-icd.json') },
      }),
      isExit(1, /gim-smoke-gpu: no WebGPU adapter: Dawn found no usable Vulkan driver/),
    );
  });

  test('on a Vulkan adapter: WebGPU embeddings match the cpu reference', async (t) => {
    if (adapter === null) {
      t.skip(
        'no Vulkan adapter here (Debian 12: `bash scripts/fetch-lavapipe.sh` gets a CPU driver ' +
          'Dawn accepts; bookworm mesa-vulkan-drivers 22.3 is too old for Dawn)',
      );
      return;
    }
    const json = join(dir, 'webgpu.json');
    // Mesa's shader cache in .tmp: a CPU driver compiles the golden pass's shaders in ~5-10 s
    // cold, ~0.5 s from the cache of an earlier run on this machine.
    const env = {
      ...process.env,
      MESA_SHADER_CACHE_DIR: join(ROOT, '.tmp/lavapipe/shader-cache'),
      ...vulkan,
    };
    // Batch 4 = the golden count: the sweep reuses the golden pass's shaders (slow to compile on
    // a CPU driver).
    await run(
      join(bundle, 'run'),
      ['--allow-cpu', '--batch-sizes', '4', '--reps', '1', '--json', json],
      { env, maxBuffer: 16 << 20 },
    );
    const r = await readReport(json);
    assert.equal(r.ok, true, r.failures.join('; '));
    assert.equal(r.backend.name, 'webgpu');
    assert.equal(r.backend.tfjsBackend, 'webgpu');
    const a = r.backend.adapter;
    assert.ok(a !== undefined);
    for (const k of ['vendor', 'architecture', 'device', 'description'] as const)
      assert.equal(typeof a[k], 'string');
    assert.equal(r.golden?.vsReference.ok, true, r.golden?.vsReference.message);
    assert.equal(r.golden?.vsReference.actualBackend, 'webgpu');
    assert.equal(r.golden?.vsReference.expectedBackend, 'cpu');
    assert.deepEqual(
      r.throughput.map((x) => [x.backend, x.batchSize]),
      [['webgpu', 4]],
    );
    if (r.backend.software !== null) {
      // A software adapter (lavapipe here) is refused without --allow-cpu, before any compute.
      assert.equal(r.backend.gpu.onGpu, false);
      await assert.rejects(
        run(join(bundle, 'run'), ['--batch-sizes', '4'], { env }),
        isExit(1, /not on a GPU: a software \(CPU\) adapter/),
      );
    } else assert.equal(r.backend.gpu.onGpu, true);
  });
});
