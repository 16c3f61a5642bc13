import { Module } from '@nestjs/common';
import { AdminTokenGuard } from '../admin/admin-token.guard.js';
import { AuditLog } from '../admin/audit-log.js';
import { InferenceModule } from '../inference/inference.module.js';
import { MetricsModule } from '../metrics/metrics.module.js';
import { StoreModule } from '../store/store.module.js';
import { LabelsController } from './labels.controller.js';
import { LabelsService } from './labels.service.js';

/** Stack and head labels under /admin/v1/models/{name}/.../labels (admin token). */
@Module({
  imports: [InferenceModule, MetricsModule, StoreModule],
  controllers: [LabelsController],
  providers: [LabelsService, AdminTokenGuard, AuditLog],
})
export class LabelsModule {}
