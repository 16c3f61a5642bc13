import { Module } from '@nestjs/common';
import { BackendModule } from '../backend/backend.module.js';
import { HealthController } from './health.controller.js';
import { HealthService } from './health.service.js';

@Module({
  imports: [BackendModule],
  controllers: [HealthController],
  providers: [HealthService],
})
export class HealthModule {}
