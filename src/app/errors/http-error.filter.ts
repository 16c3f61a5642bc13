import { STATUS_CODES } from 'node:http';
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
  409: 'conflict',
  413: 'too_large',
  415: 'unsupported_media',
  422: 'unprocessable_entity',
  429: 'overloaded',
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
  if (exception instanceof HttpException) {
    const status = exception.getStatus();
    return { status, body: { error: httpMessage(exception), error_type: httpErrorType(status) } };
  }
  if (isGimError(exception)) {
    const error: HttpError = {
      status: GIM_ERROR_STATUS[exception.code],
      body: { error: exception.message, error_type: exception.code },
    };
    if (exception.code === 'overloaded') {
      const seconds = exception.details.retryAfterSeconds;
      const retryAfter = typeof seconds === 'number' && seconds > 0 ? Math.ceil(seconds) : 1;
      error.headers = { 'Retry-After': String(retryAfter) };
    }
    return error;
  }
  return { status: 500, body: { error: 'internal server error', error_type: 'internal' } };
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
