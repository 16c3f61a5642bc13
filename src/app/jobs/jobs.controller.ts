import {
  Body,
  Controller,
  Delete,
  Get,
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
  ApiNoContentResponse,
  ApiOkResponse,
  ApiOperation,
  ApiParam,
  ApiProduces,
  ApiQuery,
  ApiTags,
} from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { GimError } from '../../gim/errors.js';
import { JOB_STATUSES, type JobRecord, type JobStatus } from '../../jobs/job-record.js';
import { AdminActor } from '../admin/admin-actor.decorator.js';
import { AdminTokenGuard } from '../admin/admin-token.guard.js';
import { ApiErrors } from '../errors/api-errors.decorator.js';
import { ClientSignal } from '../http/client-signal.decorator.js';
import { JsonBody, optionalJsonObject } from '../http/json-body.decorator.js';
import { JobEventStream } from './job-event-stream.js';
import { CancelJobBodyDto, JobDto, JobListDto, JobPlanDto, SubmitJobBodyDto } from './jobs.dto.js';
import { JobsService } from './jobs.service.js';
import type { Actor } from '../admin/audit-log.js';

const JOB_ID = { name: 'id', description: 'Job id', example: '20261207-031502-3fa9c1' };
const MAX_WAIT_SECONDS = 300;
const MAX_PAGE = 500;

/**
 * Training jobs: submit (202, durable, idempotent with `Idempotency-Key`), validate, list, read,
 * follow (Server-Sent Events), read the log, cancel, retry, delete. Behind the admin token.
 */
@ApiTags('admin')
@ApiBearerAuth()
@Controller('admin/v1/training-jobs')
@UseGuards(AdminTokenGuard)
export class JobsController {
  constructor(private readonly jobs: JobsService) {}

