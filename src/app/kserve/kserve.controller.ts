import { Body, Controller, Get, HttpCode, Param, Post } from '@nestjs/common';
import { ApiBody, ApiOkResponse, ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import { ApiErrors } from '../errors/api-errors.decorator.js';
import { InFlight, type InFlightRequest } from '../http/in-flight.decorator.js';
import { JsonBody } from '../http/json-body.decorator.js';
import {
  InferRequestDto,
  InferResponseDto,
  LiveDto,
  ModelMetadataDto,
  ModelReadyDto,
  ReadyDto,
} from './kserve.dto.js';
import { type InferResponse, KserveService, type ModelMetadata } from './kserve.service.js';

const NAME = ApiParam({ name: 'name', example: 'fashion-gim' });
const VERSION = ApiParam({
  name: 'version',
  description: 'A version number (or a label)',
  example: '1',
});

/** KServe Open Inference Protocol v2 (REST): health, model metadata, infer. */
@ApiTags('kserve-v2')
@Controller('v2')
export class KserveController {
  constructor(private readonly kserve: KserveService) {}

  @Get('health/live')
  @ApiOperation({ summary: 'Server live' })
  @ApiOkResponse({ type: LiveDto })
  @ApiErrors()
  live(): { live: true } {
    return { live: true };
  }

  @Get('health/ready')
  @ApiOperation({ summary: 'Server ready: worker up and PRELOAD stacks warmed up' })
  @ApiOkResponse({ type: ReadyDto })
  @ApiErrors(503)
  ready(): { ready: true } {
    return this.kserve.serverReady();
  }

  @Get('models/:name')
  @ApiOperation({ summary: 'Model metadata at the default version' })
  @NAME
  @ApiOkResponse({ type: ModelMetadataDto })
  @ApiErrors(400, 404, 503)
  metadata(@Param('name') name: string): Promise<ModelMetadata> {
    return this.kserve.metadata(name);
  }

  @Get('models/:name/versions/:version')
  @ApiOperation({ summary: 'Model metadata of one version' })
  @NAME
  @VERSION
  @ApiOkResponse({ type: ModelMetadataDto })
  @ApiErrors(400, 404, 503)
  versionMetadata(
    @Param('name') name: string,
    @Param('version') version: string,
  ): Promise<ModelMetadata> {
    return this.kserve.metadata(name, version);
  }

  @Get('models/:name/ready')
  @ApiOperation({ summary: 'The default version is loaded and warmed up' })
  @NAME
  @ApiOkResponse({ type: ModelReadyDto })
  @ApiErrors(400, 404, 503)
  modelReady(@Param('name') name: string): Promise<{ name: string; ready: true }> {
    return this.kserve.modelReady(name);
  }

  @Get('models/:name/versions/:version/ready')
  @ApiOperation({ summary: 'A version is loaded and warmed up' })
  @NAME
  @VERSION
  @ApiOkResponse({ type: ModelReadyDto })
  @ApiErrors(400, 404, 503)
  versionReady(
    @Param('name') name: string,
    @Param('version') version: string,
  ): Promise<{ name: string; ready: true }> {
    return this.kserve.modelReady(name, version);
  }

  @Post('models/:name/infer')
  @HttpCode(200)
  @ApiOperation({
    summary: 'Embeddings of images (FP32 pixels) or audio (FP32 samples), default version',
  })
  @NAME
  @JsonBody()
  @ApiBody({ type: InferRequestDto })
  @ApiOkResponse({ type: InferResponseDto })
  @ApiErrors(400, 404, 413, 415, 422, 429, 499, 503, 504)
  infer(
    @Param('name') name: string,
    @Body() body: unknown,
    @InFlight() request: InFlightRequest,
  ): Promise<InferResponse> {
    return this.kserve.infer(name, undefined, body, request);
  }

  @Post('models/:name/versions/:version/infer')
  @HttpCode(200)
  @ApiOperation({
    summary: 'Embeddings of images (FP32 pixels) or audio (FP32 samples), one version',
  })
  @NAME
  @VERSION
  @JsonBody()
  @ApiBody({ type: InferRequestDto })
  @ApiOkResponse({ type: InferResponseDto })
  @ApiErrors(400, 404, 413, 415, 422, 429, 499, 503, 504)
  inferVersion(
    @Param('name') name: string,
    @Param('version') version: string,
    @Body() body: unknown,
    @InFlight() request: InFlightRequest,
  ): Promise<InferResponse> {
    return this.kserve.infer(name, version, body, request);
  }
}
