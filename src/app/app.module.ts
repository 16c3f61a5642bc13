import { type DynamicModule, Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { InferenceClient } from '../inference/inference-client.js';
import { ClassifiersModule } from './classifiers/classifiers.module.js';
import { APP_CONFIG, type AppConfig } from './config.js';
import { EmbeddingsModule } from './embeddings/embeddings.module.js';
import { HttpErrorFilter } from './errors/http-error.filter.js';
import { HealthModule } from './health/health.module.js';
import {
  START_INFERENCE_CLIENT,
  type StartInferenceClient,
} from './inference/inference.service.js';
import { JobsModule } from './jobs/jobs.module.js';
import { KserveModule } from './kserve/kserve.module.js';
import { LabelsModule } from './labels/labels.module.js';
import { Lifecycle } from './lifecycle/lifecycle.service.js';
import { MetricsModule } from './metrics/metrics.module.js';
import { ModelsModule } from './models/models.module.js';

export interface AppModuleOptions {
  /** How the inference worker starts; default `InferenceClient.start`. */
  startInferenceClient?: StartInferenceClient;
}

/**
 * The root of the HTTP service. The config is loaded by the caller (main.ts, or a test) and
 * provided globally under `APP_CONFIG`, so feature modules inject it without importing this one.
 */
@Module({})
export class AppModule {
  static forRoot(config: AppConfig, options: AppModuleOptions = {}): DynamicModule {
    const start: StartInferenceClient =
      options.startInferenceClient ?? ((opts) => InferenceClient.start(opts));
    return {
      module: AppModule,
      global: true,
      imports: [
        MetricsModule,
        HealthModule,
        ModelsModule,
        EmbeddingsModule,
        ClassifiersModule,
        KserveModule,
        JobsModule,
        LabelsModule,
      ],
      providers: [
        { provide: APP_CONFIG, useValue: config },
        { provide: START_INFERENCE_CLIENT, useValue: start },
        { provide: APP_FILTER, useClass: HttpErrorFilter },
        Lifecycle,
      ],
      exports: [APP_CONFIG, START_INFERENCE_CLIENT, Lifecycle],
    };
  }
}
