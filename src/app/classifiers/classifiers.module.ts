import { Module } from '@nestjs/common';
import { AdminTokenGuard } from '../admin/admin-token.guard.js';
import { EmbeddingsModule } from '../embeddings/embeddings.module.js';
import { JobsModule } from '../jobs/jobs.module.js';
import { MetricsModule } from '../metrics/metrics.module.js';
import { StoreModule } from '../store/store.module.js';
import { AdminClassifiersController } from './admin-classifiers.controller.js';
import { ClassifiersController } from './classifiers.controller.js';
import { ClassifiersService } from './classifiers.service.js';
import { MultipartInterceptor } from '../embeddings/multipart.interceptor.js';

/**
 * Classification heads: listing, manifests, classify (through the embedding pipeline), and the
 * admin routes that submit head and probe training jobs.
 */
@Module({
  imports: [EmbeddingsModule, JobsModule, MetricsModule, StoreModule],
  controllers: [ClassifiersController, AdminClassifiersController],
  providers: [ClassifiersService, AdminTokenGuard, MultipartInterceptor],
})
export class ClassifiersModule {}
