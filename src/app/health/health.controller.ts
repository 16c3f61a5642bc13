import { Controller, Get } from '@nestjs/common';
import { HealthService, type LiveStatus, type ReadyStatus } from './health.service.js';

@Controller('health')
export class HealthController {
  constructor(private readonly health: HealthService) {}

  /** The process is up and its event loop answers. */
  @Get('live')
  live(): LiveStatus {
    return this.health.live();
  }

  /** The service can compute: 503 until the tfjs backend is selected. */
  @Get('ready')
  ready(): ReadyStatus {
    return this.health.ready();
  }
}
