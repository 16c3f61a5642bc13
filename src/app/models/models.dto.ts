import { ApiProperty, type ApiPropertyOptions, ApiPropertyOptional } from '@nestjs/swagger';
import { POOLINGS } from '../../gim/encoders/pooling.js';

const LABELS_SCHEMA = {
  type: 'object',
  additionalProperties: { type: 'integer' },
  description: 'label -> version',
  example: { latest: 2, stable: 1 },
} as const;

export class ModelSummaryDto {
  @ApiProperty({ example: 'fashion-gim' })
  name!: string;

  @ApiProperty({ enum: ['image', 'audio'] })
  modality!: string;

  @ApiProperty({ type: [Number], example: [1, 2] })
  versions!: number[];

  @ApiProperty(LABELS_SCHEMA)
  labels!: Record<string, number>;

  @ApiProperty({ description: 'What a request without version or label gets: stable, else latest' })
  default_version!: number;
}

export class UnavailableModelDto {
  @ApiProperty({ example: 'fashion-gim' })
  name!: string;

  @ApiProperty({
    description: 'What is damaged on disk, relative to the models directory',
    example:
      "stack 'fashion-gim' is unavailable: fashion-gim/labels.json is not valid JSON; fix or " +
      'remove that file (without it, the highest version is the default)',
  })
  error!: string;

  @ApiProperty({ enum: ['model_unavailable'] })
  error_type!: string;
}

export class ModelListDto {
  @ApiProperty({ type: [ModelSummaryDto] })
  models!: ModelSummaryDto[];

  @ApiProperty({
    type: [UnavailableModelDto],
    description: 'Stacks whose files are damaged: requests to them answer 503 model_unavailable',
  })
  unavailable!: UnavailableModelDto[];
}

export class InputDto {
  @ApiProperty({ enum: ['image', 'audio'] })
  kind!: string;
  @ApiPropertyOptional({ description: 'image: every input is resized to height x width', example: 28 })
  height?: number;
  @ApiPropertyOptional({ description: 'image', example: 28 })
  width?: number;
  @ApiPropertyOptional({ description: 'image', enum: [1, 3] })
  channels?: number;
  @ApiPropertyOptional({ description: 'audio: inputs are resampled to this rate', example: 16000 })
  sample_rate?: number;
  @ApiPropertyOptional({
    description: 'audio: samples of a training window (inputs may be longer or shorter)',
  })
  window_samples?: number;
  @ApiPropertyOptional({
    description: 'audio: how each clip is scaled before the first module',
    enum: ['rms', 'none'],
  })
  normalize?: string;
  @ApiPropertyOptional({ description: 'audio: longer inputs are refused (413)' })
  max_seconds?: number;
  @ApiPropertyOptional({
    description:
      'audio: shorter inputs (after resampling) are refused (422): the receptive field of one ' +
      'frame of the last conv module',
  })
  min_samples?: number;
}

export class LayerDto {
  @ApiProperty({ description: '1-based layer (module) index', example: 1 })
  layer!: number;

  @ApiProperty({
    type: [Number],
    description: 'Module output for one patch [h, w, C]; audio: for one training window [frames, C]',
  })
  output_shape!: number[];

  @ApiProperty({
    type: [Number],
    description: 'Patch grid [rows, cols]; audio: []',
    example: [6, 6],
  })
  grid_shape!: number[];

  @ApiProperty({ description: 'C: the dimension of a mean- or max-pooled embedding' })
  embedding_dim!: number;

  @ApiProperty({
    type: 'object',
    properties: Object.fromEntries(POOLINGS.map((p) => [p, { type: 'integer' }])),
    description:
      'Embedding dimension per pooling (a pooling the grid is too small for is absent). Audio: ' +
      'mean and max (C); none gives [frames, C] per clip, frames growing with its duration',
    example: { mean: 16, max: 16, none: 576, grid2: 144, grid3: 64 },
  })
  dims!: Record<string, number>;

  @ApiPropertyOptional({ description: 'audio: C, the values of one frame', example: 32 })
  channels?: number;

  @ApiPropertyOptional({
    description: 'audio: nominal frames per second (sample rate over the strides so far)',
    example: 100,
  })
  frame_rate_hz?: number;
}

/**
 * Inline rather than a `$ref`: OpenAPI 3.0 has no nullable reference (`nullable` beside an
 * `allOf` does not admit null, and strict validators refuse `null` for it).
 */
const PARENT_SCHEMA: ApiPropertyOptions = {
  type: 'object',
  nullable: true,
  description: 'The version this one was retrained from, or null',
  required: ['version', 'from_module'],
  selfRequired: true,
  properties: {
    version: { type: 'integer', example: 1 },
    from_module: {
      type: 'integer',
      description: 'First module retrained; the ones below are the parent’s',
      example: 3,
    },
  },
};

const PROBE_ROW_PROPERTIES = {
  layer: { type: 'integer', example: 3 },
  pooling: { type: 'string', example: 'grid2' },
  test_accuracy: { type: 'number', example: 0.881 },
} as const;

const PROBE_SCHEMA: ApiPropertyOptions = {
  type: 'object',
  nullable: true,
  description:
    'The newest linear-probe sweep recorded in the manifest (`gim probe --record`): test ' +
    'accuracy per layer and pooling on a labelled set; null when none was recorded',
  required: ['at', 'data', 'test_data', 'best', 'rows'],
  selfRequired: true,
  properties: {
    at: { type: 'string', format: 'date-time' },
    data: {
      type: 'string',
      description: 'the labelled training set: a dataset name or the last part of its path',
      example: 'fashion-mnist',
    },
    test_data: {
      type: 'string',
      nullable: true,
      description: 'the labelled test set (null: a split of data)',
      example: 'fashion-mnist-test',
    },
    best: {
      type: 'object',
      required: ['layer', 'pooling', 'test_accuracy'],
      properties: PROBE_ROW_PROPERTIES,
    },
    rows: {
      type: 'array',
      items: {
        type: 'object',
        required: ['layer', 'pooling', 'dim', 'test_accuracy'],
        properties: {
          ...PROBE_ROW_PROPERTIES,
          dim: { type: 'integer', description: 'embedding dimension at this pooling' },
        },
      },
    },
  },
};

export class VersionDto extends ModelSummaryDto {
  @ApiProperty({ example: 1 })
  version!: number;

  @ApiProperty({ type: [String], description: 'Labels pointing at this version' })
  version_labels!: string[];

  @ApiProperty({ type: InputDto })
  input!: InputDto;

  @ApiProperty({ format: 'date-time' })
  created_at!: string;

  @ApiProperty(PARENT_SCHEMA)
  parent!: { version: number; from_module: number } | null;

  @ApiProperty({
    description:
      'True when the version holds its initial weights (`gim train --epochs 0`): the random-init ' +
      'baseline of a stack trained with the same settings and seed',
    example: false,
  })
  untrained!: boolean;

  @ApiProperty(PROBE_SCHEMA)
  probe!: {
    at: string;
    data: string;
    test_data: string | null;
    best: { layer: number; pooling: string; test_accuracy: number };
    rows: { layer: number; pooling: string; dim: number; test_accuracy: number }[];
  } | null;

  @ApiProperty({ type: [LayerDto] })
  layers!: LayerDto[];
}
