/**
 * The tfjs backends the suite runs its backend-sensitive tests on: each of the native builds
 * (`tensorflow-gpu`: @tensorflow/tfjs-node-gpu, `tensorflow`: @tensorflow/tfjs-node) and `wasm`
 * that loads in this process. They are probed once per test process, with
 * `selectBackend({ force })`; tfjs is left on wasm afterwards. The pure-JS `cpu` backend is a
 * last-resort fallback, not a target: the tests that use it select it themselves.
 *
 * `GIM_TEST_BACKENDS` (a comma list, e.g. `wasm` or `tensorflow,wasm`) restricts the set; the
 * others are not even loaded (so `GIM_TEST_BACKENDS=wasm` runs these tests as on a machine
 * without a native build).
 *
 * A test file awaits the plan at its top level (node:test needs the suites when the file loads)
 * and declares its suites with `describeEachBackend`: a suite per available backend, and a skipped
 * test naming each unavailable one and why, so the output says which backends ran.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, type BackendInfo } from '../../src/gim/backend/index.js';

/** The backends the suite is run on when they are available, in probing order. */
export const TEST_BACKENDS = ['tensorflow-gpu', 'tensorflow', 'wasm'] as const;
export type TestBackend = (typeof TEST_BACKENDS)[number];

/** The native ones: what the parity tests compare against wasm. */
export type NativeBackend = Exclude<TestBackend, 'wasm'>;

export const ENV_VAR = 'GIM_TEST_BACKENDS';

export interface SkippedBackend {
  name: TestBackend;
  reason: string;
  /** false: left out by GIM_TEST_BACKENDS, never loaded (it may well be available). */
  probed: boolean;
}

export interface BackendPlan {
  /** The backends to run on, in TEST_BACKENDS order. */
  available: TestBackend[];
  skipped: SkippedBackend[];
  /** What `selectBackend` reported for each available backend. */
  info: ReadonlyMap<TestBackend, BackendInfo>;
}

let probing: Promise<BackendPlan> | undefined;

/** The backends of this process (probed on the first call, then cached). */
export function testBackends(): Promise<BackendPlan> {
  probing ??= probe();
  return probing;
}

/** The names GIM_TEST_BACKENDS asks for (all of TEST_BACKENDS when unset or empty). */
export function requestedBackends(value = process.env[ENV_VAR]): TestBackend[] {
  const names = (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (names.length === 0) return [...TEST_BACKENDS];
  const unknown = names.filter((n) => !(TEST_BACKENDS as readonly string[]).includes(n));
  if (unknown.length > 0)
    throw new Error(
      `${ENV_VAR}=${value}: unknown backend ${unknown.join(', ')}; ` +
        `expected a comma list of ${TEST_BACKENDS.join(', ')}`,
    );
  return TEST_BACKENDS.filter((b) => names.includes(b));
}

async function probe(): Promise<BackendPlan> {
  const requested = requestedBackends();
  const available: TestBackend[] = [];
  const skipped: SkippedBackend[] = [];
  const info = new Map<TestBackend, BackendInfo>();
  for (const name of TEST_BACKENDS) {
    if (!requested.includes(name)) {
      skipped.push({ name, probed: false, reason: `not in ${ENV_VAR}=${process.env[ENV_VAR]}` });
      continue;
    }
    if (name === 'tensorflow' && info.has('tensorflow-gpu')) {
      // Both packages register the one tfjs backend 'tensorflow': importing tfjs-node after
      // tfjs-node-gpu would "succeed" and still run on the GPU build.
      skipped.push({
        name,
        probed: false,
        reason:
          "this process's tfjs backend 'tensorflow' is tfjs-node-gpu's (both packages register " +
          `it); run ${ENV_VAR}=tensorflow,wasm to test the CPU build`,
      });
      continue;
    }
    try {
      info.set(name, await selectBackend({ force: name }));
      available.push(name);
    } catch (e) {
      // wasm is a dependency, not an option: a broken wasm backend fails the suite.
      if (name === 'wasm') throw e;
      skipped.push({ name, probed: true, reason: e instanceof Error ? e.message : String(e) });
    }
  }
  if (available.length === 0)
    throw new Error(`no tfjs backend to test on: ${skipped.map(describeSkip).join('; ')}`);
  if (info.has('wasm')) await selectBackend({ force: 'wasm' });
  return { available, skipped, info };
}

/** `name: reason`. */
export function describeSkip(s: SkippedBackend): string {
  return `${s.name}: ${s.reason}`;
}

/** Makes `name` the current tfjs backend (it must be available) and returns its info. */
export async function useBackend(name: TestBackend): Promise<BackendInfo> {
  const info = await selectBackend({ force: name });
  assert.equal(tf.getBackend(), info.tfjsBackend, `tf.getBackend() after selecting ${name}`);
  return info;
}

/**
 * `describe(title [backend], body)` for every available backend, the backend selected in the
 * suite's `before`; a skipped test `title [backend]` with the reason for every other one.
 * Suites run in TEST_BACKENDS order, so a file ends on wasm when wasm is tested.
 */
export function describeEachBackend(
  plan: BackendPlan,
  title: string,
  body: (backend: TestBackend) => void,
): void {
  for (const name of TEST_BACKENDS) {
    const label = `${title} [${name}]`;
    const skip = plan.skipped.find((s) => s.name === name);
    if (skip !== undefined) {
      test(label, { skip: skip.reason });
      continue;
    }
    describe(label, () => {
      before(async () => {
        await useBackend(name);
      });
      body(name);
    });
  }
}