  @Post()
  @JsonBody()
  @HttpCode(202)
  @ApiOperation({
    summary: 'Submit a training job (encoder, head or probe)',
    description:
      'Records the job and queues it: 202 with the job, then follow it at `/events`. The job ' +
      'runs the `gim` CLI (a local child process, or a Kubernetes Job) and outlives this ' +
      'request and this process. With an `Idempotency-Key` header a retried submit returns the ' +
      'job the key first made (200), never a second one.',
  })
  @ApiHeader({ name: 'Idempotency-Key', required: false, description: 'At most 200 characters' })
  @ApiBody({ type: SubmitJobBodyDto })
  @ApiAcceptedResponse({ type: JobDto, description: 'The queued job (200: an earlier submit)' })
  @ApiOkResponse({ type: JobDto, description: 'The job an earlier submit with this key made' })
  @ApiErrors(400, 401, 404, 409, 415, 503)
  async submit(
    @Body() body: unknown,
    @Headers('idempotency-key') key: string | undefined,
    @AdminActor() actor: Actor,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<JobRecord> {
    const { job, created } = await this.jobs.submit(body, actor, idempotencyKey(key));
    void reply.header('location', `/admin/v1/training-jobs/${job.id}`);
    if (!created) void reply.status(200);
    return view(job);
  }

  @Post('validate')
  @JsonBody()
  @HttpCode(200)
  @ApiOperation({
    summary: 'Check a job spec without running it',
    description: 'The command the job would run, or the 400 its submit would get.',
  })
  @ApiBody({ type: SubmitJobBodyDto })
  @ApiOkResponse({ type: JobPlanDto })
  @ApiErrors(400, 401, 404, 415)
  async validate(@Body() body: unknown): Promise<JobPlanDto> {
    const plan = await this.jobs.plan(body);
    return {
      kind: plan.kind,
      model: plan.model,
      spec: plan.spec,
      args: plan.args,
      ...(plan.promoteArgs ? { promote_args: plan.promoteArgs } : {}),
      timeout_seconds: plan.timeoutSeconds,
      max_resumes: plan.maxResumes,
      runner: this.jobs.controller.runnerKind,
    };
  }

  @Get()
  @ApiOperation({ summary: 'List jobs, newest first' })
  @ApiQuery({ name: 'model', required: false })
  @ApiQuery({ name: 'status', required: false, enum: JOB_STATUSES })
  @ApiQuery({ name: 'limit', required: false, description: `1 to ${MAX_PAGE} (default 50)` })
  @ApiQuery({ name: 'cursor', required: false, description: '`next_cursor` of the last page' })
  @ApiOkResponse({ type: JobListDto })
  @ApiErrors(400, 401, 404)
  async list(
    @Query('model') model?: string,
    @Query('status') status?: string,
    @Query('limit') limit?: string,
    @Query('cursor') cursor?: string,
  ): Promise<JobListDto> {
    if (status !== undefined && !(JOB_STATUSES as readonly string[]).includes(status))
      throw new GimError('invalid_argument', `status must be one of ${JOB_STATUSES.join(', ')}`);
    const size = intParam('limit', limit, 1, MAX_PAGE, 50);
    const all = (
      await this.jobs.list({
        ...(model !== undefined ? { model } : {}),
        ...(status !== undefined ? { status: status as JobStatus } : {}),
      })
    ).reverse();
    const start = cursor === undefined ? 0 : all.findIndex((j) => j.id === cursor) + 1;
    if (cursor !== undefined && start === 0)
      throw new GimError('invalid_argument', 'cursor: not a job of this listing');
    const jobs = all.slice(start, start + size);
    const last = jobs.at(-1);
    return {
      jobs: jobs.map(view) as unknown as JobDto[],
      ...(start + size < all.length && last ? { next_cursor: last.id } : {}),
    };
  }

  @Get(':id')
  @ApiOperation({
    summary: 'A job',
    description:
      'With `wait_seconds`, answers as soon as the job is finished (succeeded, failed or ' +
      'cancelled) or after that many seconds, whichever is first.',
  })
  @ApiParam(JOB_ID)
  @ApiQuery({ name: 'wait_seconds', required: false, description: `0 to ${MAX_WAIT_SECONDS}` })
  @ApiOkResponse({ type: JobDto })
  @ApiErrors(400, 401, 404)
  async get(
    @Param('id') id: string,
    @Query('wait_seconds') wait: string | undefined,
    @ClientSignal() signal: AbortSignal,
  ): Promise<JobRecord> {
    const seconds = intParam('wait_seconds', wait, 0, MAX_WAIT_SECONDS, 0);
    return view(await this.jobs.controller.waitFor(id, seconds * 1000, signal));
  }

  @Get(':id/events')
  @ApiOperation({
    summary: 'Follow a job: Server-Sent Events',
    description:
      'Every event of the job from the start (or after `Last-Event-ID` / `from`): `status`, ' +
      '`progress` (per-module InfoNCE loss, patches or frames per second, ETA), `epoch`, ' +
      "`checkpoint`, `log`, `published`, `result`; `id:` is the event's sequence number. A " +
      "`: ping` comment keeps idle connections open. The stream ends after the job's final " +
      'status with an `end` event.',
  })
  @ApiParam(JOB_ID)
  @ApiHeader({ name: 'Last-Event-ID', required: false })
  @ApiQuery({ name: 'from', required: false, description: 'Events after this sequence number' })
  @ApiQuery({ name: 'ping_ms', required: false, description: '1000 to 60000 (default 15000)' })
  @ApiProduces('text/event-stream')
  @ApiOkResponse({
    description: 'The events, as Server-Sent Events',
    content: { 'text/event-stream': { schema: { type: 'string' } } },
  })
  @ApiErrors(400, 401, 404)
  async events(
    @Param('id') id: string,
    @Headers('last-event-id') lastEventId: string | undefined,
    @Query('from') from: string | undefined,
    @Query('ping_ms') pingMs: string | undefined,
    @Res() reply: FastifyReply,
  ): Promise<void> {
    const after = intParam('Last-Event-ID', lastEventId ?? from, 0, Number.MAX_SAFE_INTEGER, 0);
    const ping = intParam('ping_ms', pingMs, 1000, 60_000, 15_000);
    await this.jobs.get(id); // a 404 before the stream starts
    await new JobEventStream(this.jobs.store, this.jobs.controller, id, after, ping).pipe(reply);
  }

  @Get(':id/logs')
  @ApiOperation({ summary: "The trainer's log (stdout and stderr of every attempt)" })
  @ApiParam(JOB_ID)
  @ApiQuery({ name: 'tail', required: false, description: 'Only the last n lines' })
  @ApiProduces('text/plain')
  @ApiOkResponse({
    description: 'The log, as text',
    content: { 'text/plain': { schema: { type: 'string' } } },
  })
  @ApiErrors(400, 401, 404)
  async logs(
    @Param('id') id: string,
    @Query('tail') tail: string | undefined,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<string> {
    await this.jobs.get(id);
    const lines = tail === undefined ? undefined : intParam('tail', tail, 1, 1_000_000, 100);
    void reply.type('text/plain; charset=utf-8');
    return this.jobs.store.readLog(id, lines);
  }

  @Post(':id/cancel')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Cancel a job',
    description:
      'Graceful by default: the trainer finishes its step, writes a checkpoint and stops ' +
      '(cancelling, then cancelled); `force` kills it. A queued job is cancelled at once. ' +
      'Retry resumes a cancelled job from its checkpoint.',
  })
  @ApiParam(JOB_ID)
  @ApiBody({ type: CancelJobBodyDto, required: false })
  @ApiAcceptedResponse({ type: JobDto })
  @ApiErrors(400, 401, 404, 409)
  async cancel(
    @Param('id') id: string,
    @Body() body: unknown,
    @AdminActor() actor: Actor,
  ): Promise<JobRecord> {
    const { force, reason } = cancelBody(body);
    return view(await this.jobs.cancel(id, actor, force, reason));
  }

