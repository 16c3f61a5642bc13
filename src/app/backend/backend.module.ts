import { Module } from '@nestjs/common';
import { BackendService } from './backend.service.js';

@Module({
  providers: [BackendService],
  exports: [BackendService],
})
export class BackendModule {}
