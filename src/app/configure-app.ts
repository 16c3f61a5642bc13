import type { DynamicModule, NestApplicationOptions } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import multipart from '@fastify/multipart';
import { maxHeaderSize } from 'node:http';
import type { AppConfig } from './config.js';
import { Lifecycle } from './lifecycle/lifecycle.service.js';
import {
  clientErrorHandler,
  frameworkErrors,
  requireHost,
  shapeServerAnswers,
  unmatchedRoutes,
} from './errors/framework-errors.js';
import { MULTIPART_LIMITS } from './embeddings/multipart.interceptor.js';
import { requestMetrics } from './metrics/request-metrics.hook.js';
import { MetricsService } from './metrics/metrics.service.js';
import { RouteTable } from './metrics/route-table.js';

export const DOCS_PATH = 'docs';

/**
 * The HTTP app as `main.ts` and the e2e tests run it: NestJS on Fastify, with the request
 * metrics, the body parsers and their limits, and Swagger (UI at /docs, JSON at /docs-json).
 * Call `init` or `listen` on the result. Fastify rather than Express: a minimal Nest app (raw PNG
 * body in, 64 floats of JSON out, 64 connections) spent 43 vs 180 us of CPU per request, and the
 * service's HTTP thread went from 0.40 to 0.24 ms per embedding request (bench:serve).
 */
export async function createApp(
  module: DynamicModule,
  config: AppConfig,
  options: NestApplicationOptions,
): Promise<NestFastifyApplication> {
  const app = await NestFactory.create<NestFastifyApplication>(
    module,
    // bodyLimit: over MAX_BODY_BYTES is a 413 before a byte reaches a controller (JSON included).
    // ignoreTrailingSlash: `/v1/models/` is `/v1/models`, as it was under Express.
    new FastifyAdapter({
      bodyLimit: config.maxBodyBytes,
      // maxParamLength: find-my-way answers a longer path segment with a 414 of its own; as long
      // as the headers may be, every name reaches the service's checks (a 400 naming the limit).
      routerOptions: { ignoreTrailingSlash: true, maxParamLength: maxHeaderSize },
      // What Fastify and Node would answer on their own, in the service's error shape.
      frameworkErrors,
      clientErrorHandler,
      http: { requireHostHeader: false },
      // Shutdown (main.ts): requests that reach the server while the listener closes are still
      // served (they were sent before the signal, or on a connection opened before it), each
      // answered with `Connection: close`; idle connections are closed by main.ts, a moment
      // after the listener, so that requests already received but not yet parsed are not reset.
      return503OnClosing: false,
      forceCloseConnections: false,
    }),
    options,
  );
  await configureApp(app, config);
  return app;
}

async function configureApp(app: NestFastifyApplication, config: AppConfig): Promise<void> {
  const document = SwaggerModule.createDocument(
    app,
    new DocumentBuilder()
      .setTitle('gim-serve')
      .setDescription(
        'Greedy InfoMax embeddings of images and audio at any layer of any stack version, with dynamic ' +
          'batching in an inference worker. Errors are `{"error": message, "error_type": code}`, ' +
          'on every route and beside them: a path no route serves is a 404 `not_found` (405 ' +
          '`method_not_allowed` with `Allow` when another method is served there), a malformed ' +
          'request or URL a 400 `bad_request`, a request line and headers over 16 KiB a 431 ' +
          '`too_large`, a request that does not arrive in time a 408 `request_timeout`.',
      )
      .setVersion('1')
      // Relative: the document is right behind any host, port or path prefix it is served at.
      .addServer('/', 'this server')
      // The admin routes' `Authorization: Bearer <ADMIN_TOKEN>` (ApiBearerAuth names it `bearer`).
      .addBearerAuth(
        { type: 'http', scheme: 'bearer', bearerFormat: 'opaque', description: 'ADMIN_TOKEN' },
        'bearer',
      )
      .build(),
  );

  // First, so that it times and counts every response, a body parser's 413 included.
  const routes = RouteTable.fromOpenApi({
    ...document.paths,
    [`/${DOCS_PATH}`]: { get: {} },
    [`/${DOCS_PATH}-json`]: { get: {} },
  });
  const fastify = app.getHttpAdapter().getInstance();
  fastify.addHook('onRequest', requestMetrics(app.get(MetricsService), routes));
  const lifecycle = app.get(Lifecycle);
  fastify.addHook('onRequest', (_req, reply, done) => {
    if (lifecycle.closing) void reply.header('connection', 'close');
    done();
  });
  fastify.addHook('onRequest', requireHost);
  fastify.addHook('onRequest', unmatchedRoutes(routes));
  shapeServerAnswers(app.getHttpServer());

  // A body reaches a route as parsed JSON, or as a Buffer read within the body limit: a raw item
  // of a media type the service decodes (RAW_MEDIA_TYPES), or any other type, which the route
  // answers with a 415 saying what it takes (text/plain included: its default parser is removed).
  // multipart/form-data is streamed by the embeddings routes (MultipartInterceptor).
  fastify.removeContentTypeParser('text/plain');
  fastify.addContentTypeParser(
    '*',
    { parseAs: 'buffer', bodyLimit: config.maxBodyBytes },
    (_req, body, done) => done(null, body),
  );
  await app.register(multipart, {
    limits: {
      fileSize: config.maxBodyBytes,
      files: config.maxItems,
      fields: MULTIPART_LIMITS.fields,
      fieldSize: MULTIPART_LIMITS.fieldBytes,
      parts: config.maxItems + MULTIPART_LIMITS.fields,
    },
  });

  SwaggerModule.setup(DOCS_PATH, app, document, { jsonDocumentUrl: `${DOCS_PATH}-json` });
}
