import { Module } from '@nestjs/common';
import { StackStore } from '../../gim/store/stack-store.js';
import { APP_CONFIG, type AppConfig } from '../config.js';

/** The versioned stacks on disk (`MODELS_DIR`), read by the main thread for listings and refs. */
@Module({
  providers: [
    {
      provide: StackStore,
      useFactory: (config: AppConfig) => new StackStore(config.modelsDir),
      inject: [APP_CONFIG],
    },
  ],
  exports: [StackStore],
})
export class StoreModule {}
