import { Module } from '@nestjs/common';
import { StoreModule } from '../store/store.module.js';
import { ModelsController } from './models.controller.js';
import { ModelsService } from './models.service.js';

@Module({
  imports: [StoreModule],
  controllers: [ModelsController],
  providers: [ModelsService],
})
export class ModelsModule {}
