import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { untrainedDraft } from '../helpers/stack-draft.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, type BackendInfo, type BackendName } from '../../src/gim/backend/index.js';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { GimError } from '../../src/gim/errors.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { embeddingSpaceId, layerDigests } from '../../src/gim/store/embedding-space.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { InferenceClient, epochNow } from '../../src/inference/inference-client.js';
import { rejectsWith } from '../helpers/gim-error.js';
import { describeEachBackend, testBackends } from '../helpers/backends.js';

const adapter = defaultImageAdapter({ mean: [0.3], std: [0.3] });
const configs = visionModuleConfigs(adapter, [4, 8, 8]);
const CLIENT_URL = new URL('../../src/inference/inference-client.ts', import.meta.url).href;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const IMAGE = adapter.height * adapter.width * adapter.channels;

let dir = '';
let backend: BackendInfo;
let store: StackStore;
let stackA: EncoderStack; // published as tiny@1 (stable)
let stackB: EncoderStack; // tiny@2: other weights
let client: InferenceClient;
const logLines: string[] = [];
const plan = await testBackends();

before(async () => {
  backend = await selectBackend();
  dir = await mkdtemp(join(tmpdir(), 'gim-inference-'));
  store = new StackStore(dir);
  stackA = EncoderStack.create(adapter, configs, 1);
  stackB = EncoderStack.create(adapter, configs, 2);
  const [a, b] = [await stackA.artifacts(), await stackB.artifacts()];
  await store.publish('tiny', await untrainedDraft(stackA, { modules: a, backend: backend.name }), {
    labels: ['latest', 'stable'],
  });
  await store.publish('tiny', await untrainedDraft(stackB, { modules: b, backend: backend.name }));
  // tiny@3: modules 1-2 of version 1, module 3 of version 2 (as a retrain from module 3 would).
  await store.publish(
    'tiny',
    await untrainedDraft(stackA, { modules: [a[0]!, a[1]!, b[2]!], backend: backend.name }),
  );
  client = await InferenceClient.start({
    modelsDir: dir,
    log: (l) => logLines.push(l),
    maxPending: 8,
  });
});

