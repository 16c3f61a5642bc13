import { Module } from '@nestjs/common';
import { InferenceModule } from '../inference/inference.module.js';
import { StoreModule } from '../store/store.module.js';
import { EmbeddingsController } from './embeddings.controller.js';
import { EmbeddingsService } from './embeddings.service.js';
import { MultipartInterceptor } from './multipart.interceptor.js';

@Module({
  imports: [InferenceModule, StoreModule],
  controllers: [EmbeddingsController],
  providers: [EmbeddingsService, MultipartInterceptor],
  exports: [EmbeddingsService],
})
export class EmbeddingsModule {}
