import {
  Controller,
  Get,
  HttpCode,
  Inject,
  Param,
  Post,
  Query,
  Req,
  UseInterceptors,
} from '@nestjs/common';
import {
  ApiExtraModels,
  ApiOkResponse,
  ApiOperation,
  ApiParam,
  ApiTags,
  getSchemaPath,
} from '@nestjs/swagger';
import type { FastifyRequest } from 'fastify';
import type { HeadManifest } from '../../gim/store/head-manifest.js';
import { APP_CONFIG, type AppConfig } from '../config.js';
import { readEncodedInputs } from '../embeddings/embedding-inputs.js';
import { RAW_MEDIA_TYPES } from '../embeddings/input-decoders.js';
import { MultipartInterceptor } from '../embeddings/multipart.interceptor.js';
import { ApiErrors } from '../errors/api-errors.decorator.js';
import { InFlight, type InFlightRequest } from '../http/in-flight.decorator.js';
import {
  ClassifyJsonBodyDto,
  ClassifyQueryDto,
  ClassifyResponseDto,
  HeadManifestDto,
  HeadSummaryDto,
  HeadVersionQueryDto,
  LabelScoreDto,
} from './classifiers.dto.js';
import {
  type ClassifyResponse,
  ClassifiersService,
  type HeadSummaryBody,
} from './classifiers.service.js';

const binary = { schema: { type: 'string', format: 'binary' } } as const;

@ApiTags('classifiers')
@Controller('v1/models/:name/classifiers')
@ApiParam({ name: 'name', description: 'Stack name', example: 'fashion-gim' })
export class ClassifiersController {
  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly classifiers: ClassifiersService,
  ) {}

  @Get()
  @ApiOperation({
    summary: 'The classification heads of a stack',
    description:
      'Per head: its labels, default version and every version with the encoder version, layer ' +
      'and pooling it is bound to, its classes and its train/validation/test accuracy.',
  })
  @ApiOkResponse({ type: [HeadSummaryDto] })
  @ApiErrors(400, 404, 503)
  list(@Param('name') name: string): Promise<HeadSummaryBody[]> {
    return this.classifiers.list(name);
  }

  @Get(':head')
  @ApiOperation({
    summary: 'The manifest of a head version',
    description:
      'The stored manifest: classes, encoder binding (stack version, layer, pooling, normalize, ' +
      'embedding space), training options and metrics (accuracy, per-class precision/recall/F1, ' +
      'confusion matrix on train, validation and test items), data source.',
  })
  @ApiParam({ name: 'head', description: 'Head name', example: 'clothes' })
  @ApiOkResponse({ type: HeadManifestDto })
  @ApiErrors(400, 404, 503)
  describe(
    @Param('name') name: string,
    @Param('head') head: string,
    @Query() query: HeadVersionQueryDto,
  ): Promise<HeadManifest> {
    return this.classifiers.describe(name, head, query.version);
  }

  @Post(':head/classify')
  @HttpCode(200)
  @UseInterceptors(MultipartInterceptor)
  @ApiOperation({
    summary: 'Classify images or audio clips with a head',
    description:
      'Items as for POST /v1/models/{name}/embeddings: one as the raw body, several as ' +
      'multipart/form-data (one file field each; text fields are options) or JSON ' +
      '`{"inputs": [{"b64": "..."}], ...options}`. Each item is embedded through the same batch ' +
      'queue and worker as embeddings (one forward pass), pooled and normalised as the head was ' +
      'trained, and the head gives its class probabilities. The stack version defaults to the ' +
      'one the head was trained on; another version is accepted only when it gives the same ' +
      'embedding space at the head’s layer, else a 409 `conflict` naming both spaces.',
    requestBody: {
      required: true,
      content: {
        ...Object.fromEntries(RAW_MEDIA_TYPES.map((type) => [type, binary])),
        'multipart/form-data': {
          schema: {
            type: 'object',
            description: 'Any number of file fields (one item each, in order) and option fields',
            properties: {
              file: { type: 'array', items: { type: 'string', format: 'binary' } },
            },
          },
        },
        'application/json': { schema: { $ref: getSchemaPath(ClassifyJsonBodyDto) } },
      },
    },
  })
  @ApiExtraModels(ClassifyJsonBodyDto, LabelScoreDto)
  @ApiParam({ name: 'head', description: 'Head name', example: 'clothes' })
  @ApiOkResponse({ type: ClassifyResponseDto })
  @ApiErrors(400, 404, 409, 413, 415, 422, 429, 499, 503, 504)
  classify(
    @Param('name') name: string,
    @Param('head') head: string,
    @Query() query: ClassifyQueryDto,
    @Req() req: FastifyRequest,
    @InFlight() request: InFlightRequest,
  ): Promise<ClassifyResponse> {
    const inputs = readEncodedInputs(req, this.config.maxItems);
    return this.classifiers.classify(name, head, inputs, { ...query }, request);
  }
}
