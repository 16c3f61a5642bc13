import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import type { FastifyReply } from 'fastify';
import { clientGoneSignal } from './client-signal.decorator.js';

/** What the embedding pipeline needs to know about the HTTP request it answers. */
export interface InFlightRequest {
  /** Aborts when the client goes away before its response is sent. */
  readonly signal: AbortSignal;
  /**
   * When the request reached the server, on `performance.now()`'s clock: its deadline is this
   * plus REQUEST_TIMEOUT_MS, so time spent reading and decoding the body counts too.
   */
  readonly arrivedAt: number;
}

/**
 * The request's arrival as Fastify recorded it (before the onRequest hooks and body parsing;
 * `reply.elapsedTime` is measured on `performance.now()`), and its client-gone signal.
 */
export function inFlight(reply: FastifyReply): InFlightRequest {
  return { signal: clientGoneSignal(reply), arrivedAt: performance.now() - reply.elapsedTime };
}

/** Route parameter decorator: `@InFlight() request: InFlightRequest`. */
export const InFlight = createParamDecorator((_data: unknown, context: ExecutionContext) =>
  inFlight(context.switchToHttp().getResponse<FastifyReply>()),
);
