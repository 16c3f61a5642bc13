import { createHash } from 'node:crypto';
import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import type { FastifyRequest } from 'fastify';

/**
 * Who made an admin request, for audit lines and job records: `token:<first 8 hex digits of the
 * token's SHA-256>` (the AdminTokenGuard has checked it), never the token itself.
 */
export const AdminActor = createParamDecorator((_data: unknown, context: ExecutionContext) => {
  const header = context.switchToHttp().getRequest<FastifyRequest>().headers.authorization ?? '';
  const token = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1] ?? '';
  return { id: `token:${createHash('sha256').update(token).digest('hex').slice(0, 8)}` };
});