after(async () => {
  await client.close();
  stackA.dispose();
  stackB.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** n deterministic images in [0, 1]. */
function images(n: number, seed = 1): Float32Array {
  const out = new Float32Array(n * IMAGE);
  let s = seed;
  for (let i = 0; i < out.length; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    out[i] = s / 2147483648;
  }
  return out;
}

/** The in-process grids of `stack`, as plain arrays. */
function localGrids(stack: EncoderStack, pixels: Float32Array, n: number, layers: number[]) {
  const grids = stack.embed(pixels, n, layers);
  const out = new Map([...grids].map(([l, t]) => [l, { data: t.dataSync(), shape: t.shape }]));
  tf.dispose([...grids.values()]);
  return out;
}

test('the worker runs on the same backend and gives the in-process grids exactly, several layers per call', async () => {
  assert.equal(client.backend.name, backend.name);
  const { manifest } = await client.load('tiny');
  assert.equal(manifest.version, 1, 'a plain name follows the stable label');
  const n = 5;
  const pixels = images(n);
  const expected = localGrids(stackA, pixels, n, [1, 2, 3]);
  const sent = pixels.slice();
  const { grids, computeMs } = await client.embed('tiny', 1, sent, n, [3, 1, 2]);
  assert.equal(sent.byteLength, 0, 'the pixel buffer is transferred, not copied');
  assert.ok(computeMs > 0);
  assert.deepEqual([...grids.keys()], [3, 1, 2]);
  for (const layer of [1, 2, 3]) {
    const got = grids.get(layer)!;
    const want = expected.get(layer)!;
    assert.deepEqual(
      [got.shape.n, got.shape.rows, got.shape.cols, got.shape.channels],
      want.shape,
      `layer ${layer}`,
    );
    assert.deepEqual(got.data, want.data, `layer ${layer}`);
  }
  // A view into a larger buffer is copied, not transferred: the caller's buffer stays usable.
  const big = images(n + 1);
  const view = big.subarray(IMAGE);
  const { grids: fromView } = await client.embed('tiny', 1, view, n, [1]);
  assert.equal(big.length, (n + 1) * IMAGE);
  assert.deepEqual(fromView.get(1)!.data, localGrids(stackA, view, n, [1]).get(1)!.data);
});

test('space digests: one per layer, stable across loads, changed only from the first changed module', async () => {
  const v1 = await client.load('tiny@1');
  const again = await client.load('tiny@stable');
  const v2 = await client.load('tiny@2');
  const v3 = await client.load('tiny@3');
  assert.equal(v1.spaceDigests.length, 3);
  v1.spaceDigests.forEach((d) => assert.match(d, /^[0-9a-f]{64}$/));
  assert.equal(new Set(v1.spaceDigests).size, 3, 'each layer is its own space');
  assert.deepEqual(again.spaceDigests, v1.spaceDigests);
  v2.spaceDigests.forEach((d, i) => assert.notEqual(d, v1.spaceDigests[i], `layer ${i + 1}`));
  assert.deepEqual(v3.spaceDigests.slice(0, 2), v1.spaceDigests.slice(0, 2));
  assert.notEqual(v3.spaceDigests[2], v1.spaceDigests[2]);
  // The pure function gives the worker's digests from the stored files.
  const stored = await store.load('tiny@3');
  assert.deepEqual(layerDigests(stored.manifest, stored.modules), v3.spaceDigests);

  const d = v1.spaceDigests[0]!;
  assert.match(embeddingSpaceId(d, 'mean'), /^[0-9a-f]{32}$/);
  assert.equal(embeddingSpaceId(d, 'mean'), embeddingSpaceId(d, 'mean'));
  assert.notEqual(embeddingSpaceId(d, 'mean'), embeddingSpaceId(d, 'max'));
  assert.equal(await client.unload('tiny', 3), true);
  assert.equal(await client.unload('tiny', 3), false);
});

test('errors come back with their codes and leave the worker working', async () => {
  await rejectsWith(client.load('nope'), 'not_found', /no stack 'nope'/);
  await rejectsWith(client.load('tiny@9'), 'not_found', /no version 9/);
  await rejectsWith(client.load('Bad Name'), 'invalid_argument');
  await rejectsWith(client.embed('tiny', 3, images(1), 1, [1]), 'not_found', /not loaded/);
  await rejectsWith(client.embed('tiny', 1, images(1), 1, [4]), 'not_found', /layer 4/);
  await rejectsWith(client.embed('tiny', 1, images(1), 1, [0, 1]), 'not_found', /layer 0/);
  await rejectsWith(client.embed('tiny', 1, images(2), 3, [1]), 'invalid_argument', /3 images/);
  await rejectsWith(client.embed('tiny', 1, images(1), 1, []), 'invalid_argument');
  const { grids } = await client.embed('tiny', 1, images(2), 2, [2]);
  assert.equal(grids.get(2)!.shape.n, 2);

  // The calls waiting on the worker are bounded: the 9th of 8 allowed is refused at once.
  const results = await Promise.allSettled(Array.from({ length: 9 }, () => client.stats()));
  assert.deepEqual(
    results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as GimError).code)),
    [...Array<string>(8).fill('ok'), 'overloaded'],
  );
});

test('the worker frees every tensor: numTensors does not grow over 20 embed calls', async () => {
  await client.embed('tiny', 1, images(4), 4, [1, 2, 3]);
  const before = await client.stats();
  for (let i = 0; i < 20; i++) await client.embed('tiny', 1, images(4, i), 4, [1 + (i % 3), 3]);
  const after = await client.stats();
  assert.equal(after.numTensors, before.numTensors);
  assert.equal(after.numBytes, before.numBytes);
});

