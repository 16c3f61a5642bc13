/**
 * Encoded audio bytes -> mono samples at the model's rate. Shared by audio folders, the HTTP API
 * and `gim embed`. Like decode-image.ts, the format is sniffed from magic bytes first, so "not
 * audio we read" (unsupported_media) is told apart from "audio we read, but broken"
 * (invalid_data).
 *
 * audio-decode 3.12 is lenient where we must not be: a truncated FLAC or Ogg file decodes to an
 * empty result, a FLAC cut after its first frame to that frame alone, a truncated WAV to the bytes
 * that are there, and codec errors are dropped. So the WAV and FLAC headers are read here, the
 * decoded length is checked against what they declare, and the duration limit is applied from the
 * header before decoding (WAV, FLAC) or while decoding chunk by chunk (MP3, Ogg), always before
 * resampling.
 */
import decode, { type StreamDecoder } from 'audio-decode';
import libsamplerate from '@alexanderolsen/libsamplerate-js';
import { GimError } from '../errors.js';

export type AudioFormat = 'wav' | 'flac' | 'mp3' | 'ogg';

export interface DecodeAudioOptions {
  /** Output rate in Hz. Default 16000. */
  sampleRate?: number;
  /** Longer inputs are refused (too_large). Default DEFAULT_MAX_SECONDS. */
  maxSeconds?: number;
  /** Shorter outputs (after resampling) are refused (invalid_data). Default 1. */
  minSamples?: number;
}

export interface DecodedAudio {
  /** Mono (the mean of the source channels) at `opts.sampleRate`. */
  samples: Float32Array;
  sourceRate: number;
  sourceChannels: number;
  format: AudioFormat;
}

export const DEFAULT_MAX_SECONDS = 60;
export const DEFAULT_SAMPLE_RATE = 16000;
/** Source rates outside this range are refused; libsamplerate-js itself stops at 192 kHz. */
const MIN_SOURCE_RATE = 4000;
const MAX_SOURCE_RATE = 192000;
/** Bytes fed to the decoder at a time: bounds the overshoot when a stream is too long. */
const CHUNK_BYTES = 1 << 16;

/**
 * libsamplerate's medium sinc converter: 97 dB SNR and a passband to 90% of Nyquist (7.2 kHz at
 * 16 kHz), the band 16 kHz training audio (LibriSpeech) actually holds. SRC_SINC_FASTEST ends at
 * 80% (6.4 kHz), audibly dulling fricatives: a train/serve mismatch for uploads at 44.1/48 kHz.
 * Measured here: 60 s of 44.1 kHz audio takes ~0.8 s (fastest ~0.3 s, best ~2.8 s).
 */
const CONVERTER = libsamplerate.ConverterType.SRC_SINC_MEDIUM_QUALITY;
/**
 * libsamplerate-js resamples inputs over ~1M samples in chunks without flushing the filter, so the
 * last few output samples go missing; zeros appended to the input flush them out (the output is
 * then cut to its exact length). 8192 exceeds the filter's reach at every supported ratio.
 */
const FLUSH_ZEROS = 8192;

/** The format from the first bytes, or undefined for anything we do not decode. */
export function sniffAudioFormat(bytes: Uint8Array): AudioFormat | undefined {
  if (ascii(bytes, 0, 'RIFF') && ascii(bytes, 8, 'WAVE')) return 'wav';
  if (ascii(bytes, 0, 'fLaC')) return 'flac';
  if (ascii(bytes, 0, 'OggS')) return 'ogg';
  if (ascii(bytes, 0, 'ID3')) return ascii(bytes, id3Length(bytes), 'fLaC') ? 'flac' : 'mp3';
  if (mpegFrameHeader(bytes, 0)) return 'mp3';
  return undefined;
}

