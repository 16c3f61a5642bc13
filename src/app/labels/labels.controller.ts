import {
  Body,
  Controller,
  Delete,
  Get,
  Headers,
  HttpCode,
  HttpException,
  Param,
  Post,
  Put,
  Query,
  Res,
  UseGuards,
} from '@nestjs/common';
import {
  ApiBearerAuth,
  ApiBody,
  ApiHeader,
  ApiOkResponse,
  ApiOperation,
  ApiParam,
  ApiProperty,
  ApiPropertyOptional,
  ApiQuery,
  ApiTags,
} from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { GimError } from '../../gim/errors.js';
import type { LabelState } from '../../gim/store/versioned-dir.js';
import { AdminActor } from '../admin/admin-actor.decorator.js';
import type { Actor } from '../admin/audit-log.js';
import { AdminTokenGuard } from '../admin/admin-token.guard.js';
import { ApiErrors } from '../errors/api-errors.decorator.js';
import { JsonBody, optionalJsonObject } from '../http/json-body.decorator.js';
import { type LabelOwner, LabelsService, type MoveRequest } from './labels.service.js';

class LabelMoveDto {
  @ApiProperty() at!: string;
  @ApiProperty({ description: 'Who: `token:<hash>`, `publish`, or `cli`' }) by!: string;
  @ApiProperty() label!: string;
  @ApiProperty({ type: Number, nullable: true, description: 'null: the label was unset' })
  from!: number | null;
  @ApiProperty({ type: Number, nullable: true, description: 'null: the label was deleted' })
  to!: number | null;
  @ApiPropertyOptional() reason?: string;
  @ApiPropertyOptional({ type: 'object', additionalProperties: true }) gate?: Record<
    string,
    unknown
  >;
}

export class LabelsDto {
  @ApiProperty({
    type: 'object',
    additionalProperties: { type: 'integer' },
    example: { latest: 3, stable: 2 },
  })
  labels!: Record<string, number>;
  @ApiProperty({
    description: 'Send it back in If-Match to move a label',
    example: '"3f9c0a1b2c3d4e5f6a7b"',
  })
  etag!: string;
  @ApiProperty({
    type: [LabelMoveDto],
    description: 'Moves, oldest first (the last `history` ones)',
  })
  history!: LabelMoveDto[];
}

const STRAND_HEADS = {
  description:
    'Stack `stable` only: move even if heads that serve through it fit no version of the new ' +
    'target (otherwise 409 naming them; retrain them with a promote job instead)',
};

class SetLabelBodyDto {
  @ApiProperty({ example: 3 }) version!: number;
  @ApiPropertyOptional({ description: 'Why, for the history and the audit log' }) reason?: string;
  @ApiPropertyOptional(STRAND_HEADS) strand_heads?: boolean;
}

class ReasonBodyDto {
  @ApiPropertyOptional() reason?: string;
  @ApiPropertyOptional(STRAND_HEADS) strand_heads?: boolean;
}

const IF_MATCH = {
  name: 'If-Match',
  required: true,
  description: 'The ETag of the labels as you read them (412 if they changed since), or `*`',
};
const HISTORY = {
  name: 'history',
  required: false,
  description: 'Moves to return, newest kept (default 100)',
};

/**
 * Labels of stacks and heads as an admin resource (ETag, history, compare-and-set moves,
 * rollback). Two operators cannot overwrite each other: every change needs If-Match.
 */
@ApiTags('admin')
@ApiBearerAuth()
@Controller('admin/v1/models/:name')
@UseGuards(AdminTokenGuard)
export class LabelsController {
  constructor(private readonly labels: LabelsService) {}

