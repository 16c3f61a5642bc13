/** How raw images become model input. Saved in every manifest. */
export interface ImageAdapterConfig {
  kind: 'image';
  /** Model input size; images of another size are resized to it. */
  height: number;
  width: number;
  channels: 1 | 3;
  /** Per-channel normalisation of pixels scaled to [0, 1]. */
  mean: number[];
  std: number[];
  /** Square patches of `patchSize` pixels every `patchStride` pixels: the patch grid. */
  patchSize: number;
  patchStride: number;
  /** Training augmentation: random crop of the image padded by `cropPad`, horizontal flip. */
  cropPad: number;
  flip: boolean;
}
