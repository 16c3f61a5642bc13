import 'reflect-metadata';
import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { Logger } from '@nestjs/common';
import { AppModule } from './app/app.module.js';
import { type AppConfig, ConfigError, loadConfig, nestLogLevels } from './app/config.js';
import { createApp } from './app/configure-app.js';
import { Lifecycle } from './app/lifecycle/lifecycle.service.js';

const SHUTDOWN_SIGNALS = ['SIGTERM', 'SIGINT'] as const;

async function bootstrap(): Promise<void> {
  let config: AppConfig;
  try {
    config = loadConfig();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(error.message);
    process.exitCode = 1;
    return;
  }

  const logger = new Logger('Main');
  const app = await createApp(AppModule.forRoot(config), config, {
    logger: nestLogLevels(config.logLevel),
    // Without this Nest calls process.abort() on a startup error: no message, a core dump.
    abortOnError: false,
  });
  const lifecycle = app.get(Lifecycle);

  // Graceful shutdown, in the order a load balancer needs: turn not-ready at once (readiness
  // 503 `shutting_down`), keep serving SHUTDOWN_DELAY_MS while endpoints stop sending, close the
  // listener and answer what is in flight (queued items included: the batch queues drain before
  // the worker stops) with `Connection: close`, hand running training jobs back (they
  // checkpoint; the next process resumes them), then exit 0. A drain longer
  // than SHUTDOWN_TIMEOUT_MS exits 1; a second signal exits 1 at once.
  let shutdown: Promise<void> | undefined;
  const drainAndExit = async (signal: NodeJS.Signals): Promise<void> => {
    lifecycle.beginDrain();
    logger.log(
      `${signal}: not ready from now; serving ${config.shutdownDelayMs} ms more, then draining ` +
        `(at most ${config.shutdownTimeoutMs} ms)`,
    );
    if (config.shutdownDelayMs > 0) await sleep(config.shutdownDelayMs);
    lifecycle.beginClose();
    const started = performance.now();
    // Fastify waits for every connection to end; idle keep-alive ones are closed here, first
    // after 250 ms (bytes a client sent before the signal are parsed by then and served),
    // then as each becomes idle (every response now says `Connection: close`).
    const server = app.getHttpServer() as Server;
    const reaper = setInterval(() => server.closeIdleConnections(), 250);
    const deadline = setTimeout(() => {
      logger.error(
        `the drain did not finish within SHUTDOWN_TIMEOUT_MS (${config.shutdownTimeoutMs} ms): exiting 1`,
      );
      process.exit(1);
    }, config.shutdownTimeoutMs);
    await app.close();
    clearInterval(reaper);
    clearTimeout(deadline);
    logger.log(`drained in ${Math.round(performance.now() - started)} ms: exiting 0`);
    process.exit(0);
  };
  for (const signal of SHUTDOWN_SIGNALS) {
    process.on(signal, () => {
      if (shutdown) {
        logger.warn(`${signal} again while draining: exiting 1 now`);
        process.exit(1);
      }
      shutdown = drainAndExit(signal).catch((error: unknown) => {
        logger.error(`shutdown failed: ${error instanceof Error ? error.message : String(error)}`);
        process.exit(1);
      });
    });
  }

  await app.listen(config.port, config.host);
  logger.log(
    `listening on ${config.host}:${config.port} (${await app.getUrl()}), models in ${config.modelsDir}, ` +
      `API docs at /docs`,
  );
}

bootstrap().catch((error: unknown) => {
  new Logger('Main').error(
    `failed to start: ${error instanceof Error ? error.message : String(error)}`,
    error instanceof Error ? error.stack : undefined,
  );
  process.exit(1);
});
