import {
  ApiProperty,
  type ApiPropertyOptions,
  ApiPropertyOptional,
  OmitType,
} from '@nestjs/swagger';
import { POOLINGS } from '../../gim/encoders/pooling.js';
import { Base64InputDto } from '../embeddings/embeddings.dto.js';
import { JobDto } from '../jobs/jobs.dto.js';

const HEAD_VERSION =
  'Head version number or label (default: the head’s label `stable`, else `latest`)';
const ENCODER_VERSION =
  'Stack version number (default: the version the head was trained on). Any version giving the ' +
  'head’s embedding space at its layer works; another is a 409 `conflict`.';
const TOP_K = 'Classes per item, most probable first (default 5, capped at the class count)';

/** Options in the query string (also accepted as JSON body fields or multipart text fields). */
export class ClassifyQueryDto {
  @ApiPropertyOptional({ description: HEAD_VERSION, example: 'stable', type: String })
  head_version?: string;
  @ApiPropertyOptional({ description: ENCODER_VERSION, example: 1, type: Number })
  version?: string;
  @ApiPropertyOptional({ description: 'Stack label instead of a version', example: 'stable' })
  label?: string;
  @ApiPropertyOptional({ description: TOP_K, example: 3, type: Number, minimum: 1 })
  top_k?: string;
}

export class ClassifyJsonBodyDto {
  @ApiProperty({ type: [Base64InputDto], minItems: 1, description: 'At most MAX_ITEMS items' })
  inputs!: Base64InputDto[];
  @ApiPropertyOptional({
    description: HEAD_VERSION,
    oneOf: [{ type: 'integer' }, { type: 'string' }],
  })
  head_version?: number | string;
  @ApiPropertyOptional({ description: ENCODER_VERSION, type: Number })
  version?: number;
  @ApiPropertyOptional()
  label?: string;
  @ApiPropertyOptional({ description: TOP_K, type: Number, minimum: 1 })
  top_k?: number;
}

export class HeadVersionQueryDto {
  @ApiPropertyOptional({ description: HEAD_VERSION, example: 'stable', type: String })
  version?: string;
}

export class LabelScoreDto {
  @ApiProperty({ example: 'Sneaker' })
  label!: string;
  @ApiProperty({
    description: 'Softmax probability; over all classes an item’s scores sum to 1',
    example: 0.93,
  })
  score!: number;
}

export class ClassifyResponseDto {
  @ApiProperty({ example: 'fashion-gim' })
  model!: string;
  @ApiProperty({ description: 'The stack version that embedded the items', example: 1 })
  version!: number;
  @ApiProperty({ example: 'clothes' })
  head!: string;
  @ApiProperty({ example: 1 })
  head_version!: number;
  @ApiProperty({ description: 'The layer the head reads (from its manifest)', example: 3 })
  layer!: number;
  @ApiProperty({ enum: POOLINGS })
  pooling!: string;
  @ApiProperty({ description: 'Whether pooled vectors are L2-normalised before the head' })
  normalize!: boolean;
  @ApiProperty({ description: 'Number of items classified' })
  items!: number;
  @ApiProperty({
    type: 'array',
    items: { type: 'array', items: { $ref: '#/components/schemas/LabelScoreDto' } },
    description: 'Per item, in request order: the top_k classes, most probable first',
  })
  results!: LabelScoreDto[][];
}

class HeadEncoderSummaryDto {
  @ApiProperty({ description: 'Stack version the head was trained on', example: 1 })
  version!: number;
  @ApiProperty({ example: 3 })
  layer!: number;
  @ApiProperty({ enum: POOLINGS })
  pooling!: string;
  @ApiProperty()
  normalize!: boolean;
}

class HeadAccuracyDto {
  @ApiProperty()
  train!: number;
  @ApiProperty({ type: Number, nullable: true })
  validation!: number | null;
  @ApiProperty({ type: Number, nullable: true })
  test!: number | null;
}

export class HeadVersionSummaryDto {
  @ApiProperty({ example: 1 })
  version!: number;
  @ApiProperty({ type: [String], example: ['latest', 'stable'] })
  labels!: string[];
  @ApiProperty({ type: HeadEncoderSummaryDto })
  encoder!: HeadEncoderSummaryDto;
  @ApiProperty({ description: 'The embedding space the head needs' })
  embedding_space_id!: string;
  @ApiProperty({ type: [String] })
  classes!: string[];
  @ApiProperty({ type: HeadAccuracyDto })
  accuracy!: HeadAccuracyDto;
  @ApiProperty()
  created_at!: string;
}

