import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { MetricsService } from './metrics.service.js';
import type { RouteTable } from './route-table.js';

/** The `route` label of requests no route serves (404s, probes for /wp-admin, ...). */
export const UNMATCHED_ROUTE = 'unmatched';
/** nginx's "client closed request": the connection closed before the response was sent. */
const CLIENT_CLOSED = 499;

/**
 * Counts and times every request, errors included: it runs before the body parsers, so a 413 from
 * a parser is counted under its route like any other response.
 */
export function requestMetrics(metrics: MetricsService, routes: RouteTable): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const started = process.hrtime.bigint();
    const route = routes.match(req.method, req.path) ?? UNMATCHED_ROUTE;
    res.once('close', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.observeRequest(route, res.writableFinished ? res.statusCode : CLIENT_CLOSED, seconds);
    });
    next();
  };
}
