#!/usr/bin/env bash
# Writes test/fixtures/audio/: the audio fixtures of test/unit/audio.test.ts. Run once; the output
# is committed, so the tests need none of these tools.
#
#   scripts/make-audio-fixtures.sh            (needs Debian's sox, flac and espeak-ng)
#
# Tone files: one 0.5 s, 440 Hz sine at half scale, synthesised by sox at each file's own rate (the
# same continuous signal sampled at 16, 44.1, 22.05 and 8 kHz), undithered (-D) so no file carries
# noise the others lack:
#   tone-16k-s16.wav          reference: WAV 16-bit, 16 kHz, mono
#   tone-44k-s24-stereo.wav   WAV 24-bit, 44.1 kHz, stereo (the tone on both channels)
#   tone-22k-f32.wav          WAV 32-bit float, 22.05 kHz, mono
#   tone-16k-s16.flac         FLAC 16-bit, 16 kHz
#   tone-8k-s24.flac          FLAC 24-bit, 8 kHz
#   tone-44k-stereo.mp3       MP3 64 kbit/s CBR, 44.1 kHz, stereo
#   tone-16k.ogg              Ogg Vorbis quality 0, 16 kHz, mono
#   truncated.flac            the first 30% of the bytes of tone-16k-s16.flac
#   too-short.wav             0.01 s of the tone (160 samples at 16 kHz)
#   flac-lengths/             FLACs of lengths off the block size, 16/24-bit, mono/stereo, of
#                             samples computed in test/helpers/flac-reference.ts
#                             (scripts/make-flac-fixtures.ts; about 70 KB)
# Speech: speakers/<speaker>/<chapter>/<speaker>-<chapter>-000N.flac, the LibriSpeech layout: two
# espeak-ng voices (speakers 101 and 202) x the same three short sentences, silence trimmed, 16 kHz
# 16-bit mono FLAC of 0.8-1.1 s each, spoken quietly (-a 30) to keep the FLACs small: all fixtures
# come to about 300 KB.
set -euo pipefail

out="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/test/fixtures/audio"
rm -rf "$out"
mkdir -p "$out"
cd "$out"

tone() { # tone <seconds> <sox output options...> <file>
  local seconds="$1"
  shift
  sox -D -n "$@" synth "$seconds" sine 440 vol 0.5
}
# flac's defaults add an 8 KiB padding block and a seek table: left out to keep the files small.
to_flac() { flac --silent --force --best --no-padding --no-seektable -o "$2" "$1"; }

tone 0.5 -r 16000 -c 1 -b 16 -e signed-integer tone-16k-s16.wav
tone 0.5 -r 44100 -c 2 -b 24 -e signed-integer tone-44k-s24-stereo.wav
tone 0.5 -r 22050 -c 1 -b 32 -e floating-point tone-22k-f32.wav
to_flac tone-16k-s16.wav tone-16k-s16.flac
tone 0.5 -r 8000 -c 1 -b 24 -e signed-integer /tmp/gim-tone-8k-s24.wav
to_flac /tmp/gim-tone-8k-s24.wav tone-8k-s24.flac 2>/dev/null # warns about sox's fact chunk
rm -f /tmp/gim-tone-8k-s24.wav
tone 0.5 -r 44100 -c 2 -C 64 tone-44k-stereo.mp3
tone 0.5 -r 16000 -c 1 -C 0 tone-16k.ogg
size=$(stat -c %s tone-16k-s16.flac)
head -c $((size * 30 / 100)) tone-16k-s16.flac >truncated.flac
tone 0.01 -r 16000 -c 1 -b 16 -e signed-integer too-short.wav

speak() { # speak <voice> <speaker> <chapter> <n> <text>
  local dir="speakers/$2/$3"
  local raw="/tmp/gim-espeak-$2-$4.wav"
  mkdir -p "$dir"
  espeak-ng -v "$1" -a 30 -s 160 -w "$raw" "$5"
  # Trim silence at both ends, then 16 kHz 16-bit mono (sox's default high-quality rate).
  sox -D "$raw" -r 16000 -c 1 -b 16 "$dir/$2-$3-000$4.wav" \
    silence 1 0.02 1% reverse silence 1 0.02 1% reverse
  to_flac "$dir/$2-$3-000$4.wav" "$dir/$2-$3-000$4.flac"
  rm -f "$raw" "$dir/$2-$3-000$4.wav"
}
speak en-us+m3 101 1001 1 'The cat sat down.'
speak en-us+m3 101 1001 2 'Rain on the hill.'
speak en-us+m3 101 1001 3 'She sells shells.'
speak en-gb+f4 202 2002 1 'The cat sat down.'
speak en-gb+f4 202 2002 2 'Rain on the hill.'
speak en-gb+f4 202 2002 3 'She sells shells.'

(cd "$out/../../.." && node --import @swc-node/register/esm-register scripts/make-flac-fixtures.ts)

du -ab . | sort -k2
echo "total: $(du -cb $(find . -type f) | tail -1 | cut -f1) bytes"
