/**
 * Errors of the numeric core. The core never throws HTTP errors: it throws a `GimError` with a
 * machine-readable `code`, and the edges (CLI, HTTP filter) map the code to an exit status or an
 * HTTP status.
 */
export type GimErrorCode =
  | 'invalid_argument' // a bad option or configuration value (HTTP 400)
  | 'not_found' // unknown model, version, label, layer or file (HTTP 404)
  | 'conflict' // e.g. a version that already exists, an incompatible head (HTTP 409)
  | 'precondition_failed' // a compare-and-set on a stale entity tag (HTTP 412)
  | 'invalid_data' // undecodable, truncated or out-of-range input data (HTTP 422)
  | 'unsupported_media' // a format the core cannot read (HTTP 415)
  | 'too_large' // over a size limit: body, items, pixels, duration (HTTP 413)
  | 'overloaded' // a bounded queue is full; retry later (HTTP 429)
  | 'timeout' // the work did not finish in time (HTTP 504)
  | 'cancelled' // the caller went away before the work was done
  | 'backend_unavailable' // no usable tfjs backend, or a kernel it lacks
  | 'shutting_down' // the process is draining: retry on another replica (HTTP 503)
  | 'golden_mismatch' // a stack version's golden embeddings do not match on this backend (HTTP 503)
  | 'model_unavailable' // a stack's files on disk are damaged or incomplete (HTTP 503)
  | 'io_error'; // the filesystem failed under us

export class GimError extends Error {
  override readonly name = 'GimError';

  /** Machine-readable extras for the edge, e.g. `{ retryAfterSeconds: 2 }` on `overloaded`. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    readonly code: GimErrorCode,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(message, options);
    this.details = options?.details ?? {};
  }
}

export function isGimError(e: unknown): e is GimError {
  return e instanceof GimError;
}
