import { STATUS_CODES, maxHeaderSize } from 'node:http';
import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  HttpException,
  Logger,
} from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { type GimErrorCode, isGimError } from '../../gim/errors.js';

/** The body of every error response. */
export interface ErrorBody {
  error: string;
  error_type: string;
  /** Machine-readable specifics of some errors (a 409's stranded heads). */
  details?: Record<string, unknown>;
}

export interface HttpError {
  status: number;
  body: ErrorBody;
  headers?: Record<string, string>;
}

const GIM_ERROR_STATUS: Record<GimErrorCode, number> = {
  invalid_argument: 400,
  not_found: 404,
  conflict: 409,
  precondition_failed: 412,
  invalid_data: 422,
  unsupported_media: 415,
  too_large: 413,
  overloaded: 429,
  timeout: 504,
  // The client is gone; nginx's 499 "client closed request" is what access logs expect.
  cancelled: 499,
  backend_unavailable: 503,
  shutting_down: 503,
  // The version cannot be served by this replica (its weights or this backend are off); another
  // replica, on other hardware, may serve it: 503, not 500.
  golden_mismatch: 503,
  // A stack's files on disk are damaged: an operator must fix them; the other stacks are served.
  model_unavailable: 503,
  io_error: 500,
};

/**
 * error_type of an HttpException by status; a status not listed gets its snake_cased reason.
 * Statuses a GimError can also produce use the GimError's code, so that a 413 says `too_large`
 * whether the body parser, the multipart reader or the image decoder refused the input.
 */
const HTTP_ERROR_TYPE: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  408: 'request_timeout',
  409: 'conflict',
  412: 'precondition_failed',
  428: 'precondition_required',
  413: 'too_large',
  414: 'too_large',
  415: 'unsupported_media',
  417: 'expectation_failed',
  422: 'unprocessable_entity',
  429: 'overloaded',
  431: 'too_large',
  500: 'internal',
  503: 'not_ready',
  504: 'timeout',
};

/**
 * The one place where errors become HTTP responses: `{"error": message, "error_type": code}`.
 * HttpExceptions (including Nest's 404 for unknown routes and Fastify's errors, a body over
 * the limit among them, which the Fastify adapter turns into HttpExceptions) keep their status; a `GimError` from the core maps by
 * its code; anything else is a 500 whose details go to the log, never to the client.
 */
@Catch()
export class HttpErrorFilter implements ExceptionFilter {
  private readonly logger = new Logger(HttpErrorFilter.name);

  catch(exception: unknown, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const req = http.getRequest<FastifyRequest>();
    const res = http.getResponse<FastifyReply>();
    const { status, body, headers } = toHttpError(exception);

    const summary = `${req.method} ${req.url} -> ${status} ${body.error_type}`;
    if (exception instanceof HttpException) {
      // Thrown on purpose (a 503 answers every readiness probe while not ready): no stack.
      this.logger.debug(`${summary}: ${body.error}`);
    } else if (isGimError(exception)) {
      // A coded error is an expected outcome (a timeout, the worker down): its message says it all.
      if (status >= 500) this.logger.warn(`${summary}: ${body.error}`);
      else this.logger.debug(`${summary}: ${body.error}`);
    } else if (status >= 500) {
      this.logger.error(summary, exception instanceof Error ? exception.stack : String(exception));
    }
    if (res.sent || res.raw.headersSent) {
      // Mid-stream: a status can no longer be sent; cut the response so the client sees a failure.
      res.raw.destroy();
      return;
    }
    if (headers) void res.headers(headers);
    void res.status(status).send(body);
  }
}

export function toHttpError(exception: unknown): HttpError {
  const known = frameworkError(exception) ?? clientGone(exception);
  if (known !== undefined) return known;
  if (exception instanceof HttpException) {
    const status = exception.getStatus();
    return {
      status,
      body: { error: safeMessage(httpMessage(exception)), error_type: httpErrorType(status) },
    };
  }
  if (isGimError(exception)) {
    const error: HttpError = {
      status: GIM_ERROR_STATUS[exception.code],
      body: { error: safeMessage(exception.message), error_type: exception.code },
    };
    // A core error may carry a machine-readable part meant for the client (e.g. stranded heads).
    const response = exception.details.response;
    if (typeof response === 'object' && response !== null && !Array.isArray(response))
      error.body.details = response as Record<string, unknown>;
    if (exception.code === 'overloaded') {
      const seconds = exception.details.retryAfterSeconds;
      const retryAfter = typeof seconds === 'number' && seconds > 0 ? Math.ceil(seconds) : 1;
      error.headers = { 'Retry-After': String(retryAfter) };
    }
    return error;
  }
  return { status: 500, body: { error: 'internal server error', error_type: 'internal' } };
}

/**
 * Errors that Fastify's router and body parsers (`FST_...`, bare or wrapped in an HttpException
 * by Nest's adapter) and Node's HTTP parser (`HPE_...`, on a raw socket) raise on a client's
 * request, with a message of ours: theirs quote the URL back or say nothing of what to change.
 */
function frameworkError(exception: unknown): HttpError | undefined {
  const code = errorCode(exception) ?? errorCode((exception as { cause?: unknown }).cause);
  const known = code === undefined ? undefined : FRAMEWORK_ERRORS[code];
  if (known === undefined) return undefined;
  const [status, errorType, message] = known;
  return { status, body: { error: message, error_type: errorType } };
}

