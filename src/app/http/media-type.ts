import type { FastifyRequest } from 'fastify';

/** The media type of a Content-Type header, lower-cased, without parameters; '' when absent. */
export function mediaTypeOf(req: FastifyRequest): string {
  const header = req.headers['content-type'] ?? '';
  const semicolon = header.indexOf(';');
  return (semicolon === -1 ? header : header.slice(0, semicolon)).trim().toLowerCase();
}
