import { Controller, Get, Param } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import { ApiErrors } from '../errors/api-errors.decorator.js';
import type { ModelSummary, VersionDescription } from './model-description.js';
import { ModelListDto, VersionDto } from './models.dto.js';
import { ModelsService } from './models.service.js';

@ApiTags('models')
@Controller('v1/models')
export class ModelsController {
  constructor(private readonly models: ModelsService) {}

  @Get()
  @ApiOperation({ summary: 'Every stack: modality, versions, labels, default version' })
  @ApiOkResponse({ type: ModelListDto })
  @ApiErrors()
  async list(): Promise<{ models: ModelSummary[] }> {
    return { models: await this.models.list() };
  }

  @Get(':name')
  @ApiOperation({ summary: 'A stack at its default version (label stable, else latest)' })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiOkResponse({ type: VersionDto })
  @ApiErrors(400, 404)
  describe(@Param('name') name: string): Promise<VersionDescription> {
    return this.models.describe(name);
  }

  @Get(':name/versions/:version')
  @ApiOperation({ summary: 'One version of a stack: input, layers, dimensions per pooling' })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiParam({ name: 'version', description: 'A version number or a label', example: 'stable' })
  @ApiOkResponse({ type: VersionDto })
  @ApiErrors(400, 404)
  describeVersion(
    @Param('name') name: string,
    @Param('version') version: string,
  ): Promise<VersionDescription> {
    return this.models.describe(name, version);
  }
}
