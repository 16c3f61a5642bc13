import { type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { HttpException } from '@nestjs/common';
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { GimError } from '../../gim/errors.js';
import { quoteInput } from '../../gim/quote-input.js';
import type { RouteTable } from '../metrics/route-table.js';
import { type HttpError, toClientHttpError, toHttpError } from './http-error.filter.js';

/**
 * The answers Fastify and Node would otherwise give on their own, before or beside Nest's
 * exception filter, each in the service's `{"error", "error_type"}` shape (the mapping stays in
 * http-error.filter.ts): the router's refusals (bad percent-encoding), requests no route serves
 * (404, or 405 with `Allow`), parser errors on the raw socket (400, 408, 431), a missing Host,
 * an `Expect` other than 100-continue, and CONNECT.
 */

/** Fastify's `frameworkErrors` option: the router refused the URL before any hook ran. */
export function frameworkErrors(error: Error, _req: FastifyRequest, reply: FastifyReply): void {
  sendError(reply, toHttpError(error));
}

/**
 * Fastify's `clientErrorHandler`: Node's parser refused the bytes, or the request did not arrive
 * within the server's headers/request timeout. A raw response, closing the connection (what
 * follows on it cannot be parsed), unless the socket is gone or a response already began.
 */
export function clientErrorHandler(error: Error & { code?: string }, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const inFlight = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
  if (socket.writable && !inFlight?.headersSent)
    socket.write(rawResponse(toClientHttpError(error)));
  socket.destroy();
}

/**
 * An `onRequest` hook that answers requests no route serves: 405 with `Allow` when another
 * method is served at that path, else 404. The path is quoted escaped and cut, never echoed.
 */
export function unmatchedRoutes(routes: RouteTable) {
  return (req: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    if (!req.is404) return done();
    const query = req.url.indexOf('?');
    const path = query === -1 ? req.url : req.url.slice(0, query);
    const allowed = routes.methodsAt(path);
    if (allowed.length > 0) {
      void reply.header('allow', allowed.join(', '));
      sendError(
        reply,
        toHttpError(
          new HttpException(
            `${req.method} is not served at this path: use ${allowed.join(', ')}`,
            405,
          ),
        ),
      );
    } else {
      sendError(
        reply,
        toHttpError(
          new GimError(
            'not_found',
            `no route ${req.method} ${quoteInput(path, 80)}: the API is listed at /docs`,
          ),
        ),
      );
    }
  };
}

/**
 * An `onRequest` hook: HTTP/1.1 requires a Host header. Node answers its absence with an empty
 * 400 of its own unless `requireHostHeader` is off (createApp turns it off for this hook).
 */
export function requireHost(
  req: FastifyRequest,
  reply: FastifyReply,
  done: HookHandlerDoneFunction,
): void {
  if (req.raw.httpVersion !== '1.1' || req.headers.host !== undefined) return done();
  sendError(reply, toHttpError(new HttpException('an HTTP/1.1 request needs a Host header', 400)));
}

/** Node's own answers outside Fastify: `Expect` it cannot meet (417, empty) and CONNECT (none). */
export function shapeServerAnswers(server: Server): void {
  server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    const { status, body } = toHttpError(
      new HttpException('the only Expect this server meets is 100-continue: send without it', 417),
    );
    const json = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(json),
      connection: 'close',
    });
    res.end(json);
  });
  server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
    const error = toHttpError(
      new HttpException('CONNECT is not served: this is not a proxy (use GET, HEAD or POST)', 405),
    );
    socket.on('error', () => undefined);
    socket.end(rawResponse(error, { allow: 'GET, HEAD, POST' }), () => socket.destroy());
  });
}

function sendError(reply: FastifyReply, { status, body, headers }: HttpError): void {
  if (headers) void reply.headers(headers);
  void reply.code(status).type('application/json; charset=utf-8').send(body);
}

function rawResponse({ status, body }: HttpError, headers: Record<string, string> = {}): string {
  const json = JSON.stringify(body);
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
    `content-type: application/json; charset=utf-8\r\n` +
    `content-length: ${Buffer.byteLength(json)}\r\n` +
    `${extra.join('')}connection: close\r\n\r\n${json}`
  );
}
