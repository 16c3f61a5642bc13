import { Controller, Get } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import { ApiErrors } from '../errors/api-errors.decorator.js';
import { LiveStatusDto, ReadyStatusDto } from './health.dto.js';
import { HealthService, type LiveStatus, type ReadyStatus } from './health.service.js';

@ApiTags('health')
@Controller('health')
export class HealthController {
  constructor(private readonly health: HealthService) {}

  @Get('live')
  @ApiOperation({ summary: 'The process is up and its event loop answers' })
  @ApiOkResponse({ type: LiveStatusDto })
  @ApiErrors()
  live(): LiveStatus {
    return this.health.live();
  }

  @Get('ready')
  @ApiOperation({
    summary: 'The service can compute',
    description:
      '503 until the inference worker is up and every PRELOAD stack is loaded and warmed up ' +
      '(or found damaged on disk: listed under `unavailable`, the others are served), and while ' +
      'a worker that died is being restarted.',
  })
  @ApiOkResponse({ type: ReadyStatusDto })
  @ApiErrors(503)
  ready(): ReadyStatus {
    return this.health.ready();
  }
}
