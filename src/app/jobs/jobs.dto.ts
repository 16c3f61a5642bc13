import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { FAILURE_REASONS, JOB_KINDS, JOB_STATUSES } from '../../jobs/job-record.js';

export class SubmitJobBodyDto {
  @ApiProperty({ enum: JOB_KINDS, example: 'encoder' })
  kind!: string;
  @ApiProperty({
    description: 'The stack trained (encoder), or the stack the head or probe is for',
    example: 'fashion-gim',
  })
  model!: string;
  @ApiProperty({
    description:
      "The command's options in snake_case, as the `gim` CLI takes them. encoder: `modality` " +
      '(image|audio), `data` (required), `epochs`, `batch_size`, `lr`, `seed`, `schedule`, ' +
      '`negatives`, `max_steps_per_epoch`, `parent` (a version or label of the same stack) with ' +
      '`from_module`, `labels` (default ["latest"]); image: `channels` [16,32,64], `modules`, ' +
      '`conv_route`, `height`, `width`, `image_channels`; audio: `channels`, `gru_units`, ' +
      '`window`, `normalize`, `hold_out`. head: `name`, `data`, `layer` (required), `test_data`, ' +
      '`pooling`, `normalize`, `epochs`, `batch_size`, `lr`, `l2`, `class_weights`, ' +
      '`val_fraction`, `patience`, `early_stopping` (accuracy|loss), `seed`, `labels`, `version` or ' +
      '`label` of the stack. probe: ' +
      '`data` (required), `test_data`, `layers`, `pooling`, `epochs`, `limit`, `test_fraction`, ' +
      '`seed`, `version` or `label`. promote: `version` (required: the candidate), `label` ' +
      '(default stable), `gate` {`data` (required), `test_data`, `layers`, `pooling`, `epochs`, ' +
      '`limit`, `seed`, `test_fraction`, `margin`}, `retrain_heads`, `dry_run`, `reason`; an ' +
      'encoder job takes the same (without `version`) as `promote` to promote the version it ' +
      "publishes. Dataset paths are relative to the server's DATA_ROOT.",
    type: 'object',
    additionalProperties: true,
    example: { modality: 'image', data: 'fashion-mnist', epochs: 1, labels: ['latest'] },
  })
  spec!: Record<string, unknown>;
  @ApiPropertyOptional({ description: 'Deadline of each attempt (default JOB_TIMEOUT_SECONDS)' })
  timeout_seconds?: number;
  @ApiPropertyOptional({
    description: 'Automatic resumes after an interruption (default JOB_MAX_RESUMES)',
  })
  max_resumes?: number;
}

export class CancelJobBodyDto {
  @ApiPropertyOptional({
    description: 'Kill the trainer at once instead of letting it checkpoint and stop',
    default: false,
  })
  force?: boolean;
  @ApiPropertyOptional({ description: 'Why, for the job record and the audit log' })
  reason?: string;
}

class JobAttemptDto {
  @ApiProperty() n!: number;
  @ApiProperty() resume!: boolean;
  @ApiProperty() startedAt!: string;
  @ApiPropertyOptional() endedAt?: string;
  @ApiPropertyOptional({ description: 'Local runner: pid; kubernetes: Job name' })
  runnerRef?: string;
  @ApiPropertyOptional({ type: Number, nullable: true }) exitCode?: number | null;
  @ApiPropertyOptional({ type: String, nullable: true }) signal?: string | null;
  @ApiPropertyOptional({ enum: JOB_STATUSES }) outcome?: string;
  @ApiPropertyOptional() message?: string;
}