export async function decodeAudio(
  bytes: Uint8Array,
  opts: DecodeAudioOptions = {},
): Promise<DecodedAudio> {
  const sampleRate = opts.sampleRate ?? DEFAULT_SAMPLE_RATE;
  const maxSeconds = opts.maxSeconds ?? DEFAULT_MAX_SECONDS;
  const minSamples = opts.minSamples ?? 1;
  checkOptions(sampleRate, maxSeconds, minSamples);
  if (bytes.length === 0) throw new GimError('invalid_data', 'empty audio');
  const format = sniffAudioFormat(bytes);
  if (!format) {
    throw new GimError(
      'unsupported_media',
      'not a supported audio format (expected WAV, FLAC, MP3 or Ogg Vorbis/Opus)',
    );
  }
  // A plain Uint8Array view: decode-wav calls slice() expecting a copy, which on a Node Buffer
  // is a view, and then fails on the unaligned float samples.
  const view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const payload = view.subarray(id3Length(view));

  // Declared length and layout, checked before any decoding.
  const declared =
    format === 'wav' ? wavHeader(payload) : format === 'flac' ? flacHeader(payload) : undefined;
  if (declared && declared.frames > maxSeconds * declared.rate) {
    throw tooLong(`${(declared.frames / declared.rate).toFixed(2)} s`, maxSeconds);
  }
  if (declared?.truncated) throw new GimError('invalid_data', declared.truncated);

  const decoded = await decodeMono(
    payload,
    decoderFor(format, payload),
    maxSeconds,
    format === 'flac' && ascii(payload, 0, 'fLaC') ? flacChunkEnd : plainChunkEnd,
  );
  if (declared && declared.frames > 0 && decoded.samples.length !== declared.frames) {
    throw new GimError(
      'invalid_data',
      `${format} declares ${declared.frames} samples but ${decoded.samples.length} decode: ` +
        'the file is truncated or corrupt',
    );
  }
  const sourceRate = checkRate(decoded.rate);
  // mpg123 emits identical stereo channels as one: the frame header knows the truth.
  const sourceChannels =
    format === 'mp3' ? (mp3Channels(payload) ?? decoded.channels) : decoded.channels;

  const samples =
    sourceRate === sampleRate
      ? decoded.samples
      : await resample(decoded.samples, sourceRate, sampleRate);
  if (!allFinite(samples)) {
    throw new GimError('invalid_data', 'audio contains NaN or infinite samples after resampling');
  }
  if (samples.length < minSamples) {
    const ms = (n: number): string => `${((n / sampleRate) * 1000).toFixed(1)} ms`;
    throw new GimError(
      'invalid_data',
      `audio too short: ${samples.length} samples (${ms(samples.length)}) at ${sampleRate} Hz, ` +
        `at least ${minSamples} samples (${ms(minSamples)}) needed`,
    );
  }
  return { samples, sourceRate, sourceChannels, format };
}

/**
 * Band-limited resampling of mono samples (libsamplerate, medium sinc). The output has
 * round(n * to / from) samples, sample i at time i / to (no delay).
 */
export async function resampleAudio(
  samples: Float32Array,
  fromRate: number,
  toRate: number,
): Promise<Float32Array> {
  for (const rate of [fromRate, toRate]) {
    if (!(Number.isInteger(rate) && rate >= MIN_SOURCE_RATE && rate <= MAX_SOURCE_RATE)) {
      throw new GimError(
        'invalid_argument',
        `sample rates must be integers in ${MIN_SOURCE_RATE}..${MAX_SOURCE_RATE} Hz`,
      );
    }
  }
  return fromRate === toRate ? samples.slice() : resample(samples, fromRate, toRate);
}

async function resample(samples: Float32Array, from: number, to: number): Promise<Float32Array> {
  const outLength = Math.round((samples.length * to) / from);
  const padded = new Float32Array(samples.length + FLUSH_ZEROS);
  padded.set(samples);
  // A fresh converter per call: a reused one carries filter state from its last long input.
  const src = await libsamplerate.create(1, from, to, { converterType: CONVERTER });
  try {
    const out = src.simple(padded);
    if (out.length < outLength) throw new Error(`resampler returned ${out.length} samples`);
    return out.slice(0, outLength);
  } catch (e) {
    // libsamplerate-js throws strings.
    const reason = e instanceof Error ? e.message : String(e);
    throw new GimError('invalid_data', `cannot resample ${from} Hz -> ${to} Hz: ${reason}`);
  } finally {
    src.destroy();
  }
}

function decoderFor(format: AudioFormat, payload: Uint8Array): () => Promise<StreamDecoder> {
  if (format === 'wav') return decode.wav;
  if (format === 'flac') return decode.flac;
  if (format === 'mp3') return decode.mp3;
  // Ogg: the first packet (byte 28 of a one-segment first page) names the codec.
  if (ascii(payload, 28, 'OpusHead')) return decode.opus;
  if (ascii(payload, 28, '\x7fFLAC')) return decode.flac;
  return decode.oga;
}

