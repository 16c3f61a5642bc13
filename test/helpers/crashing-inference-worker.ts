/**
 * The real inference worker, plus a way for a test to make it crash for real, with no test hook
 * in the worker itself: once `armCrash(how)` has armed it, the next `embed` request the worker
 * receives makes it exit (`process.exit` in a worker ends its thread) or throw outside any
 * handler (an uncaught exception), while that request is in flight. And while the file named by
 * `REFUSE_START_ENV` exists, a new worker exits at once (a restart that fails). Start it by
 * passing `CRASHING_WORKER_URL` as the client's `workerUrl`.
 */
import { existsSync } from 'node:fs';
import { BroadcastChannel, isMainThread, parentPort } from 'node:worker_threads';

export type CrashHow = 'exit' | 'throw';

/** The exit code of a worker crashed by `exit`. */
export const CRASH_EXIT_CODE = 70;
export const CRASHING_WORKER_URL = new URL(import.meta.url);
/** The environment variable naming the file whose existence makes new workers exit at once. */
export const REFUSE_START_ENV = 'GIM_TEST_WORKER_REFUSE_FILE';
/** The exit code of a worker that refused to start. */
export const REFUSED_EXIT_CODE = 71;
const CHANNEL = 'gim-test-crash-inference-worker';

const refuseFile = process.env[REFUSE_START_ENV];
if (!isMainThread && refuseFile !== undefined && existsSync(refuseFile)) {
  process.exit(REFUSED_EXIT_CODE);
} else if (!isMainThread && parentPort !== null) {
  await import('../../src/inference/inference-worker.js');
  let armed: CrashHow | null = null;
  const channel = new BroadcastChannel(CHANNEL);
  channel.unref();
  channel.onmessage = (event) => {
    armed = (event as MessageEvent).data as CrashHow;
    channel.postMessage('armed');
  };
  // Registered after the worker's own listener: its handler has taken the request (and is
  // awaiting) when this one crashes the thread, so the request is in flight, unanswered.
  parentPort.on('message', (message: { type?: string }) => {
    if (armed === null || message.type !== 'embed') return;
    const how = armed;
    armed = null;
    if (how === 'exit') process.exit(CRASH_EXIT_CODE);
    throw new Error('the inference worker crashed (a test made it throw)');
  });
}

/** Arms the crash in the running worker; resolves once it is armed. */
export async function armCrash(how: CrashHow, timeoutMs = 10_000): Promise<void> {
  const channel = new BroadcastChannel(CHANNEL);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no inference worker to arm')), timeoutMs);
      channel.onmessage = () => {
        clearTimeout(timer);
        resolve();
      };
      channel.postMessage(how);
    });
  } finally {
    channel.close();
  }
}