  @Get('labels')
  @ApiOperation({ summary: "A stack's labels, their ETag and their history" })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiQuery(HISTORY)
  @ApiOkResponse({ type: LabelsDto })
  @ApiErrors(400, 401, 404)
  async stackLabels(
    @Param('name') name: string,
    @Query('history') history: string | undefined,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<LabelsDto> {
    return respond(reply, await this.labels.read({ model: name }), history);
  }

  @Put('labels/:label')
  @JsonBody()
  @ApiOperation({
    summary: 'Point a stack label at a version',
    description:
      'Loads and warms up the version in this replica first (its golden embeddings checked), ' +
      'then moves the label if the labels still have the ETag given in If-Match; other replicas ' +
      'switch within REF_CACHE_MS, each once it has loaded the version, so no request waits on ' +
      'a cold load.',
  })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiParam({ name: 'label', example: 'stable' })
  @ApiHeader(IF_MATCH)
  @ApiBody({ type: SetLabelBodyDto })
  @ApiOkResponse({ type: LabelsDto })
  @ApiErrors(400, 401, 404, 409, 412, 428, 503)
  async setStackLabel(
    @Param('name') name: string,
    @Param('label') label: string,
    @Body() body: unknown,
    @Headers('if-match') ifMatch: string | undefined,
    @AdminActor() actor: Actor,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<LabelsDto> {
    const { version, reason, strandHeads } = moveBody(body, true);
    return respond(
      reply,
      await this.labels.set(
        { model: name },
        label,
        version,
        request(ifMatch, reason, strandHeads),
        actor,
      ),
    );
  }

  @Delete('labels/:label')
  @ApiOperation({ summary: "Delete a stack label (not 'latest')" })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiParam({ name: 'label', example: 'candidate' })
  @ApiHeader(IF_MATCH)
  @ApiQuery({ name: 'reason', required: false })
  @ApiOkResponse({ type: LabelsDto })
  @ApiErrors(400, 401, 404, 409, 412, 428)
  async deleteStackLabel(
    @Param('name') name: string,
    @Param('label') label: string,
    @Query('reason') reason: string | undefined,
    @Headers('if-match') ifMatch: string | undefined,
    @AdminActor() actor: Actor,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<LabelsDto> {
    return respond(
      reply,
      await this.labels.remove({ model: name }, label, request(ifMatch, reason), actor),
    );
  }

  @Post('labels/:label/rollback')
  @HttpCode(200)
  @ApiOperation({ summary: 'Move a stack label back to its previous target (from its history)' })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiParam({ name: 'label', example: 'stable' })
  @ApiHeader(IF_MATCH)
  @ApiBody({ type: ReasonBodyDto, required: false })
  @ApiOkResponse({ type: LabelsDto })
  @ApiErrors(400, 401, 404, 409, 412, 428, 503)
  async rollbackStackLabel(
    @Param('name') name: string,
    @Param('label') label: string,
    @Body() body: unknown,
    @Headers('if-match') ifMatch: string | undefined,
    @AdminActor() actor: Actor,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<LabelsDto> {
    const { reason, strandHeads } = moveBody(body, false);
    return respond(
      reply,
      await this.labels.rollback(
        { model: name },
        label,
        request(ifMatch, reason, strandHeads),
        actor,
      ),
    );
  }

  @Get('classifiers/:head/labels')
  @ApiOperation({ summary: "A head's labels, their ETag and their history" })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiParam({ name: 'head', example: 'clothes' })
  @ApiQuery(HISTORY)
  @ApiOkResponse({ type: LabelsDto })
  @ApiErrors(400, 401, 404)
  async headLabels(
    @Param('name') name: string,
    @Param('head') head: string,
    @Query('history') history: string | undefined,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<LabelsDto> {
    return respond(reply, await this.labels.read({ model: name, head }), history);
  }

  @Put('classifiers/:head/labels/:label')
  @JsonBody()
  @ApiOperation({ summary: 'Point a head label at a head version' })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiParam({ name: 'head', example: 'clothes' })
  @ApiParam({ name: 'label', example: 'stable' })
  @ApiHeader(IF_MATCH)
  @ApiBody({ type: SetLabelBodyDto })
  @ApiOkResponse({ type: LabelsDto })
  @ApiErrors(400, 401, 404, 412, 428)
  async setHeadLabel(
    @Param('name') name: string,
    @Param('head') head: string,
    @Param('label') label: string,
    @Body() body: unknown,
    @Headers('if-match') ifMatch: string | undefined,
    @AdminActor() actor: Actor,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<LabelsDto> {
    const { version, reason } = moveBody(body, true);
    return respond(
      reply,
      await this.labels.set(owner(name, head), label, version, request(ifMatch, reason), actor),
    );
  }

  @Delete('classifiers/:head/labels/:label')
  @ApiOperation({ summary: "Delete a head label (not 'latest')" })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiParam({ name: 'head', example: 'clothes' })
  @ApiParam({ name: 'label', example: 'candidate' })
  @ApiHeader(IF_MATCH)
  @ApiQuery({ name: 'reason', required: false })
  @ApiOkResponse({ type: LabelsDto })
  @ApiErrors(400, 401, 404, 409, 412, 428)
  async deleteHeadLabel(
    @Param('name') name: string,
    @Param('head') head: string,
    @Param('label') label: string,
    @Query('reason') reason: string | undefined,
    @Headers('if-match') ifMatch: string | undefined,
    @AdminActor() actor: Actor,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<LabelsDto> {
    return respond(
      reply,
      await this.labels.remove(owner(name, head), label, request(ifMatch, reason), actor),
    );
  }

  @Post('classifiers/:head/labels/:label/rollback')
  @HttpCode(200)
  @ApiOperation({ summary: 'Move a head label back to its previous target' })
  @ApiParam({ name: 'name', example: 'fashion-gim' })
  @ApiParam({ name: 'head', example: 'clothes' })
  @ApiParam({ name: 'label', example: 'stable' })
  @ApiHeader(IF_MATCH)
  @ApiBody({ type: ReasonBodyDto, required: false })
  @ApiOkResponse({ type: LabelsDto })
  @ApiErrors(400, 401, 404, 409, 412, 428)
  async rollbackHeadLabel(
    @Param('name') name: string,
    @Param('head') head: string,
    @Param('label') label: string,
    @Body() body: unknown,
    @Headers('if-match') ifMatch: string | undefined,
    @AdminActor() actor: Actor,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<LabelsDto> {
    const { reason } = moveBody(body, false);
    return respond(
      reply,
      await this.labels.rollback(owner(name, head), label, request(ifMatch, reason), actor),
    );
  }
}

function owner(model: string, head: string): LabelOwner {
  return { model, head };
}

function request(
  ifMatch: string | undefined,
  reason: string | undefined,
  strandHeads?: boolean,
): MoveRequest {
  if (ifMatch === undefined || ifMatch.trim() === '')
    throw new HttpException(
      'If-Match is required: send the ETag of the labels as you read them (GET .../labels), or * to move regardless',
      428,
    );
  if (reason !== undefined && reason.length > 500)
    throw new GimError('invalid_argument', 'reason: at most 500 characters');
  return {
    ifMatch: ifMatch.trim(),
    ...(reason !== undefined ? { reason } : {}),
    ...(strandHeads === true ? { strandHeads } : {}),
  };
}

function moveBody(
  body: unknown,
  needsVersion: boolean,
): { version?: unknown; reason?: string; strandHeads?: boolean } {
  const fields = optionalJsonObject(body, '{"version": n, "reason"?: "..."}');
  if (fields === undefined) {
    if (needsVersion)
      throw new GimError(
        'invalid_argument',
        'the body must be a JSON object {"version": n, "reason"?: "..."}',
      );
    return {};
  }
  const { version, reason, strand_heads: strandHeads, ...rest } = fields;
  const allowed = needsVersion ? 'version, reason, strand_heads' : 'reason, strand_heads';
  if (Object.keys(rest).length > 0 || (!needsVersion && version !== undefined))
    throw new GimError('invalid_argument', `unknown field: use ${allowed}`);
  if (reason !== undefined && typeof reason !== 'string')
    throw new GimError('invalid_argument', '"reason" must be a string');
  if (strandHeads !== undefined && typeof strandHeads !== 'boolean')
    throw new GimError('invalid_argument', '"strand_heads" must be true or false');
  return {
    version,
    ...(typeof reason === 'string' ? { reason } : {}),
    ...(strandHeads === true ? { strandHeads } : {}),
  };
}

function respond(reply: FastifyReply, state: LabelState, history?: string): LabelsDto {
  let keep = 100;
  if (history !== undefined) {
    if (!/^\d{1,7}$/.test(history))
      throw new GimError('invalid_argument', 'history must be an integer from 0 to 1000000');
    keep = Number(history);
  }
  void reply.header('etag', state.etag);
  return {
    labels: state.labels,
    etag: state.etag,
    history: keep === 0 ? [] : state.history.slice(-keep),
  };
}