/** Where the chunk that starts at `from` ends: CHUNK_BYTES on, at most the end of `payload`. */
type ChunkEnd = (payload: Uint8Array, from: number) => number;

const plainChunkEnd: ChunkEnd = (payload, from) => Math.min(payload.length, from + CHUNK_BYTES);

/** How far past CHUNK_BYTES a FLAC chunk may reach for the next sync code. */
const FLAC_SYNC_REACH = 4096;

/**
 * A chunk end that cuts no FLAC frame header in two. @audio/decode-flac 1.3.5 finds frames by
 * their sync code as the bytes arrive, and a header whose first bytes end one chunk is passed over
 * when the next arrives: its frame is merged into the one before and lost (the last, partial
 * block of a 107,475-sample clip, which the declared length then refuses). So a chunk ends just
 * before the first sync code (0xFFF8 or 0xFFF9) at or after CHUNK_BYTES, where a frame starts
 * whole in the next chunk; with none within FLAC_SYNC_REACH, at the end of that sync-free stretch,
 * which no header can straddle. Chunks stay bounded (a chunk of tiny frames is a decompression
 * bomb that the duration check must see in pieces).
 */
const flacChunkEnd: ChunkEnd = (payload, from) => {
  const limit = Math.min(payload.length, from + CHUNK_BYTES + FLAC_SYNC_REACH);
  for (let i = from + CHUNK_BYTES; i < limit; i++) {
    if (payload[i] === 0xff && ((payload[i + 1] ?? 0) & 0xfe) === 0xf8) return i;
  }
  return limit;
};

/**
 * Feeds the decoder a chunk of about CHUNK_BYTES at a time (cut by `chunkEnd`), mixing each
 * decoded block down to mono as it arrives (mpg123 switches between one and two channels
 * mid-stream), and stops once the audio is longer than `maxSeconds`.
 */
async function decodeMono(
  payload: Uint8Array,
  createDecoder: () => Promise<StreamDecoder>,
  maxSeconds: number,
  chunkEnd: ChunkEnd,
): Promise<{ samples: Float32Array; rate: number; channels: number }> {
  const blocks: Float32Array[] = [];
  let frames = 0;
  let rate = 0;
  let channels = 0;
  const take = (out: { channelData: Float32Array[]; sampleRate: number }): void => {
    const first = out.channelData[0];
    if (!first || first.length === 0) return;
    if (!(out.sampleRate > 0)) {
      throw new GimError('invalid_data', 'the decoder reported no sample rate: corrupt audio');
    }
    if (rate !== 0 && out.sampleRate !== rate) {
      throw new GimError(
        'invalid_data',
        `sample rate changes mid-stream (${rate} -> ${out.sampleRate} Hz): corrupt audio`,
      );
    }
    rate = out.sampleRate;
    channels = Math.max(channels, out.channelData.length);
    blocks.push(mixDown(out.channelData));
    frames += first.length;
    if (frames > maxSeconds * rate) {
      throw tooLong(`over ${(frames / rate).toFixed(2)} s`, maxSeconds);
    }
  };

  let dec: StreamDecoder;
  try {
    dec = await createDecoder();
  } catch (e) {
    throw decodeError(e);
  }
  let finished = false;
  try {
    for (let offset = 0; offset < payload.length;) {
      const end = chunkEnd(payload, offset);
      take(await dec(payload.subarray(offset, end)));
      offset = end;
    }
    finished = true; // dec() flushes and frees, also when it throws
    take(await dec());
  } catch (e) {
    throw decodeError(e);
  } finally {
    if (!finished) dec.free();
  }
  if (frames === 0 || rate === 0 || channels === 0) {
    throw new GimError('invalid_data', 'no audio decoded: the file is truncated or corrupt');
  }
  const samples = new Float32Array(frames);
  let at = 0;
  for (const block of blocks) {
    samples.set(block, at);
    at += block.length;
  }
  if (!allFinite(samples)) throw new GimError('invalid_data', 'audio contains NaN or Inf samples');
  return { samples, rate, channels };
}

/** The mean of the channels. Channels of unequal length (never seen) are cut to the shortest. */
function mixDown(channelData: Float32Array[]): Float32Array {
  const only = channelData[0] as Float32Array;
  if (channelData.length === 1) return only.slice();
  const n = Math.min(...channelData.map((c) => c.length));
  const mono = new Float32Array(n);
  const scale = 1 / channelData.length;
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (const c of channelData) sum += c[i] as number;
    mono[i] = sum * scale;
  }
  return mono;
}

