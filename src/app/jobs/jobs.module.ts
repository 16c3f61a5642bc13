import { Module } from '@nestjs/common';
import { AdminTokenGuard } from '../admin/admin-token.guard.js';
import { AuditLog } from '../admin/audit-log.js';
import { MetricsModule } from '../metrics/metrics.module.js';
import { StoreModule } from '../store/store.module.js';
import { JobsController } from './jobs.controller.js';
import { JobsService } from './jobs.service.js';
import { PromotionCheck } from './promotion-check.js';

/** Training jobs under /admin/v1/training-jobs (admin token). */
@Module({
  imports: [MetricsModule, StoreModule],
  controllers: [JobsController],
  providers: [JobsService, PromotionCheck, AdminTokenGuard, AuditLog],
  exports: [JobsService],
})
export class JobsModule {}
