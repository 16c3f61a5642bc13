import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import type { MetricsService } from './metrics.service.js';
import type { RouteTable } from './route-table.js';

/** The `route` label of requests no route serves (404s, probes for /wp-admin, ...). */
export const UNMATCHED_ROUTE = 'unmatched';
/** nginx's "client closed request": the connection closed before the response was sent. */
const CLIENT_CLOSED = 499;

/**
 * A Fastify `onRequest` hook that counts and times every request, errors included: it runs before
 * body parsing, so a 413 from a parser is counted under its route like any other response. It
 * watches the Node response, which closes early only when the connection does.
 */
export function requestMetrics(metrics: MetricsService, routes: RouteTable) {
  return (req: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    const started = process.hrtime.bigint();
    const query = req.url.indexOf('?');
    const path = query === -1 ? req.url : req.url.slice(0, query);
    const route = routes.match(req.method, path) ?? UNMATCHED_ROUTE;
    const res = reply.raw;
    metrics.startRequest(route);
    res.once('close', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.observeRequest(route, res.writableFinished ? res.statusCode : CLIENT_CLOSED, seconds);
    });
    done();
  };
}
