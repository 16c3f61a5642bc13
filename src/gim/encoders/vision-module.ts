/** One vision module: conv3x3 (stride s, same padding) -> residual conv1x1 -> ReLU, per patch. */
export interface VisionModuleConfig {
  kind: 'vision-conv';
  /** Spatial size of one input patch (square) and its channels. */
  inputSize: number;
  inChannels: number;
  channels: number;
  stride: number;
  kernelSize: number;
}