describeEachBackend(plan, 'the worker on a forced backend', (name) => {
  let forced: InferenceClient;
  before(async () => {
    forced = await InferenceClient.start({ modelsDir: dir, backend: name });
  });
  after(async () => {
    await forced.close();
    // The tests below compare the default worker with in-process grids on the default backend.
    await selectBackend({ force: backend.name });
  });

  test('runs on it and gives its in-process grids exactly', async () => {
    assert.equal(forced.backend.name, name);
    await forced.load('tiny@1');
    const pixels = images(4, 3);
    const expected = localGrids(stackA, pixels, 4, [1, 2, 3]);
    const { grids } = await forced.embed('tiny', 1, pixels.slice(), 4, [2, 3, 1]);
    for (const layer of [1, 2, 3])
      assert.deepEqual(grids.get(layer)!.data, expected.get(layer)!.data, `layer ${layer}`);
  });

  test('frees every tensor: numTensors does not grow over 10 embed calls', async () => {
    await forced.embed('tiny', 1, images(4), 4, [1, 2, 3]);
    const start = await forced.stats();
    for (let i = 0; i < 10; i++) await forced.embed('tiny', 1, images(4, i), 4, [1 + (i % 3)]);
    const end = await forced.stats();
    assert.equal(end.numTensors, start.numTensors);
    assert.equal(end.numBytes, start.numBytes);
  });
});

test('round trip of a 32-image batch vs in-process embed (measured, printed)', async () => {
  const n = 32;
  const pixels = images(n);
  const runs = 20;
  localGrids(stackA, pixels, n, [1, 2, 3]);
  let t = performance.now();
  for (let i = 0; i < runs; i++) localGrids(stackA, pixels, n, [1, 2, 3]);
  const local = (performance.now() - t) / runs;
  await client.embed('tiny', 1, pixels.slice(), n, [1, 2, 3]);
  let compute = 0;
  t = performance.now();
  for (let i = 0; i < runs; i++) {
    compute += (await client.embed('tiny', 1, pixels.slice(), n, [1, 2, 3])).computeMs;
  }
  const remote = (performance.now() - t) / runs;
  console.log(
    `# 32 images, layers 1-3: in-process ${local.toFixed(2)} ms, worker round trip ` +
      `${remote.toFixed(2)} ms (compute in worker ${(compute / runs).toFixed(2)} ms, ` +
      `overhead ${(remote - compute / runs).toFixed(2)} ms)`,
  );
  assert.ok(remote > 0 && local > 0);
});

test('an embed past its deadline is refused, by the client before posting and by the worker when it gets to it', async () => {
  await client.load('tiny@1');
  await rejectsWith(
    client.embed('tiny', 1, images(1), 1, [3], { deadline: epochNow() - 1 }),
    'timeout',
    /before the worker got to it/,
  );
  // Due in 20 ms, but posted behind a batch that takes longer: it waits in the worker's queue.
  const [big, small] = await Promise.allSettled([
    client.embed('tiny', 1, images(512), 512, [1, 2, 3]),
    client.embed('tiny', 1, images(1), 1, [3], { deadline: epochNow() + 20 }),
  ]);
  assert.equal(big.status, 'fulfilled');
  assert.ok(big.value.computeMs > 20, `the big batch took only ${big.value.computeMs} ms`);
  assert.equal(small.status, 'rejected');
  await rejectsWith(Promise.reject(small.reason), 'timeout', /when the worker got to it/);
  const inTime = await client.embed('tiny', 1, images(1), 1, [3], {
    deadline: epochNow() + 60_000,
  });
  assert.equal(inTime.grids.get(3)?.shape.n, 1);
});

test('a killed worker fails its pending calls with backend_unavailable and is restarted with its stacks', async () => {
  // Big enough that the worker is still computing when it is terminated.
  const pendingCall = client.embed('tiny', 1, images(512), 512, [1, 2, 3]);
  const rejected = rejectsWith(pendingCall, 'backend_unavailable', /died/);
  await client.terminateWorkerForTest();
  await rejected;
  assert.ok(logLines.some((l) => /worker died/.test(l)));

  // Calls made during the restart wait for it; the stacks loaded before are there again.
  const pixels = images(3, 7);
  const expected = localGrids(stackA, pixels, 3, [3]);
  const { grids } = await client.embed('tiny', 1, pixels.slice(), 3, [3]);
  assert.deepEqual(grids.get(3)!.data, expected.get(3)!.data);
  const v2 = localGrids(stackB, pixels, 3, [1]);
  assert.deepEqual(
    (await client.embed('tiny', 2, pixels, 3, [1])).grids.get(1)!.data,
    v2.get(1)!.data,
  );
  assert.equal(client.backend.name, backend.name);
});

