import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { AppModule } from './app/app.module.js';
import { type AppConfig, ConfigError, loadConfig, nestLogLevels } from './app/config.js';
import { createApp } from './app/configure-app.js';

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

  // On a signal Nest stops accepting connections, lets in-flight requests finish, runs the
  // shutdown hooks, then (useProcessExit) exits 0 instead of re-raising the signal.
  app.enableShutdownHooks([...SHUTDOWN_SIGNALS], { useProcessExit: true });
  for (const signal of SHUTDOWN_SIGNALS) {
    process.once(signal, () => logger.log(`${signal} received: draining and shutting down`));
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