/** Supported WAV encodings: PCM, IEEE float, A-law, µ-law (audio-decode's ADPCM is not used). */
const WAV_BITS: Record<number, number[]> = { 1: [8, 16, 24, 32], 3: [32, 64], 6: [8], 7: [8] };

/** What a header says about the audio after it. */
interface DeclaredAudio {
  /** Samples per channel; 0 = not declared. */
  frames: number;
  rate: number;
  channels: number;
  /** Set when fewer bytes are present than declared: reported after the duration check. */
  truncated?: string;
}

/** Reads and checks the fmt and data chunks; `frames` comes from the declared data size. */
function wavHeader(b: Uint8Array): DeclaredAudio {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let fmt: {
    tag: number;
    channels: number;
    rate: number;
    blockAlign: number;
    bits: number;
  } | null = null;
  for (let pos = 12; pos + 8 <= b.length;) {
    const size = view.getUint32(pos + 4, true);
    if (ascii(b, pos, 'fmt ')) {
      if (size < 16 || pos + 8 + size > b.length) break;
      let tag = view.getUint16(pos + 8, true);
      if (tag === 0xfffe && size >= 40) tag = view.getUint16(pos + 32, true); // EXTENSIBLE
      fmt = {
        tag,
        channels: view.getUint16(pos + 10, true),
        rate: view.getUint32(pos + 12, true),
        blockAlign: view.getUint16(pos + 20, true),
        bits: view.getUint16(pos + 22, true),
      };
    } else if (ascii(b, pos, 'data')) {
      if (!fmt) throw new GimError('invalid_data', 'WAV data chunk before its fmt chunk');
      const bits = WAV_BITS[fmt.tag];
      if (!bits?.includes(fmt.bits)) {
        throw new GimError(
          'unsupported_media',
          `WAV encoding 0x${fmt.tag.toString(16)} with ${fmt.bits} bits is not supported ` +
            '(PCM 8/16/24/32-bit, float 32/64-bit, A-law, µ-law are)',
        );
      }
      if (fmt.channels < 1 || fmt.blockAlign !== (fmt.channels * fmt.bits) / 8) {
        throw new GimError(
          'invalid_data',
          `WAV header is inconsistent: ${fmt.channels} channels of ${fmt.bits} bits in ` +
            `${fmt.blockAlign}-byte frames`,
        );
      }
      const available = b.length - (pos + 8);
      // 0 and 0xFFFFFFFF are streaming placeholders: the data runs to the end.
      const streaming = size === 0 || size === 0xffffffff;
      const frames = Math.floor((streaming ? available : size) / fmt.blockAlign);
      const declared: DeclaredAudio = { frames, rate: checkRate(fmt.rate), channels: fmt.channels };
      if (!streaming && size > available) {
        declared.truncated =
          `WAV is truncated: its data chunk declares ${size} bytes, ` + `${available} are present`;
      }
      return declared;
    }
    pos += 8 + size + (size & 1); // chunks are word-aligned
  }
  throw new GimError('invalid_data', 'WAV has no fmt and data chunks: truncated or corrupt');
}

/** STREAMINFO: rate, channels and total samples (0 = unknown). */
function flacHeader(b: Uint8Array): DeclaredAudio {
  const at = (i: number): number => b[i] ?? 0;
  // "fLaC", then the first metadata block, which must be STREAMINFO (type 0, 34 bytes).
  const blockType = at(4) & 0x7f;
  const blockLength = (at(5) << 16) | (at(6) << 8) | at(7);
  if (b.length < 8 + 34 || blockType !== 0 || blockLength !== 34) {
    throw new GimError('invalid_data', 'FLAC has no STREAMINFO block: truncated or corrupt');
  }
  // Bits: 20 sample rate, 3 channels - 1, 5 bits per sample - 1, 36 total samples.
  const rate = (at(18) << 12) | (at(19) << 4) | (at(20) >> 4);
  const channels = ((at(20) >> 1) & 7) + 1;
  const low32 = ((at(22) << 24) | (at(23) << 16) | (at(24) << 8) | at(25)) >>> 0;
  const frames = (at(21) & 0x0f) * 2 ** 32 + low32;
  return { frames, rate: checkRate(rate), channels };
}

