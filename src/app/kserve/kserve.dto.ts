import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { POOLINGS } from '../../gim/encoders/pooling.js';

export class LiveDto {
  @ApiProperty({ enum: [true] })
  live!: boolean;
}

export class ReadyDto {
  @ApiProperty({ enum: [true] })
  ready!: boolean;
}

export class ModelReadyDto {
  @ApiProperty()
  name!: string;
  @ApiProperty({ enum: [true] })
  ready!: boolean;
}

export class TensorMetadataDto {
  @ApiProperty({ example: 'input' })
  name!: string;
  @ApiProperty({ enum: ['FP32'] })
  datatype!: string;
  @ApiProperty({
    type: [Number],
    description: '-1: any size (audio input: [-1, -1], n clips of any equal length)',
    example: [-1, 28, 28, 1],
  })
  shape!: number[];
}

export class ModelMetadataDto {
  @ApiProperty({ example: 'fashion-gim' })
  name!: string;
  @ApiProperty({ type: [String], example: ['1'] })
  versions!: string[];
  @ApiProperty({ enum: ['gim-serve'] })
  platform!: string;
  @ApiProperty({
    type: [TensorMetadataDto],
    description:
      'One input: images [n, h, w, c] in [0, 1]; audio stacks: clips [n, T] of samples in ' +
      '[-1, 1] at the stack’s sample rate',
  })
  inputs!: TensorMetadataDto[];
  @ApiProperty({
    type: [TensorMetadataDto],
    description:
      'One output per layer, `layer_k` [n, dim] (mean pooling; other poolings change dim)',
  })
  outputs!: TensorMetadataDto[];
}

export class InferInputDto {
  @ApiProperty({ enum: ['input'] })
  name!: string;
  @ApiProperty({
    type: [Number],
    description: '[n, h, w, c]; audio stacks: [n, T]',
    example: [1, 28, 28, 1],
  })
  shape!: number[];
  @ApiProperty({ enum: ['FP32'] })
  datatype!: string;
  @ApiProperty({
    type: 'array',
    items: { type: 'number', minimum: -1, maximum: 1 },
    description:
      'Pixels in [0, 1], row-major (flat or nested); audio: mono samples in [-1, 1] at the ' +
      'stack’s rate, normalised by the server as the adapter says (T between min_samples and ' +
      'max_seconds of the stack)',
  })
  data!: number[];
}

export class InferParametersDto {
  @ApiPropertyOptional({
    description: 'Layer(s) when `outputs` is not given: 1..K, last, all, or a list; default last',
    oneOf: [{ type: 'string' }, { type: 'integer' }, { type: 'array', items: {} }],
  })
  layer?: unknown;
  @ApiPropertyOptional({ enum: POOLINGS, description: 'Default mean' })
  pooling?: string;
  @ApiPropertyOptional({ description: 'L2-normalise each vector; default false' })
  normalize?: boolean;
}

export class InferRequestedOutputDto {
  @ApiProperty({ example: 'layer_2' })
  name!: string;
}

export class InferRequestDto {
  @ApiPropertyOptional({ description: 'Echoed in the response' })
  id?: string;
  @ApiProperty({ type: [InferInputDto], minItems: 1, maxItems: 1 })
  inputs!: InferInputDto[];
  @ApiPropertyOptional({ type: InferParametersDto })
  parameters?: InferParametersDto;
  @ApiPropertyOptional({ type: [InferRequestedOutputDto], description: 'Default: the last layer' })
  outputs?: InferRequestedOutputDto[];
}

export class InferOutputParametersDto {
  @ApiProperty()
  embedding_space_id!: string;
  @ApiProperty({ enum: POOLINGS })
  pooling!: string;
  @ApiProperty()
  normalize!: boolean;
  @ApiPropertyOptional({ description: 'Audio stacks: frames per second of this layer' })
  frame_rate_hz?: number;
}

export class InferOutputDto {
  @ApiProperty({ example: 'layer_3' })
  name!: string;
  @ApiProperty({ enum: ['FP32'] })
  datatype!: string;
  @ApiProperty({
    type: [Number],
    description:
      '[n, D] when pooled, [n, rows, cols, C] for pooling none; audio: [n, C] pooled, ' +
      '[n, frames, C] for none',
    example: [1, 64],
  })
  shape!: number[];
  @ApiProperty({ type: [Number], description: 'Row-major values' })
  data!: number[];
  @ApiProperty({ type: InferOutputParametersDto })
  parameters!: InferOutputParametersDto;
}

export class InferResponseDto {
  @ApiProperty()
  model_name!: string;
  @ApiProperty({ example: '1' })
  model_version!: string;
  @ApiPropertyOptional()
  id?: string;
  @ApiProperty({ type: [InferOutputDto] })
  outputs!: InferOutputDto[];
}