class JobProgressDto {
  @ApiProperty() phase!: number;
  @ApiProperty() phases!: number;
  @ApiProperty({ type: Number, nullable: true, description: 'Sequential schedule: the module' })
  module!: number | null;
  @ApiProperty() epoch!: number;
  @ApiProperty() epochs!: number;
  @ApiProperty() step!: number;
  @ApiProperty() stepsPerEpoch!: number;
  @ApiProperty() globalStep!: number;
  @ApiProperty() totalSteps!: number;
  @ApiProperty({
    description: 'InfoNCE loss per module (null where not trained)',
    type: 'array',
    items: { type: 'number', nullable: true },
  })
  losses!: (number | null)[];
  @ApiProperty({ description: 'Patches (image) or frames (audio) per second' })
  unitsPerSecond!: number;
  @ApiProperty() unitName!: string;
  @ApiProperty({ description: 'Images or clips per second' }) itemsPerSecond!: number;
  @ApiProperty() etaSeconds!: number;
  @ApiPropertyOptional({ description: 'Head fits: the validation loss' }) validationLoss?: number;
  @ApiProperty() at!: string;
}

class JobCancelDto {
  @ApiProperty({ description: 'Kill instead of checkpoint-and-stop' }) force!: boolean;
  @ApiProperty() requestedAt!: string;
  @ApiProperty({ description: 'Who asked: `token:<hash>`' }) by!: string;
  @ApiPropertyOptional() reason?: string;
}

export class JobDto {
  @ApiProperty({ example: '20261207-031502-3fa9c1' }) id!: string;
  @ApiProperty({ enum: JOB_KINDS }) kind!: string;
  @ApiProperty() model!: string;
  @ApiProperty({ type: 'object', additionalProperties: true }) spec!: Record<string, unknown>;
  @ApiProperty({ description: 'The gim CLI arguments the spec stands for', type: [String] })
  args!: string[];
  @ApiPropertyOptional({
    description:
      'Encoder jobs with `spec.promote`: the `gim promote` arguments run after publishing',
    type: [String],
  })
  promoteArgs?: string[];
  @ApiProperty({ enum: ['local', 'kubernetes'] }) runner!: string;
  @ApiProperty({ enum: JOB_STATUSES }) status!: string;
  @ApiPropertyOptional({ enum: FAILURE_REASONS, description: 'With status failed' })
  reason?: string;
  @ApiPropertyOptional() message?: string;
  @ApiProperty() timeoutSeconds!: number;
  @ApiProperty() maxResumes!: number;
  @ApiProperty() resumes!: number;
  @ApiProperty({ type: [JobAttemptDto] }) attempts!: JobAttemptDto[];
  @ApiPropertyOptional({ type: JobProgressDto }) progress?: JobProgressDto;
  @ApiPropertyOptional({
    description:
      "`published` {kind, name, version, labels}, the trainer's `summary`, and `promotion` " +
      '{promoted, dryRun, wouldPromote?, model, version, label, from, gate?, strandedHeads, ' +
      'retrained?}',
    type: 'object',
    additionalProperties: true,
  })
  result?: Record<string, unknown>;
  @ApiPropertyOptional({ type: JobCancelDto, description: 'A cancel that was asked for' })
  cancel?: JobCancelDto;
  @ApiPropertyOptional({ description: 'The Idempotency-Key of its submit' })
  idempotencyKey?: string;
  @ApiProperty() createdBy!: string;
  @ApiProperty() createdAt!: string;
  @ApiProperty() updatedAt!: string;
  @ApiPropertyOptional() startedAt?: string;
  @ApiPropertyOptional() finishedAt?: string;
}

export class JobListDto {
  @ApiProperty({ type: [JobDto], description: 'Newest first' }) jobs!: JobDto[];
  @ApiPropertyOptional({ description: 'Pass as `cursor` for the next page; absent on the last' })
  next_cursor?: string;
}

export class JobPlanDto {
  @ApiProperty({ enum: JOB_KINDS }) kind!: string;
  @ApiProperty() model!: string;
  @ApiProperty({ type: 'object', additionalProperties: true }) spec!: Record<string, unknown>;
  @ApiProperty({ type: [String], description: 'The gim command the job would run' })
  args!: string[];
  @ApiPropertyOptional({
    type: [String],
    description: 'Encoder jobs with `spec.promote`: the `gim promote` arguments after publishing',
  })
  promote_args?: string[];
  @ApiProperty() timeout_seconds!: number;
  @ApiProperty() max_resumes!: number;
  @ApiProperty({ enum: ['local', 'kubernetes'] }) runner!: string;
}
