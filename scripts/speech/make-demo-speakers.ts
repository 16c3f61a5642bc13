/**
 * The demo speaker set of the shipped `speakers` head (models/speech-gim/classifiers/speakers):
 * 10 voices of the held-out pool (base voices that speech-gim's training corpus does not hold),
 * one per base voice, named readably (`<voice>-<accent>`), and 1 s WAV crops of utterances the
 * head never sees, a few of which are committed as test fixtures.
 *
 *   node --import @swc-node/register/esm-register scripts/speech/make-demo-speakers.ts
 *
 * Writes (the corpus itself is made by `npm run data:speech` with DEMO_CORPUS_FLAGS, idempotent):
 *   <out>/train/<name>/*.wav     --train-crops 1 s crops of each of the first utterances of each
 *                                speaker: the head's training data
 *   <out>/test/<name>/*.wav      --crops 1 s crops of each of the last --test-utterances ones
 *   <fixtures>/<name>-<k>.wav    the first crop of the first --fixtures-per-speaker test
 *                                utterances of each speaker (committed)
 * Needs espeak-ng, flite and sox (Debian: sudo apt-get install espeak-ng flite sox flac).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

/** The held-out pool of speech-gim's training corpus (--held-out-voices 12, seed 1), one family each. */
export const DEMO_CORPUS_FLAGS = [
  ...['--speakers', '10', '--utterances', '24', '--held-out-voices', '12'],
  ...['--voices', 'held-out', '--family', '1', '--seed', '1', '--first-id', '5001'],
];

const ACCENTS: Record<string, string> = {
  'en-gb': 'gb',
  'en-us': 'us',
  'en-us-nyc': 'nyc',
  'en-gb-scotland': 'scotland',
  'en-029': 'caribbean',
  'en-gb-x-rp': 'rp',
  'en-gb-x-gbclan': 'lancashire',
  'en-gb-x-gbcwmd': 'wales',
  'en-gb-x-gbcwmd-midlands': 'midlands',
};

interface Recipe {
  engine: string;
  voice: string;
  accent: string | null;
  variant: string | null;
}

function readableName(r: Recipe): string {
  if (r.engine === 'flite') return `${r.voice}-flite`;
  const accent = r.accent ? (ACCENTS[r.accent] ?? r.accent.replace(/^en-/, '')) : 'en';
  return `${(r.variant ?? 'plain').toLowerCase()}-${accent}`;
}

const { values } = parseArgs({
  options: {
    corpus: { type: 'string', default: 'bench/data/speech-demo' },
    out: { type: 'string', default: 'bench/data/speech-demo-named' },
    fixtures: { type: 'string', default: 'test/fixtures/audio/demo-speakers' },
    'test-utterances': { type: 'string', default: '4' },
    crops: { type: 'string', default: '2' },
    'train-crops': { type: 'string', default: '3' },
    'fixtures-per-speaker': { type: 'string', default: '2' },
    'crop-seconds': { type: 'string', default: '1' },
  },
});
const corpus = resolve(values.corpus as string);
const out = resolve(values.out as string);
const fixtures = resolve(values.fixtures as string);
const testUtts = Number(values['test-utterances']);
const crops = Number(values.crops);
const trainCrops = Number(values['train-crops']);
const perSpeaker = Number(values['fixtures-per-speaker']);
const cropSeconds = Number(values['crop-seconds']);

execFileSync(
  process.execPath,
  [
    ...['--import', '@swc-node/register/esm-register', 'scripts/make-speech-corpus.ts'],
    ...DEMO_CORPUS_FLAGS,
    ...['--out', corpus],
  ],
  { stdio: 'inherit' },
);
const manifest = JSON.parse(readFileSync(join(corpus, 'manifest.json'), 'utf8')) as {
  speakers: { id: number; recipe: Recipe }[];
};
rmSync(out, { recursive: true, force: true });
rmSync(fixtures, { recursive: true, force: true });
mkdirSync(fixtures, { recursive: true });
const lines: string[] = [];
for (const { id, recipe } of manifest.speakers) {
  const name = readableName(recipe);
  const files: string[] = [];
  for (const chapter of readdirSync(join(corpus, String(id))).sort())
    for (const f of readdirSync(join(corpus, String(id), chapter)).sort())
      if (f.endsWith('.flac')) files.push(join(corpus, String(id), chapter, f));
  const train = files.slice(0, files.length - testUtts);
  const test = files.slice(files.length - testUtts);
  mkdirSync(join(out, 'train', name), { recursive: true });
  mkdirSync(join(out, 'test', name), { recursive: true });
  let k = 0;
  /** Writes `count` evenly spaced crops of `file` under `dir`; returns their paths. */
  const cropsOf = (file: string, count: number, dir: string): string[] => {
    const seconds = Number(execFileSync('soxi', ['-D', file], { encoding: 'utf8' }).trim());
    return Array.from({ length: count }, (_, c) => {
      const start = ((seconds - cropSeconds) * (c + 1)) / (count + 1);
      const wav = join(dir, `${name}-${++k}.wav`);
      execFileSync('sox', [
        file,
        ...['-b', '16', '-r', '16000', '-c', '1', wav],
        ...['trim', Math.max(0, start).toFixed(3), String(cropSeconds)],
      ]);
      return wav;
    });
  };
  // The head trains on crops as short as the ones it is tested on.
  for (const f of train) cropsOf(f, trainCrops, join(out, 'train', name));
  const first = k;
  for (const [t, f] of test.entries()) {
    const [wav] = cropsOf(f, crops, join(out, 'test', name));
    // Fixtures: the first crop of each of the first test utterances.
    if (wav && t < perSpeaker) copyFileSync(wav, join(fixtures, wav.split('/').at(-1) as string));
  }
  lines.push(
    `${name}: speaker ${id}, ${first} training crops of ${train.length} utterances, ` +
      `${k - first} test crops`,
  );
}
process.stdout.write(`${lines.join('\n')}\n${out}/train, ${out}/test; fixtures in ${fixtures}\n`);
