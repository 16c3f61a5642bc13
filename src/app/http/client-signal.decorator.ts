import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import type { FastifyReply } from 'fastify';
import { GimError } from '../../gim/errors.js';

/**
 * An AbortSignal that aborts when the client goes away before its response is sent, so queued
 * work for it is dropped. Watches the Node response, not the request: since Node 16 a request
 * emits 'close' as soon as its body has been read, while the response closes early only when the
 * connection does.
 */
export function clientGoneSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const res = reply.raw;
  res.once('close', () => {
    if (!res.writableFinished) {
      controller.abort(new GimError('cancelled', 'the client closed the connection'));
    }
  });
  return controller.signal;
}

/** Route parameter decorator: `@ClientSignal() signal: AbortSignal`. */
export const ClientSignal = createParamDecorator((_data: unknown, context: ExecutionContext) =>
  clientGoneSignal(context.switchToHttp().getResponse<FastifyReply>()),
);