  @Post(':id/retry')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Retry a failed, cancelled or interrupted job',
    description:
      'The same job, as a new attempt that resumes from its last checkpoint. A job that ' +
      'failed on bad input is a 409: fix the spec and submit a new job.',
  })
  @ApiParam(JOB_ID)
  @ApiAcceptedResponse({ type: JobDto })
  @ApiErrors(401, 404, 409)
  async retry(@Param('id') id: string, @AdminActor() actor: Actor): Promise<JobRecord> {
    return view(await this.jobs.retry(id, actor));
  }

  @Delete(':id')
  @HttpCode(204)
  @ApiOperation({
    summary: "Delete a finished job's record, events, log and checkpoints",
    description: 'Never deletes what the job published. A job not finished is a 409.',
  })
  @ApiParam(JOB_ID)
  @ApiNoContentResponse()
  @ApiErrors(401, 404, 409)
  async remove(@Param('id') id: string, @AdminActor() actor: Actor): Promise<void> {
    await this.jobs.remove(id, actor);
  }
}

/** An `Idempotency-Key` header, checked: 1 to 200 characters (or none). */
export function idempotencyKey(key: string | undefined): string | undefined {
  if (key !== undefined && (key.length === 0 || key.length > 200))
    throw new GimError('invalid_argument', 'Idempotency-Key must have 1 to 200 characters');
  return key;
}

/** A job record as the API shows it: without the controller's read offsets. */
export function view(job: JobRecord): JobRecord {
  return {
    ...job,
    attempts: job.attempts.map(({ progressOffset: _o, progressRead: _r, ...attempt }) => attempt),
  };
}

export function intParam(
  name: string,
  text: string | undefined,
  min: number,
  max: number,
  fallback: number,
): number {
  if (text === undefined || text === '') return fallback;
  if (!/^\d{1,16}$/.test(text) || Number(text) < min || Number(text) > max)
    throw new GimError('invalid_argument', `${name} must be an integer from ${min} to ${max}`);
  return Number(text);
}

function cancelBody(body: unknown): { force: boolean; reason?: string } {
  const fields = optionalJsonObject(body, '{"force", "reason"} or empty');
  if (fields === undefined) return { force: false };
  const { force, reason, ...rest } = fields;
  const unknown = Object.keys(rest);
  if (unknown.length > 0)
    throw new GimError('invalid_argument', 'unknown field: use force, reason');
  if (force !== undefined && typeof force !== 'boolean')
    throw new GimError('invalid_argument', '"force" must be true or false');
  if (reason !== undefined && (typeof reason !== 'string' || reason.length > 500))
    throw new GimError('invalid_argument', '"reason" must be a string of at most 500 characters');
  return { force: force === true, ...(typeof reason === 'string' ? { reason } : {}) };
}
