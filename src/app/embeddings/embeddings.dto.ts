import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { POOLINGS } from '../../gim/encoders/pooling.js';

const LAYER_DESCRIPTION =
  'Layer(s) to embed at: 1..K, `last`, `all`, or a comma-separated list (`1,last`); ' +
  'one forward pass serves them all. Default `last`.';

/** Options in the query string (also accepted as JSON body fields or multipart text fields). */
export class EmbedQueryDto {
  @ApiPropertyOptional({
    description: 'Stack version number (default: label `stable`, else `latest`)',
    example: 1,
    type: Number,
  })
  version?: string;

  @ApiPropertyOptional({ description: 'Stack label instead of a version', example: 'stable' })
  label?: string;

  @ApiPropertyOptional({ description: LAYER_DESCRIPTION, example: 'last', type: String })
  layer?: string;

  @ApiPropertyOptional({
    enum: POOLINGS,
    description:
      'How a layer’s patch grid becomes a vector: mean/max over the grid, none (every cell), ' +
      'grid2/grid3 (average of 2x2/3x3 blocks of cells). Audio stacks: mean/max over time, or ' +
      'none (the frame sequence); grid2/grid3 are a 400. Default `mean`.',
  })
  pooling?: string;

  @ApiPropertyOptional({
    type: Boolean,
    description: 'L2-normalise each vector (audio `none`: each frame). Default false.',
  })
  normalize?: string;
}

export class Base64InputDto {
  @ApiProperty({
    description:
      'Base64 (standard or URL-safe; a data: URL works) of one encoded file: an image for an ' +
      'image stack, WAV/FLAC/MP3/Ogg audio for an audio stack',
  })
  b64!: string;
}

export class EmbedJsonBodyDto {
  @ApiProperty({ type: [Base64InputDto], minItems: 1, description: 'At most MAX_ITEMS items' })
  inputs!: Base64InputDto[];

  @ApiPropertyOptional({ type: Number })
  version?: number;
  @ApiPropertyOptional()
  label?: string;
  @ApiPropertyOptional({
    description: LAYER_DESCRIPTION,
    oneOf: [{ type: 'string' }, { type: 'integer' }, { type: 'array', items: {} }],
  })
  layer?: string | number | (string | number)[];
  @ApiPropertyOptional({ enum: POOLINGS })
  pooling?: string;
  @ApiPropertyOptional()
  normalize?: boolean;
}

export class LayerEmbeddingsDto {
  @ApiProperty({ example: 3 })
  layer!: number;

  @ApiProperty({
    description: 'Values per item vector (audio with pooling none: per frame, C)',
    example: 64,
  })
  dim!: number;

  @ApiProperty({
    type: [Number],
    description:
      'Shape of one item’s vector: [D] when pooled, [rows, cols, C] for pooling none; audio ' +
      'stacks: [C] when pooled, [-1, C] for none (frames differ by item: see `shapes`)',
    example: [64],
  })
  shape!: number[];

  @ApiProperty({
    description:
      'Vectors with the same id are comparable: same adapter and weights up to this layer, ' +
      'same pooling. `normalize` does not change it (normalise both sides to compare).',
  })
  embedding_space_id!: string;

  @ApiPropertyOptional({
    type: [Number],
    description: 'Audio stacks only: per item, the frames of this layer for that clip',
    example: [50],
  })
  frames?: number[];

  @ApiPropertyOptional({
    type: [Number],
    description:
      'Audio stacks only: per item, frames per second of this layer for that clip ' +
      '(sample rate x frames / samples; about the nominal rate of GET /v1/models/{name})',
    example: [100],
  })
  frame_rate_hz?: number[];

  @ApiPropertyOptional({
    type: 'array',
    items: { type: 'array', items: { type: 'integer' } },
    description: 'Audio stacks with pooling none only: per item [frames, C]',
    example: [[50, 8]],
  })
  shapes?: number[][];

  @ApiProperty({
    type: 'array',
    items: {
      type: 'array',
      items: { oneOf: [{ type: 'number' }, { type: 'array', items: { type: 'number' } }] },
    },
    description:
      'Per item, in request order: one flat row-major vector; for an audio stack with pooling ' +
      'none, the item’s frames, each a vector of C values ([frames][C])',
  })
  embeddings!: number[][] | number[][][];
}

export class EmbeddingsResponseDto {
  @ApiProperty({ example: 'fashion-gim' })
  model!: string;
  @ApiProperty({ example: 1 })
  version!: number;
  @ApiProperty({ enum: POOLINGS })
  pooling!: string;
  @ApiProperty()
  normalize!: boolean;
  @ApiProperty({ description: 'Number of items embedded' })
  items!: number;
  @ApiProperty({ type: [LayerEmbeddingsDto], description: 'One entry per layer, ascending' })
  results!: LayerEmbeddingsDto[];
}
