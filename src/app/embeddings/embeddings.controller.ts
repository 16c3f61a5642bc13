import {
  Controller,
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
import { APP_CONFIG, type AppConfig } from '../config.js';
import { ApiErrors } from '../errors/api-errors.decorator.js';
import { InFlight, type InFlightRequest } from '../http/in-flight.decorator.js';
import { readEncodedInputs } from './embedding-inputs.js';
import { EmbedJsonBodyDto, EmbedQueryDto, EmbeddingsResponseDto } from './embeddings.dto.js';
import { type EmbeddingsResponse, EmbeddingsService } from './embeddings.service.js';
import { RAW_MEDIA_TYPES } from './input-decoders.js';
import { MultipartInterceptor } from './multipart.interceptor.js';

const binary = { schema: { type: 'string', format: 'binary' } } as const;

@ApiTags('embeddings')
@Controller('v1/models')
export class EmbeddingsController {
  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly embeddings: EmbeddingsService,
  ) {}

  @Post(':name/embeddings')
  @HttpCode(200)
  @UseInterceptors(MultipartInterceptor)
  @ApiOperation({
    summary: 'Embed images or audio clips at any layer of any version',
    description:
      'One item as the raw body (image stacks: Content-Type image/png, image/jpeg, ...; audio ' +
      'stacks: audio/wav, audio/flac, audio/mpeg, audio/ogg and their aliases), several as ' +
      'multipart/form-data (one file field per item, any field names; text fields are options), ' +
      'or JSON `{"inputs": [{"b64": "..."}], ...options}`. Images are resized to the stack’s ' +
      'input size. Audio is mixed to mono, resampled to the stack’s rate (16 kHz) and normalised ' +
      'as its adapter says; each clip keeps its length (between `min_samples` and `max_seconds` ' +
      'of GET /v1/models/{name}) and results carry per item `frames` and `frame_rate_hz`. ' +
      'An image to an audio stack, or audio to an image stack, is a 415. Items of concurrent ' +
      'requests share forward passes (dynamic batching; audio clips of one length share one).',
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
        'application/json': { schema: { $ref: getSchemaPath(EmbedJsonBodyDto) } },
      },
    },
  })
  @ApiExtraModels(EmbedJsonBodyDto)
  @ApiParam({ name: 'name', description: 'Stack name', example: 'fashion-gim' })
  @ApiOkResponse({ type: EmbeddingsResponseDto })
  @ApiErrors(400, 404, 413, 415, 422, 429, 499, 503, 504)
  embed(
    @Param('name') name: string,
    @Query() query: EmbedQueryDto,
    @Req() req: FastifyRequest,
    @InFlight() request: InFlightRequest,
  ): Promise<EmbeddingsResponse> {
    const inputs = readEncodedInputs(req, this.config.maxItems);
    return this.embeddings.embedEncoded(name, inputs, { ...query }, request);
  }
}
