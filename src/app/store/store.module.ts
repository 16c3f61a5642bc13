import { Module } from '@nestjs/common';
import { HeadStore } from '../../gim/store/head-store.js';
import { StackStore } from '../../gim/store/stack-store.js';
import { APP_CONFIG, type AppConfig } from '../config.js';

/**
 * The versioned stacks and their classification heads on disk (`MODELS_DIR`), read by the main
 * thread for listings, refs and head weights.
 */
@Module({
  providers: [
    {
      provide: StackStore,
      useFactory: (config: AppConfig) =>
        new StackStore(config.modelsDir, { resolveCacheMs: config.refCacheMs }),
      inject: [APP_CONFIG],
    },
    {
      provide: HeadStore,
      useFactory: (config: AppConfig) => new HeadStore(config.modelsDir),
      inject: [APP_CONFIG],
    },
  ],
  exports: [StackStore, HeadStore],
})
export class StoreModule {}
