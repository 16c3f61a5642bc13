/**
 * Errors of the numeric core. The core never throws HTTP errors: it throws a `GimError` with a
 * machine-readable `code`, and the edges (CLI, HTTP filter) map the code to an exit status or an
 * HTTP status.
 */
export type GimErrorCode =
  | 'invalid_argument' // a bad option or configuration value (HTTP 400)
  | 'not_found' // unknown model, version, label, layer or file (HTTP 404)
  | 'conflict' // e.g. a version that already exists, an incompatible head (HTTP 409)
  | 'invalid_data' // undecodable, truncated or out-of-range input data (HTTP 422)
  | 'unsupported_media' // a format the core cannot read (HTTP 415)
  | 'backend_unavailable' // no usable tfjs backend, or a kernel it lacks
  | 'io_error'; // the filesystem failed under us

export class GimError extends Error {
  override readonly name = 'GimError';

  constructor(
    readonly code: GimErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isGimError(e: unknown): e is GimError {
  return e instanceof GimError;
}