export class HeadSummaryDto {
  @ApiProperty({ example: 'clothes' })
  name!: string;
  @ApiProperty({
    type: 'object',
    additionalProperties: { type: 'integer' },
    example: { latest: 1 },
  })
  labels!: Record<string, number>;
  @ApiProperty({ description: 'Used when a request names no head version', example: 1 })
  default_version!: number;
  @ApiProperty({ type: [HeadVersionSummaryDto] })
  versions!: HeadVersionSummaryDto[];
}

/** The stored manifest (format `gim-head/1`), documented by its main fields. */
export class HeadManifestDto {
  @ApiProperty({ example: 'gim-head/1' })
  format!: string;
  @ApiProperty({ example: 'clothes' })
  name!: string;
  @ApiProperty({ example: 1 })
  version!: number;
  @ApiProperty({
    type: 'object',
    additionalProperties: true,
    description:
      'The embeddings the head takes: {name, version, modality, layer, pooling, normalize, ' +
      'embeddingSpaceId}',
  })
  encoder!: Record<string, unknown>;
  @ApiProperty({ type: [String], description: 'Output i of the head is classes[i]' })
  classes!: string[];
  @ApiProperty()
  featureDim!: number;
  @ApiProperty({ type: 'object', additionalProperties: true })
  training!: Record<string, unknown>;
  @ApiProperty({
    type: 'object',
    additionalProperties: true,
    description:
      'train / validation / test (null when not scored): accuracy, loss, macroF1, perClass ' +
      '[{label, precision, recall, f1, support}], confusion (rows: true class); epochs, bestEpoch',
  })
  metrics!: Record<string, unknown>;
  @ApiProperty({ type: 'array', items: { type: 'object' }, nullable: true })
  layerSearch!: unknown[] | null;
  @ApiProperty({ type: 'object', additionalProperties: true })
  data!: Record<string, unknown>;
  @ApiProperty()
  backend!: string;
  @ApiProperty()
  createdAt!: string;
}

const DATA_PATH =
  "A path relative to the server's DATA_ROOT (an absolute path or one leaving it is a 400), or " +
  '`fashion-mnist` / `fashion-mnist-test` (the Debian install)';
const LIST = 'A list is an array, or one string or number (no commas inside an item)';

/** The body of `POST /admin/v1/models/{name}/classifiers`: the `spec` of a `head` job. */
export class TrainHeadBodyDto {
  @ApiProperty({ description: 'Head name (versions are numbered under it)', example: 'clothes' })
  name!: string;
  @ApiProperty({
    description:
      'Labelled data: a directory of IDX files, an image folder with one sub-folder per class, ' +
      `a speaker folder (audio), or a .csv/.json file list. ${DATA_PATH}`,
    example: 'fashion-mnist',
  })
  data!: string;
  @ApiPropertyOptional({ description: `Labelled data to score the head on. ${DATA_PATH}` })
  test_data?: string;
  @ApiProperty({
    description: `Layer 1..K or last; best or a list ([2, 3]): the best on validation. ${LIST}`,
    oneOf: [{ type: 'integer' }, { type: 'string' }, { type: 'array', items: {} }],
    example: 3,
  })
  layer!: number | string | (number | string)[];
  @ApiPropertyOptional({
    description: 'Pooling, or a list to choose from on validation (default mean)',
    oneOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }],
    example: 'grid2',
  })
  pooling?: string | string[];
  @ApiPropertyOptional({ description: 'L2-normalise pooled vectors before the head' })
  normalize?: boolean;
  @ApiPropertyOptional({ description: 'Stack version to train on (default: its default)' })
  version?: number;
  @ApiPropertyOptional({ description: 'Stack label instead of a version' })
  label?: string;
  @ApiPropertyOptional({ example: 30 })
  epochs?: number;
  @ApiPropertyOptional()
  batch_size?: number;
  @ApiPropertyOptional()
  lr?: number;
  @ApiPropertyOptional()
  l2?: number;
  @ApiPropertyOptional({
    description: 'none, balanced, or one weight per class in sorted class-name order',
    oneOf: [{ type: 'string' }, { type: 'array', items: { type: 'number' } }],
  })
  class_weights?: string | number[];
  @ApiPropertyOptional()
  val_fraction?: number;
  @ApiPropertyOptional()
  patience?: number;
  @ApiPropertyOptional()
  seed?: number;
  @ApiPropertyOptional({
    type: [String],
    description: 'Labels to point at the new version (default [latest])',
  })
  labels?: string[];
}

