import { Controller, Get, Param } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import { ApiErrors } from '../errors/api-errors.decorator.js';
import type { ModelList, VersionDescription } from './model-description.js';
import { ModelListDto, VersionDto } from './models.dto.js';
import { ModelsService } from './models.service.js';

@ApiTags('models')
@Controller('v1/models')
export class ModelsController {
  constructor(private readonly models: ModelsService) {}

  @Get()
  @ApiOperation({
    summary: 'Every stack: modality, versions, labels, default version',
    description:
      'A stack whose files on disk are damaged is listed under `unavailable` with the reason; ' +
      'requests to it answer 503 `model_unavailable`, the other stacks are served.',
  })
  @ApiOkResponse({ type: ModelListDto })
  @ApiErrors()
  list(): Promise<ModelList> {
    return this.models.list();
  }

  @Get(':name')
  @ApiOperation({ summary: 'A stack at its default version (label stable, else latest)' })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiOkResponse({ type: VersionDto })
  @ApiErrors(400, 404, 503)
  describe(@Param('name') name: string): Promise<VersionDescription> {
    return this.models.describe(name);
  }

  @Get(':name/versions/:version')
  @ApiOperation({ summary: 'One version of a stack: input, layers, dimensions per pooling' })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiParam({ name: 'version', description: 'A version number or a label', example: 'stable' })
  @ApiOkResponse({ type: VersionDto })
  @ApiErrors(400, 404, 503)
  describeVersion(
    @Param('name') name: string,
    @Param('version') version: string,
  ): Promise<VersionDescription> {
    return this.models.describe(name, version);
  }
}