test('close() rejects pending and later calls', async () => {
  const pendingCall = client.embed('tiny', 1, images(256), 256, [3]);
  const rejected = rejectsWith(pendingCall, 'backend_unavailable', /closed/);
  await client.close();
  await rejected;
  await rejectsWith(client.stats(), 'backend_unavailable', /closed/);
  await client.close();
});

/**
 * Runs, in a child `node <flags>` process whose loader is registered without --import, a client
 * that starts, embeds one item and closes; returns the grid shape it printed. No process.exit: a
 * leftover worker would keep the child alive.
 */
async function embedInChild(flags: string[]): Promise<unknown> {
  const code = `
    import { register } from 'node:module';
    import { pathToFileURL } from 'node:url';
    register('@swc-node/register/esm', pathToFileURL('./').toString());
    const { InferenceClient } = await import(${JSON.stringify(CLIENT_URL)});
    const client = await InferenceClient.start({ modelsDir: ${JSON.stringify(dir)} });
    await client.load('tiny@1');
    const { grids } = await client.embed('tiny', 1, new Float32Array(${IMAGE}), 1, [2]);
    await client.close();
    console.log('shape ' + JSON.stringify(grids.get(2).shape));
  `;
  const child = spawn(process.execPath, [...flags, '--input-type=module', '-e', code], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // Starting the child (swc, tfjs, the worker) can take long on a loaded machine: the 10 s
  // budget for exiting by itself starts once the client is closed (the 'shape' line), with a
  // generous one for the whole run.
  let stdout = '';
  let exitTimer: NodeJS.Timeout | undefined;
  child.stdout.on('data', (b: Buffer) => {
    stdout += b.toString();
    if (exitTimer === undefined && stdout.includes('shape ')) {
      exitTimer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    }
  });
  const runTimer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const [exitCode, signal] = (await once(child, 'exit')) as [number | null, string | null];
  clearTimeout(runTimer);
  clearTimeout(exitTimer);
  assert.equal(signal, null, 'the child did not exit by itself within 10 s of closing its client');
  assert.equal(exitCode, 0);
  const line = stdout.split('\n').find((l) => l.startsWith('shape '));
  assert.ok(line, `no shape in the output:\n${stdout.slice(-500)}`);
  return JSON.parse(line.slice('shape '.length));
}

test('a process that closes its client exits by itself (loader registered without --import)', async () => {
  // module.register() hooks are not inherited by workers in Node 20: the client must add the
  // loader flag to the worker's execArgv.
  assert.deepEqual(await embedInChild([]), { n: 1, rows: 6, cols: 6, channels: 8 });
});

test('a process flag that Node refuses in workers (--trace-gc) is left out of the worker', async () => {
  // Passed on as is, Node refuses the worker (ERR_WORKER_INVALID_EXEC_ARGV) and the service
  // would never get ready.
  assert.deepEqual(await embedInChild(['--trace-gc']), { n: 1, rows: 6, cols: 6, channels: 8 });
});

test('start() fails with the code of the backend selection, leaving no worker', async () => {
  await rejectsWith(
    InferenceClient.start({ modelsDir: dir, backend: 'no-such' as BackendName }),
    'invalid_argument',
    /unknown backend/,
  );
  // A better backend that was skipped here, forced, is unavailable.
  const skipped = backend.fallbackReasons[0]?.split(':')[0] as BackendName | undefined;
  if (skipped !== undefined) {
    await rejectsWith(
      InferenceClient.start({ modelsDir: dir, backend: skipped }),
      'backend_unavailable',
      new RegExp(skipped),
    );
  }
});