/** The body of `POST /admin/v1/models/{name}/probe`: the `spec` of a `probe` job. */
export class ProbeBodyDto {
  @ApiProperty({
    description: `Labelled data (as for head training); audio: a speaker folder, split by utterance. ${DATA_PATH}`,
    example: 'fashion-mnist',
  })
  data!: string;
  @ApiPropertyOptional({
    description: `Labelled test data (default: a stratified split of data). ${DATA_PATH}`,
  })
  test_data?: string;
  @ApiPropertyOptional({
    description: `all (default), last, or a list of layers. ${LIST}`,
    oneOf: [{ type: 'string' }, { type: 'integer' }, { type: 'array', items: {} }],
    example: 'all',
  })
  layers?: string | number | (number | string)[];
  @ApiPropertyOptional({
    description: 'Poolings to compare (images default mean,grid2,none; audio mean,max)',
    oneOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }],
  })
  pooling?: string | string[];
  @ApiPropertyOptional({ example: 20 }) epochs?: number;
  @ApiPropertyOptional({ description: 'At most this many training items (stratified)' })
  limit?: number;
  @ApiPropertyOptional({ description: 'Audio: held-out share of each speaker (default 0.2)' })
  test_fraction?: number;
  @ApiPropertyOptional() seed?: number;
  @ApiPropertyOptional({ description: 'Stack version (default: its default)' }) version?: number;
  @ApiPropertyOptional({ description: 'Stack label instead of a version' }) label?: string;
}

export class ProbeRowDto {
  @ApiProperty() layer!: number;
  @ApiProperty({ enum: POOLINGS }) pooling!: string;
  @ApiProperty() dim!: number;
  @ApiProperty() trainAccuracy!: number;
  @ApiProperty() testAccuracy!: number;
}

/** What `gim probe` reports: a job's `result.summary`. */
export class ProbeReportDto {
  @ApiProperty() model!: string;
  @ApiProperty() version!: number;
  @ApiProperty({ type: [ProbeRowDto] }) rows!: ProbeRowDto[];
  @ApiProperty({ type: ProbeRowDto, description: 'The row with the best test accuracy' })
  best!: ProbeRowDto;
}

/** A head's scores on one set. Inline, not a `$ref`: a `$ref` cannot be nullable in OpenAPI 3.0. */
function headScore(description: string, nullable: boolean): ApiPropertyOptions {
  return {
    description,
    type: 'object',
    nullable,
    properties: {
      accuracy: { type: 'number' },
      loss: { type: 'number' },
      macroF1: { type: 'number' },
      items: { type: 'integer' },
    },
    required: ['accuracy', 'loss', 'macroF1', 'items'],
  };
}
interface HeadScore {
  accuracy: number;
  loss: number;
  macroF1: number;
  items: number;
}

class HeadScoresDto {
  @ApiProperty(headScore('On the training items', false)) train!: HeadScore;
  @ApiProperty(headScore('Null without a validation split', true)) validation!: HeadScore | null;
  @ApiProperty(headScore('Null without test_data', true)) test!: HeadScore | null;
}

/** What `gim classifier train` reports: a head job's `result.summary`. */
export class HeadTrainingSummaryDto {
  @ApiProperty({ description: 'The stack' }) model!: string;
  @ApiProperty({ description: 'The stack version the head reads' }) modelVersion!: number;
  @ApiProperty() layer!: number;
  @ApiProperty({ enum: POOLINGS }) pooling!: string;
  @ApiProperty({ type: [String] }) classes!: string[];
  @ApiProperty() epochs!: number;
  @ApiProperty() bestEpoch!: number;
  @ApiProperty({ type: HeadScoresDto }) metrics!: HeadScoresDto;
}

class PublishedHeadDto {
  @ApiProperty({ enum: ['head'] }) kind!: string;
  @ApiProperty({ description: 'The head name' }) name!: string;
  @ApiProperty() version!: number;
  @ApiProperty({ type: [String] }) labels!: string[];
}

/** A head job's `result`. */
export class HeadJobResultDto {
  @ApiPropertyOptional({
    type: PublishedHeadDto,
    description:
      'The head version published (its manifest: GET /v1/models/{name}/classifiers/{head}?version=)',
  })
  published?: PublishedHeadDto;
  @ApiPropertyOptional({ type: HeadTrainingSummaryDto }) summary?: HeadTrainingSummaryDto;
}

/** A probe job's `result`. */
export class ProbeJobResultDto {
  @ApiPropertyOptional({ type: ProbeReportDto, description: 'Accuracy per layer and pooling' })
  summary?: ProbeReportDto;
}

/** A head job, as the jobs API shows it, with its `result` spelled out. */
export class HeadJobDto extends OmitType(JobDto, ['result'] as const) {
  @ApiPropertyOptional({ type: HeadJobResultDto, description: 'Once the job has succeeded' })
  result?: HeadJobResultDto;
}

/** A probe job, as the jobs API shows it, with its `result` spelled out. */
export class ProbeJobDto extends OmitType(JobDto, ['result'] as const) {
  @ApiPropertyOptional({ type: ProbeJobResultDto, description: 'Once the job has succeeded' })
  result?: ProbeJobResultDto;
}