/** A plausible MPEG audio frame header at `pos`: version, layer, bitrate and rate all valid. */
function mpegFrameHeader(b: Uint8Array, pos: number): { channels: number } | undefined {
  if (pos + 4 > b.length) return undefined;
  const [b0 = 0, b1 = 0, b2 = 0, b3 = 0] = b.subarray(pos, pos + 4);
  if (b0 !== 0xff || (b1 & 0xe0) !== 0xe0) return undefined;
  const version = (b1 >> 3) & 3; // 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5, 1 reserved
  const layer = (b1 >> 1) & 3; // 0 reserved (and AAC's ADTS)
  const bitrateIndex = b2 >> 4;
  const rateIndex = (b2 >> 2) & 3;
  if (version === 1 || layer === 0 || bitrateIndex === 15 || rateIndex === 3) return undefined;
  return { channels: b3 >> 6 === 3 ? 1 : 2 };
}

/** Channels of the first frame header within the first 4 KiB (skipping junk before it). */
function mp3Channels(b: Uint8Array): number | undefined {
  for (let pos = 0; pos < Math.min(b.length, 4096); pos++) {
    const header = mpegFrameHeader(b, pos);
    if (header) return header.channels;
  }
  return undefined;
}

/** Bytes of a leading ID3v2 tag (synchsafe size, optional footer), at most the whole input. */
function id3Length(b: Uint8Array): number {
  if (!ascii(b, 0, 'ID3')) return 0;
  if (b.length < 10) return b.length;
  const at = (i: number): number => (b[i] ?? 0) & 0x7f;
  const size = (at(6) << 21) | (at(7) << 14) | (at(8) << 7) | at(9);
  const footer = (b[5] ?? 0) & 0x10 ? 10 : 0;
  return Math.min(b.length, 10 + size + footer);
}

function checkRate(rate: number): number {
  if (!(rate >= MIN_SOURCE_RATE && rate <= MAX_SOURCE_RATE)) {
    throw new GimError(
      'invalid_data',
      `sample rate ${rate} Hz is outside ${MIN_SOURCE_RATE}..${MAX_SOURCE_RATE} Hz`,
    );
  }
  return rate;
}

function checkOptions(sampleRate: number, maxSeconds: number, minSamples: number): void {
  const rateOk = Number.isInteger(sampleRate) && sampleRate >= MIN_SOURCE_RATE;
  if (!(rateOk && sampleRate <= MAX_SOURCE_RATE))
    throw new GimError(
      'invalid_argument',
      `sampleRate must be an integer in ${MIN_SOURCE_RATE}..${MAX_SOURCE_RATE}, got ${sampleRate}`,
    );
  if (!(maxSeconds > 0 && Number.isFinite(maxSeconds)))
    throw new GimError('invalid_argument', `maxSeconds must be > 0, got ${maxSeconds}`);
  if (!(Number.isInteger(minSamples) && minSamples >= 1))
    throw new GimError(
      'invalid_argument',
      `minSamples must be a positive integer, got ${minSamples}`,
    );
}

function tooLong(duration: string, maxSeconds: number): GimError {
  return new GimError('too_large', `audio is ${duration} long; the limit is ${maxSeconds} s`);
}

function decodeError(e: unknown): GimError {
  if (e instanceof GimError) return e;
  const reason = e instanceof Error ? e.message : String(e);
  return new GimError('invalid_data', `cannot decode audio: ${reason.split('\n')[0]}`, {
    cause: e,
  });
}

function allFinite(x: Float32Array): boolean {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return false;
  return true;
}

function ascii(b: Uint8Array, offset: number, text: string): boolean {
  if (offset < 0 || b.length < offset + text.length) return false;
  for (let i = 0; i < text.length; i++) if (b[offset + i] !== text.charCodeAt(i)) return false;
  return true;
}

/**
 * The duration a WAV or FLAC declares in its header, in seconds, read without decoding: what a
 * request's clips add up to can be checked before any of them is decoded. Undefined for MP3 and
 * Ogg (their length is known only by decoding them), a FLAC that does not declare its length,
 * and bytes whose header cannot be read (decoding reports those).
 */
export function declaredSeconds(bytes: Uint8Array): number | undefined {
  const format = sniffAudioFormat(bytes);
  if (format !== 'wav' && format !== 'flac') return undefined;
  const view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const payload = view.subarray(id3Length(view));
  try {
    const { frames, rate } = format === 'wav' ? wavHeader(payload) : flacHeader(payload);
    return frames > 0 ? frames / rate : undefined;
  } catch {
    return undefined;
  }
}
