import { CommanderError } from 'commander';
import { isGimError } from '../gim/errors.js';

/**
 * Exit status of every `gim` command. A job runner acts on it: 2 is not worth a retry (a
 * Kubernetes podFailurePolicy fails the Job at once on it), 3 means stopped on request with a
 * checkpoint written where the command has one (`--resume` continues from it).
 */
export const EXIT = { succeeded: 0, failed: 1, badInput: 2, cancelled: 3 } as const;

/** GimError codes that mean bad usage or input (including an incompatible head). */
const BAD_INPUT: ReadonlySet<string> = new Set([
  'invalid_argument',
  'not_found',
  'invalid_data',
  'unsupported_media',
  'conflict',
]);

export function exitCodeOf(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.succeeded : EXIT.badInput;
  if (isGimError(e)) {
    if (e.code === 'cancelled') return EXIT.cancelled;
    return BAD_INPUT.has(e.code) ? EXIT.badInput : EXIT.failed;
  }
  return EXIT.failed;
}

/** The machine-readable side of an error: its code (`internal` for a bug) and message. */
export function errorOf(e: unknown): { code: string; message: string } {
  if (e instanceof CommanderError) return { code: 'invalid_argument', message: e.message };
  if (isGimError(e)) return { code: e.code, message: e.message };
  return { code: 'internal', message: e instanceof Error ? e.message : String(e) };
}
