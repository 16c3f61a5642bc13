import { createHash, timingSafeEqual } from 'node:crypto';
import {
  type CanActivate,
  type ExecutionContext,
  Inject,
  Injectable,
  UnauthorizedException,
} from '@nestjs/common';
import type { FastifyRequest } from 'fastify';
import { GimError } from '../../gim/errors.js';
import { APP_CONFIG, type AppConfig } from '../config.js';

/**
 * Guards `/admin/...` routes: `Authorization: Bearer <ADMIN_TOKEN>`. Without ADMIN_TOKEN the
 * admin routes are off and answer 404 `not_found` (they do not exist on this deployment); with
 * it, a missing or wrong token is a 401 `unauthorized`.
 */
@Injectable()
export class AdminTokenGuard implements CanActivate {
  private readonly expected?: Buffer;

  constructor(@Inject(APP_CONFIG) config: AppConfig) {
    this.expected = config.adminToken === undefined ? undefined : digest(config.adminToken);
  }

  canActivate(context: ExecutionContext): boolean {
    if (this.expected === undefined)
      throw new GimError('not_found', 'admin routes are off: ADMIN_TOKEN is not set');
    const header = context.switchToHttp().getRequest<FastifyRequest>().headers.authorization ?? '';
    const token = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
    // Compared as digests: equal lengths, and the time does not tell how much of it matched.
    if (token === undefined || !timingSafeEqual(digest(token), this.expected))
      throw new UnauthorizedException(
        'a valid admin bearer token is required (Authorization: Bearer <ADMIN_TOKEN>)',
      );
    return true;
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
