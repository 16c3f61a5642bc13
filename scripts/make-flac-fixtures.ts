/**
 * Writes test/fixtures/audio/flac-lengths/: FLACs whose lengths are off the block size (see
 * test/helpers/flac-reference.ts, which also gives the samples they must decode to). Run once by
 * scripts/make-audio-fixtures.sh (needs Debian's `flac`); the output is committed.
 *
 *   node --import @swc-node/register/esm-register scripts/make-flac-fixtures.ts
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  FLAC_LENGTH_CASES,
  FLAC_RATE,
  flacReferenceCodes,
  pcmWav,
} from '../test/helpers/flac-reference.js';

const out = fileURLToPath(new URL('../test/fixtures/audio/flac-lengths', import.meta.url));
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const tmp = await mkdtemp(join(tmpdir(), 'gim-flac-'));
try {
  for (const c of FLAC_LENGTH_CASES) {
    const wav = join(tmp, 'in.wav');
    await writeFile(wav, pcmWav(flacReferenceCodes(c), c.bits, FLAC_RATE));
    const file = join(out, c.file);
    // No padding or seek table: small files, frames right after STREAMINFO.
    const args = ['--silent', '--force', '--best', '--no-padding', '--no-seektable'];
    execFileSync('flac', [...args, `--blocksize=${c.blocksize}`, '-o', file, wav], {
      stdio: ['ignore', 'inherit', 'ignore'], // flac warns about 24-bit in a plain WAVE header
    });
    execFileSync('flac', ['--test', '--silent', file]); // the reference decoder accepts it
    console.log(`${c.file}: ${(await stat(file)).size} bytes`);
  }
} finally {
  await rm(tmp, { recursive: true, force: true });
}
