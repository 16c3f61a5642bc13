import type { NestExpressApplication } from '@nestjs/platform-express';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { AppConfig } from './config.js';
import { RAW_MEDIA_TYPES } from './embeddings/input-decoders.js';
import { requestMetrics } from './metrics/request-metrics.middleware.js';
import { MetricsService } from './metrics/metrics.service.js';
import { RouteTable } from './metrics/route-table.js';

export const DOCS_PATH = 'docs';

/**
 * Everything the HTTP app needs besides its modules, for `main.ts` and the e2e tests alike: the
 * request metrics, the body parsers with their limits, and Swagger (UI at /docs, JSON at
 * /docs-json). Call it after `NestFactory.create`, before `init`/`listen`.
 */
export function configureApp(app: NestExpressApplication, config: AppConfig): void {
  app.disable('x-powered-by');

  const document = SwaggerModule.createDocument(
    app,
    new DocumentBuilder()
      .setTitle('gim-serve')
      .setDescription(
        'Greedy InfoMax embeddings of images and audio at any layer of any stack version, with dynamic ' +
          'batching in an inference worker. Errors are `{"error": message, "error_type": code}`.',
      )
      .setVersion('1')
      .build(),
  );

  // First, so that it times and counts every response, a body parser's 413 included.
  const routes = RouteTable.fromOpenApi({
    ...document.paths,
    [`/${DOCS_PATH}`]: { get: {} },
    [`/${DOCS_PATH}-json`]: { get: {} },
  });
  app.use(requestMetrics(app.get(MetricsService), routes));

  // Bodies of any route: over MAX_BODY_BYTES is a 413 before a byte reaches a controller.
  app.useBodyParser('json', { limit: config.maxBodyBytes });
  app.useBodyParser('raw', { type: [...RAW_MEDIA_TYPES], limit: config.maxBodyBytes });

  SwaggerModule.setup(DOCS_PATH, app, document, { jsonDocumentUrl: `${DOCS_PATH}-json` });
}
