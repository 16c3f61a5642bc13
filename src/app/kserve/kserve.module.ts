import { Module } from '@nestjs/common';
import { EmbeddingsModule } from '../embeddings/embeddings.module.js';
import { HealthModule } from '../health/health.module.js';
import { InferenceModule } from '../inference/inference.module.js';
import { StoreModule } from '../store/store.module.js';
import { KserveController } from './kserve.controller.js';
import { KserveService } from './kserve.service.js';

@Module({
  imports: [EmbeddingsModule, HealthModule, InferenceModule, StoreModule],
  controllers: [KserveController],
  providers: [KserveService],
})
export class KserveModule {}
