import { type DynamicModule, Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { BackendModule } from './backend/backend.module.js';
import { APP_CONFIG, type AppConfig } from './config.js';
import { HttpErrorFilter } from './errors/http-error.filter.js';
import { HealthModule } from './health/health.module.js';

/**
 * The root of the HTTP service. The config is loaded by the caller (main.ts, or a test) and
 * provided globally under `APP_CONFIG`, so feature modules inject it without importing this one.
 */
@Module({})
export class AppModule {
  static forRoot(config: AppConfig): DynamicModule {
    return {
      module: AppModule,
      global: true,
      imports: [BackendModule, HealthModule],
      providers: [
        { provide: APP_CONFIG, useValue: config },
        { provide: APP_FILTER, useClass: HttpErrorFilter },
      ],
      exports: [APP_CONFIG],
    };
  }
}
