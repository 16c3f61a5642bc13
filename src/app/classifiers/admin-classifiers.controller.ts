import {
  type BeforeApplicationShutdown,
  Body,
  Controller,
  Headers,
  HttpCode,
  Param,
  Post,
  Query,
  Res,
  UseGuards,
} from '@nestjs/common';
import {
  ApiAcceptedResponse,
  ApiBearerAuth,
  ApiBody,
  ApiHeader,
  ApiOkResponse,
  ApiOperation,
  ApiParam,
  ApiQuery,
  ApiTags,
} from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { isTerminal, type JobKind, type JobRecord } from '../../jobs/job-record.js';
import { AdminActor } from '../admin/admin-actor.decorator.js';
import { AdminTokenGuard } from '../admin/admin-token.guard.js';
import type { Actor } from '../admin/audit-log.js';
import { ApiErrors } from '../errors/api-errors.decorator.js';
import { ClientSignal } from '../http/client-signal.decorator.js';
import { JsonBody } from '../http/json-body.decorator.js';
import { idempotencyKey, intParam, view } from '../jobs/jobs.controller.js';
import { JobsService } from '../jobs/jobs.service.js';
import { Lifecycle } from '../lifecycle/lifecycle.service.js';
import { HeadJobDto, ProbeBodyDto, ProbeJobDto, TrainHeadBodyDto } from './classifiers.dto.js';

/** The longest `wait_seconds`: past it, follow the job at its Location. */
export const MAX_WAIT_SECONDS = 600;

const ABOUT_JOBS =
  'The body is the `spec` of the job (the same fields, checked by the same code as ' +
  '`POST /admin/v1/training-jobs`; errors name them `spec.<field>`); dataset paths resolve ' +
  'under the server’s DATA_ROOT. Answers 202 with the queued job and ' +
  '`Location: /admin/v1/training-jobs/{id}`; the job outlives this request (closing it stops ' +
  'nothing: cancel at `/admin/v1/training-jobs/{id}/cancel`). With `wait_seconds` the answer ' +
  'comes when the job has finished — 200 with the job, `succeeded` (its `result`), `failed` ' +
  '(`reason`, `message`: e.g. `bad_input` for a layer the stack lacks) or `cancelled` — or ' +
  'after that many seconds, or when the server starts shutting down: 202 with the job as it ' +
  'is then. With an `Idempotency-Key` header a retried request answers with the job the key ' +
  'first made (200 if it has finished, else 202), never a second one. Needs ' +
  '`Authorization: Bearer <ADMIN_TOKEN>`; without ADMIN_TOKEN set on the server, admin routes ' +
  'answer 404.';
const NAME = { name: 'name', description: 'Stack name', example: 'fashion-gim' };
const WAIT = {
  name: 'wait_seconds',
  required: false,
  schema: { type: 'integer', minimum: 0, maximum: MAX_WAIT_SECONDS },
  description: `0 (default: answer at once) to ${MAX_WAIT_SECONDS}: wait for the job to finish`,
} as const;
const KEY = { name: 'Idempotency-Key', required: false, description: 'At most 200 characters' };

/**
 * The two admin routes of head training and the layer sweep, kept for their clients: each is a
 * `head` / `probe` training job submitted in short (`POST /admin/v1/training-jobs`), with a way
 * to wait for its result. The request is not the job: the jobs controller runs it, durably.
 */
@ApiTags('admin')
@ApiBearerAuth()
@Controller('admin/v1/models/:name')
@UseGuards(AdminTokenGuard)
export class AdminClassifiersController implements BeforeApplicationShutdown {
  /** Aborts every wait when the service starts shutting down: the jobs go on without it. */
  private readonly drain = new AbortController();

  constructor(
    private readonly jobs: JobsService,
    lifecycle: Lifecycle,
  ) {
    lifecycle.onDrain(() => this.drain.abort());
  }

  /** Also when the app closes without a drain first (tests; a failed start-up). */
  beforeApplicationShutdown(): void {
    this.drain.abort();
  }

  @Post('classifiers')
  @JsonBody()
  @HttpCode(202)
  @ApiOperation({
    summary: 'Train and publish a head: a `head` training job',
    description: `Submits \`gim classifier train\` as a training job of kind \`head\`. ${ABOUT_JOBS}`,
  })
  @ApiParam(NAME)
  @ApiQuery(WAIT)
  @ApiHeader(KEY)
  @ApiBody({ type: TrainHeadBodyDto })
  @ApiAcceptedResponse({ type: HeadJobDto, description: 'The job, not finished yet' })
  @ApiOkResponse({ type: HeadJobDto, description: 'The job, finished (with its result)' })
  @ApiErrors(400, 401, 404, 409, 413, 415, 503)
  train(
    @Param('name') name: string,
    @Body() body: unknown,
    @Query('wait_seconds') wait: string | undefined,
    @Headers('idempotency-key') key: string | undefined,
    @AdminActor() actor: Actor,
    @ClientSignal() signal: AbortSignal,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<JobRecord> {
    return this.submit('head', name, body, { wait, key, actor, signal, reply });
  }

  @Post('probe')
  @JsonBody()
  @HttpCode(202)
  @ApiOperation({
    summary: 'Layer sweep: a `probe` training job (a linear probe per layer and pooling)',
    description:
      'Submits `gim probe` as a training job of kind `probe`: it fits one softmax probe per ' +
      '(layer, pooling) on frozen embeddings of the labelled data and scores it on `test_data` ' +
      '(or a stratified split; audio: held-out utterances per speaker); the accuracy per ' +
      `layer and the best layer are the job's \`result.summary\`. ${ABOUT_JOBS}`,
  })
  @ApiParam(NAME)
  @ApiQuery(WAIT)
  @ApiHeader(KEY)
  @ApiBody({ type: ProbeBodyDto })
  @ApiAcceptedResponse({ type: ProbeJobDto, description: 'The job, not finished yet' })
  @ApiOkResponse({ type: ProbeJobDto, description: 'The job, finished (with its result)' })
  @ApiErrors(400, 401, 404, 409, 413, 415, 503)
  probe(
    @Param('name') name: string,
    @Body() body: unknown,
    @Query('wait_seconds') wait: string | undefined,
    @Headers('idempotency-key') key: string | undefined,
    @AdminActor() actor: Actor,
    @ClientSignal() signal: AbortSignal,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<JobRecord> {
    return this.submit('probe', name, body, { wait, key, actor, signal, reply });
  }

  /** `{kind, model, spec: body}` submitted as the jobs route does; then, if asked, the wait. */
  private async submit(
    kind: JobKind,
    model: string,
    spec: unknown,
    req: {
      wait: string | undefined;
      key: string | undefined;
      actor: Actor;
      signal: AbortSignal;
      reply: FastifyReply;
    },
  ): Promise<JobRecord> {
    const seconds = intParam('wait_seconds', req.wait, 0, MAX_WAIT_SECONDS, 0);
    const { job } = await this.jobs.submit(
      { kind, model, spec },
      req.actor,
      idempotencyKey(req.key),
    );
    void req.reply.header('location', `/admin/v1/training-jobs/${job.id}`);
    const stop = AbortSignal.any([req.signal, this.drain.signal]);
    const latest =
      seconds === 0 || isTerminal(job.status) || stop.aborted
        ? job
        : await this.jobs.controller.waitFor(job.id, seconds * 1000, stop);
    if (isTerminal(latest.status)) void req.reply.status(200);
    return view(latest);
  }
}