/** The connection closed while the body was read: nobody gets the answer (counted as 499). */
function clientGone(exception: unknown): HttpError | undefined {
  if (!(exception instanceof Error) || errorCode(exception) !== 'ECONNRESET') return undefined;
  return {
    status: GIM_ERROR_STATUS.cancelled,
    body: { error: 'the client closed the connection', error_type: 'cancelled' },
  };
}

function errorCode(error: unknown): string | undefined {
  const code: unknown =
    typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : undefined;
}

const MALFORMED_REQUEST =
  'the request is not valid HTTP/1.1: send "METHOD /path HTTP/1.1" with the path and query ' +
  'percent-encoded (no spaces, control characters or raw non-ASCII bytes), then the headers';

/** [status, error_type, message] by the code of a Fastify or Node HTTP parser error. */
const FRAMEWORK_ERRORS: Record<string, [number, string, string]> = {
  FST_ERR_BAD_URL: [
    400,
    'bad_request',
    'the URL path is not valid percent-encoding: a % must start %XX (two hex digits) of UTF-8',
  ],
  FST_ERR_MAX_PARAM_LENGTH: [
    414,
    'too_large',
    'a segment of the URL path is too long: names are at most 64 characters',
  ],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [
    415,
    'unsupported_media',
    'the Content-Type header is not a media type (type/subtype): see /docs for what a route takes',
  ],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [
    400,
    'bad_request',
    'the body is not as long as its Content-Length header says',
  ],
  FST_ERR_CTP_EMPTY_JSON_BODY: [
    400,
    'bad_request',
    'the body is empty: send a JSON object with Content-Type application/json',
  ],
  FST_ERR_CTP_INVALID_JSON_BODY: [
    400,
    'bad_request',
    'the body is not valid JSON (keys __proto__ and constructor.prototype are refused too)',
  ],
  FST_ERR_CTP_BODY_TOO_LARGE: [
    413,
    'too_large',
    'the request body is larger than this server takes (MAX_BODY_BYTES)',
  ],
  // Node's HTTP parser and timers, on a raw socket (framework-errors.ts).
  ERR_HTTP_REQUEST_TIMEOUT: [
    408,
    'request_timeout',
    'the request line, headers and body did not arrive in time: send the whole request at once',
  ],
  HPE_HEADER_OVERFLOW: [
    431,
    'too_large',
    `the request line and headers are over ${maxHeaderSize} bytes: shorten the URL or the headers`,
  ],
  HPE_INVALID_METHOD: [
    400,
    'bad_request',
    'not an HTTP method this server knows (or not HTTP: TLS to a plain-HTTP port?): ' +
      'the API takes GET, HEAD and POST',
  ],
  HPE_INVALID_URL: [400, 'bad_request', MALFORMED_REQUEST],
  HPE_INVALID_CONSTANT: [400, 'bad_request', MALFORMED_REQUEST],
  HPE_INVALID_VERSION: [400, 'bad_request', MALFORMED_REQUEST],
  HPE_CR_EXPECTED: [400, 'bad_request', MALFORMED_REQUEST],
  HPE_LF_EXPECTED: [400, 'bad_request', MALFORMED_REQUEST],
  HPE_STRICT: [400, 'bad_request', MALFORMED_REQUEST],
  HPE_INVALID_HEADER_TOKEN: [
    400,
    'bad_request',
    'a header name or value holds characters HTTP does not allow (a space in a name, ' +
      'a control character, a folded line)',
  ],
  HPE_INVALID_CONTENT_LENGTH: [
    400,
    'bad_request',
    'Content-Length must be one decimal number of bytes',
  ],
  HPE_UNEXPECTED_CONTENT_LENGTH: [
    400,
    'bad_request',
    'Content-Length must be given once, and not with Transfer-Encoding',
  ],
  HPE_INVALID_TRANSFER_ENCODING: [
    400,
    'bad_request',
    'Transfer-Encoding must end in chunked and come without Content-Length',
  ],
  HPE_INVALID_CHUNK_SIZE: [400, 'bad_request', 'the chunked body is malformed'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [400, 'bad_request', 'the chunked body is malformed'],
  HPE_PAUSED_H2_UPGRADE: [
    400,
    'bad_request',
    'HTTP/2 is not served on this port: use HTTP/1.1 (curl --http1.1)',
  ],
};

/** What a client gets for an error Node's HTTP parser or timers raised on its connection. */
export function toClientHttpError(error: unknown): HttpError {
  return (
    frameworkError(error) ?? {
      status: 400,
      body: { error: MALFORMED_REQUEST, error_type: 'bad_request' },
    }
  );
}

/** Longest message sent, and control characters escaped: a last guard against echoed input. */
const MAX_MESSAGE_CHARS = 1000;

function safeMessage(message: string): string {
  const escaped = message.replace(
    // eslint-disable-next-line no-control-regex
    /[\u0000-\u001f\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return escaped.length > MAX_MESSAGE_CHARS ? `${escaped.slice(0, MAX_MESSAGE_CHARS)}...` : escaped;
}

function httpErrorType(status: number): string {
  const known = HTTP_ERROR_TYPE[status];
  if (known !== undefined) return known;
  const reason = STATUS_CODES[status];
  if (reason === undefined) return status >= 500 ? 'internal' : 'bad_request';
  return reason.toLowerCase().replace(/[^a-z0-9]+/g, '_');
}

/** Nest puts the message in the response object, as a list for validation errors. */
function httpMessage(exception: HttpException): string {
  const response = exception.getResponse();
  if (typeof response === 'string') return response;
  const message: unknown = (response as { message?: unknown }).message;
  if (typeof message === 'string') return message;
  if (Array.isArray(message)) return message.map(String).join('; ');
  return exception.message;
}
