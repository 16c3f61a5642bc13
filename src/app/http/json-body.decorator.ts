import {
  applyDecorators,
  type CanActivate,
  type ExecutionContext,
  Injectable,
  UseGuards,
} from '@nestjs/common';
import { ApiConsumes } from '@nestjs/swagger';
import type { FastifyRequest } from 'fastify';
import { GimError } from '../../gim/errors.js';
import { quoteInput } from '../../gim/quote-input.js';
import { mediaTypeOf } from './media-type.js';

/**
 * Refuses a body that is not `application/json` with a 415 `unsupported_media`. Without it a
 * route that reads `@Body()` would take whatever a parser made of another type: a form body
 * parsed into fields, a PNG as a Buffer whose indexes look like field names.
 */
@Injectable()
export class JsonBodyGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<FastifyRequest>();
    if (mediaTypeOf(req) === 'application/json') return true;
    const given = req.headers['content-type'];
    throw new GimError(
      'unsupported_media',
      `${given ? `Content-Type ${quoteInput(given)} is not taken here` : 'no Content-Type'}: ` +
        'this route takes a JSON body, sent with Content-Type: application/json',
    );
  }
}

/**
 * A route whose body is JSON and nothing else (documented as such). Method guards run after the
 * controller's, so an admin route still answers 401/404 before it looks at the body.
 */
export function JsonBody(): MethodDecorator & ClassDecorator {
  return applyDecorators(UseGuards(JsonBodyGuard), ApiConsumes('application/json'));
}

/**
 * The JSON object body of a route whose body may be left out (cancel, rollback): undefined when
 * there is none, a 415 when it came as another media type (a raw Buffer), a 400 saying `usage`
 * when it is JSON but no object.
 */
export function optionalJsonObject(
  body: unknown,
  usage: string,
): Record<string, unknown> | undefined {
  if (body === undefined || body === null || (Buffer.isBuffer(body) && body.length === 0))
    return undefined;
  if (Buffer.isBuffer(body))
    throw new GimError(
      'unsupported_media',
      'the body, if any, must be JSON (Content-Type: application/json)',
    );
  if (typeof body !== 'object' || Array.isArray(body))
    throw new GimError('invalid_argument', `the body must be a JSON object ${usage}`);
  return body as Record<string, unknown>;
}
