import { GimError } from './errors.js';

/**
 * A cancellation point for long loops: lets pending macrotasks run (a signal handler that aborts
 * `signal` among them: data read from memory resolves in microtasks, which never let them run),
 * then throws `cancelled` if `signal` is aborted. Without a signal it does nothing.
 */
export async function cancellationPoint(signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return;
  await new Promise((resolve) => setImmediate(resolve));
  if (signal.aborted) throw new GimError('cancelled', 'stopped on request');
}
