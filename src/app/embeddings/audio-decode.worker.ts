/**
 * A thread of the audio decode pool (AudioDecodePool): decodes one clip, mixes it to mono,
 * resamples it and normalises it as the stack's adapter says. Decoding and resampling a long clip
 * takes hundreds of milliseconds of CPU (~450 ms for 30 s of 44.1 kHz stereo), which would stall
 * every other request on the HTTP thread.
 */
import { move } from 'piscina';
import { decodeAudio } from '../../gim/data/decode-audio.js';
import { isGimError, type GimErrorCode } from '../../gim/errors.js';
import { normalizeAudio } from '../../gim/modality/audio.js';
import type { AudioInputSpec } from './audio-geometry.js';

export interface AudioDecodeTask {
  bytes: Uint8Array;
  spec: AudioInputSpec;
}

/** A GimError does not survive the trip between threads as one: it comes back as fields. */
export interface AudioDecodeFailure {
  error: { code: GimErrorCode; message: string; details: Record<string, unknown> };
}

export default async function decode({
  bytes,
  spec,
}: AudioDecodeTask): Promise<Float32Array | AudioDecodeFailure> {
  try {
    const { samples } = await decodeAudio(bytes, {
      sampleRate: spec.sampleRate,
      maxSeconds: spec.maxSeconds,
      minSamples: spec.minSamples,
    });
    return move(normalizeAudio(samples, spec)) as Float32Array;
  } catch (e) {
    if (!isGimError(e)) throw e;
    return { error: { code: e.code, message: e.message, details: { ...e.details } } };
  }
}
