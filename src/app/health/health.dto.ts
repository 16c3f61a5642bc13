import { ApiProperty } from '@nestjs/swagger';

export class LiveStatusDto {
  @ApiProperty({ enum: ['ok'] })
  status!: 'ok';
}

export class BackendInfoDto {
  @ApiProperty({ enum: ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] })
  name!: string;

  @ApiProperty({ description: '`tf.getBackend()` in the inference worker', example: 'wasm' })
  tfjsBackend!: string;

  @ApiProperty({ type: [String] })
  devices!: string[];

  @ApiProperty({ type: [String], description: 'Kernels this project registered on the backend' })
  kernels!: string[];

  @ApiProperty({ type: [String], description: 'Why each better backend was skipped' })
  fallbackReasons!: string[];
}

export class UnavailableStackDto {
  @ApiProperty({ description: 'The PRELOAD reference', example: 'fashion-gim' })
  ref!: string;

  @ApiProperty({
    description: 'What is damaged on disk, relative to the models directory',
    example: 'fashion-gim@2 is unavailable: fashion-gim/2/module-3/model.json does not exist',
  })
  error!: string;
}

export class ReadyStatusDto {
  @ApiProperty({ enum: ['ready'] })
  status!: 'ready';

  @ApiProperty({ type: BackendInfoDto })
  backend!: BackendInfoDto;

  @ApiProperty({
    type: [String],
    description: 'Stacks loaded and warmed up',
    example: ['fashion-gim@1'],
  })
  models!: string[];

  @ApiProperty({
    type: [UnavailableStackDto],
    description:
      'PRELOAD stacks not served because their files are damaged (503 model_unavailable); the ' +
      'replica is ready for the others, as every replica shares the models directory',
  })
  unavailable!: UnavailableStackDto[];
}
