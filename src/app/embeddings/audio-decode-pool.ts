import { Piscina } from 'piscina';
import { GimError } from '../../gim/errors.js';
import { OWN_EXTENSION, workerExecArgv } from '../../inference/worker-argv.js';
import type { AudioDecodeFailure, AudioDecodeTask } from './audio-decode.worker.js';
import type { AudioInputSpec } from './audio-geometry.js';

const WORKER_URL = new URL(`./audio-decode.worker${OWN_EXTENSION}`, import.meta.url);

/**
 * Audio decoding off the HTTP thread: a pool of worker threads (piscina) that decode, mix down,
 * resample and normalise clips. Threads start on the first clip and stop after a minute idle, so
 * a server of image stacks runs none.
 */
export class AudioDecodePool {
  private pool?: Piscina<AudioDecodeTask, Float32Array | AudioDecodeFailure>;

  constructor(private readonly threads: number) {}

  /** Clips decoded by the pool's threads so far. */
  get completed(): number {
    return this.pool?.completed ?? 0;
  }

  /** `signal` (the client gone): a queued clip is dropped, a running one's thread stopped. */
  async decode(
    bytes: Uint8Array,
    spec: AudioInputSpec,
    signal?: AbortSignal,
  ): Promise<Float32Array> {
    this.pool ??= new Piscina({
      filename: WORKER_URL.href,
      name: 'default',
      minThreads: 0,
      maxThreads: this.threads,
      idleTimeout: 60_000,
      execArgv: workerExecArgv().execArgv,
    });
    // The bytes are copied, not transferred: a request body may share its memory with others.
    let result;
    try {
      result = await this.pool.run({ bytes, spec }, { signal: signal ?? null });
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      throw e;
    }
    if (result instanceof Float32Array) return result;
    const { code, message, details } = result.error;
    throw new GimError(code, message, { details });
  }

  async close(): Promise<void> {
    await this.pool?.destroy();
  }
}
