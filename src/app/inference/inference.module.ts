import { Module } from '@nestjs/common';
import { MetricsModule } from '../metrics/metrics.module.js';
import { StoreModule } from '../store/store.module.js';
import { InferenceService } from './inference.service.js';

/**
 * The inference worker and the batch queues in front of it. The worker is started through the
 * `START_INFERENCE_CLIENT` function that `AppModule.forRoot` provides.
 */
@Module({
  imports: [MetricsModule, StoreModule],
  providers: [InferenceService],
  exports: [InferenceService],
})
export class InferenceModule {}
