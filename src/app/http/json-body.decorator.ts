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
