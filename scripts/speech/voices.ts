/**
 * The voices of `npm run data:speech`: the voice material, the seeded choice of base voices
 * (`--held-out-voices`, `--voices`) and the speaker recipes (`--family`). No process is run
 * here: `scripts/make-speech-corpus.ts` asks the engines which voices they have (`Tools`) and
 * synthesises; this part is what test/unit/speech-voices.test.ts checks without them.
 */

// ---------------------------------------------------------------------------------------------
// Voice material. The lists are intersected with what the installed engines report, since
// espeak-ng and flite both fall back to a default voice, silently and with exit status 0, when
// asked for one they lack.

/**
 * espeak-ng variants (voices/!v/<name>) that sound like distinct human speakers. Left out:
 * `fast` (same output as no variant), `caleb`, `klatt6` and `adam` (the same or nearly the same
 * as `klatt`), `RicishayMax3` and `steph3` (nearly `RicishayMax2` and `steph2`), `whisper` and
 * `whisperf` (no voicing), the robots and effects (`robosoft*`, `UniRobot`, `anikaRobot`,
 * `Demonic`, `announcer`, `croak`, `grandpa`, `Tweaky`) and `Mr serious` (a space in its name).
 */
export const ESPEAK_VARIANTS: readonly string[] = [
  ...['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8'],
  ...['f1', 'f2', 'f3', 'f4', 'f5'],
  ...['klatt', 'klatt2', 'klatt3', 'klatt4', 'klatt5'],
  ...['Alex', 'Alicia', 'Andrea', 'Andy', 'Annie', 'AnxiousAndy', 'Denis', 'Diogo', 'Gene'],
  ...['Gene2', 'Henrique', 'Hugo', 'Jacky', 'Lee', 'Marco', 'Mario', 'Michael', 'Mike'],
  ...['Nguyen', 'RicishayMax', 'RicishayMax2', 'Storm', 'anika', 'antonio', 'aunty'],
  ...['belinda', 'benjamin', 'boris', 'david', 'ed', 'edward', 'edward2', 'grandma'],
  ...['gustave', 'iven', 'iven2', 'iven3', 'iven4', 'john', 'kaukovalta', 'linda', 'marcelo'],
  ...['max', 'michel', 'miguel', 'norbert', 'pablo', 'paul', 'pedro', 'quincy', 'rob'],
  ...['robert', 'sandro', 'shelby', 'steph', 'steph2', 'travis', 'victor', 'zac'],
];

/**
 * flite voices. Left out: `kal` (the 8 kHz diphone twin of kal16) and `awb_time` (a limited
 * domain voice that only says the time). `rms` takes its f0 from a statistical model that
 * ignores f0_shift, so only its rate varies.
 */
export const FLITE_VOICES: readonly { voice: string; pitch: boolean }[] = [
  { voice: 'kal16', pitch: true },
  { voice: 'awb', pitch: true },
  { voice: 'slt', pitch: true },
  { voice: 'rms', pitch: false },
];

/** espeak-ng -p (0-99, default 50) and -s (words per minute, default 175) levels. */
export const ESPEAK_PITCHES = [28, 36, 44, 52, 60, 68, 76];
export const ESPEAK_SPEEDS = [135, 150, 165, 180, 195, 210];
/** espeak-ng -g (extra pause between words, in 10 ms): a per-speaker habit, not a key. */
export const ESPEAK_WORD_GAPS = [0, 1, 2, 3];
/** flite f0_shift (a factor on the voice's own f0) and speaking rate (1 / duration_stretch). */
export const FLITE_PITCHES = [0.85, 0.92, 1, 1.08, 1.16];
export const FLITE_SPEEDS = [0.88, 0.94, 1, 1.07, 1.14];

/** How often a flite voice comes up among the first speakers: one in every FLITE_EVERY. */
export const FLITE_EVERY = 5;

export type Engine = 'espeak-ng' | 'flite';

export interface Recipe {
  engine: Engine;
  /** espeak-ng: the accent's voice file (gmw/en-GB-scotland, ...); flite: the voice. */
  voice: string;
  /** espeak-ng: the accent's language code (en-gb-scotland, ...); null for flite. */
  accent: string | null;
  /** espeak-ng variant (`en-us+<variant>`), null for the accent's own voice and for flite. */
  variant: string | null;
  /** espeak-ng: -p (0-99); flite: f0_shift factor; null: the voice's own (flite rms). */
  pitch: number | null;
  /** espeak-ng: -s words per minute; flite: rate factor (duration_stretch = 1 / speed). */
  speed: number;
  /** espeak-ng: -g word gap in 10 ms units; 0 for flite. */
  wordGap: number;
}

export interface Speaker {
  id: number;
  recipe: Recipe;
  /** The synthesis command, with <text> and <out.wav> for what changes per utterance. */
  command: string[];
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness.

export function hash32(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  for (const ch of parts.join('\u0000')) {
    h ^= ch.codePointAt(0) ?? 0;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export function rng(...parts: (string | number)[]): () => number {
  let a = hash32(...parts);
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

export function pick<T>(items: readonly T[], random: () => number): T {
  return items[Math.floor(random() * items.length)] as T;
}

// ---------------------------------------------------------------------------------------------
// Errors.

/** Bad usage or environment: a message without a stack trace. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
  }
}

export interface Accent {
  /** Language code from `espeak-ng --voices=en`, e.g. en-gb-scotland. */
  language: string;
  /** Voice file, e.g. gmw/en-GB-scotland: the name for -v (see probeTools). */
  file: string;
}

export interface Tools {
  versions: Record<string, string>;
  accents: Accent[];
  variants: string[];
  fliteVoices: { voice: string; pitch: boolean }[];
}

export interface VoiceSplit {
  /** Which base voices to use: all, all but the reserved ones, or only those. */
  voices: 'all' | 'train' | 'held-out';
  /** How many base voices to reserve for held-out corpora. */
  heldOutVoices: number;
  /** Speakers per family of similar voices (1: no families). */
  family: number;
}

// ---------------------------------------------------------------------------------------------
// Speakers.

export interface BaseVoice {
  engine: Engine;
  /** espeak-ng variant (null: the accent's own voice) or flite voice. */
  name: string | null;
  /** flite: whether f0_shift works. */
  pitch: boolean;
}

/** How many distinct recipes the installed voices allow. */
export function recipeSpace(tools: Tools): { max: number; baseVoices: number } {
  const espeak =
    (tools.variants.length + 1) *
    tools.accents.length *
    ESPEAK_PITCHES.length *
    ESPEAK_SPEEDS.length;
  const flite = tools.fliteVoices.reduce(
    (n, v) => n + (v.pitch ? FLITE_PITCHES.length : 1) * FLITE_SPEEDS.length,
    0,
  );
  return { max: espeak + flite, baseVoices: tools.variants.length + 1 + tools.fliteVoices.length };
}

export function commandFor(recipe: Recipe, text = '<text>', wav = '<out.wav>'): string[] {
  if (recipe.engine === 'espeak-ng') {
    const voice = recipe.variant ? `${recipe.voice}+${recipe.variant}` : recipe.voice;
    return [
      'espeak-ng',
      ...['-v', voice, '-p', String(recipe.pitch), '-s', String(recipe.speed)],
      ...['-g', String(recipe.wordGap), '-w', wav, '--stdin'],
    ];
  }
  return [
    'flite',
    ...['-voice', recipe.voice],
    ...['--setf', `duration_stretch=${(1 / recipe.speed).toFixed(4)}`],
    ...(recipe.pitch === null ? [] : ['--setf', `f0_shift=${recipe.pitch}`]),
    ...['-t', text, '-o', wav],
  ];
}

/**
 * The first `count` speakers for a seed. Rounds over the base voices (a seeded order, flite
 * voices spread among the first slots): in each round every base voice with an unused
 * combination gives one speaker. espeak-ng speakers take the accents in turn (a seeded order);
 * pitch and speed come from the base voice's shuffled, not yet used combinations.
 */
/** A stable key for a base voice, for --held-out-voices. */
export function baseKey(base: BaseVoice): string {
  return `${base.engine}/${base.name ?? '(accent)'}`;
}

/**
 * The base voices a corpus may use. `--held-out-voices n` reserves n base voices (a seeded
 * choice that depends only on the seed and the installed voices): `--voices train` uses every
 * other base voice, `--voices held-out` only the reserved ones, `all` every one. Two corpora made
 * with the same seed and n, one `train` and one `held-out`, share no base voice.
 */
export function baseVoices(tools: Tools, seed: number, s: VoiceSplit): BaseVoice[] {
  const espeakBase: BaseVoice[] = [null, ...tools.variants].map((name) => ({
    engine: 'espeak-ng',
    name,
    pitch: true,
  }));
  const fliteBase: BaseVoice[] = tools.fliteVoices.map((v) => ({
    engine: 'flite',
    name: v.voice,
    pitch: v.pitch,
  }));
  const all = [...espeakBase, ...fliteBase];
  if (s.heldOutVoices > all.length - 1) {
    throw new UsageError(
      `--held-out-voices ${s.heldOutVoices}: only ${all.length} base voices are installed`,
    );
  }
  const reserved = new Set(
    shuffled(all.map((b) => baseKey(b)).sort(), rng(seed, 'held-out-voices')).slice(
      0,
      s.heldOutVoices,
    ),
  );
  if (s.voices === 'all') return all;
  return all.filter((b) => reserved.has(baseKey(b)) === (s.voices === 'held-out'));
}

/**
 * Speakers in families of `family` similar voices: each family is one base voice with one accent
 * and word gap, its members at adjacent pitch levels (flite rms, whose pitch is fixed: adjacent
 * speeds) and the same speed: similar voices that still count as different speakers. Base voices
 * are taken in a seeded order; a family needs a base voice the split has not used yet, so there
 * are at most (base voices) families.
 */
export function planFamilies(
  tools: Tools,
  bases: BaseVoice[],
  seed: number,
  count: number,
  firstId: number,
  family: number,
): Speaker[] {
  const families = Math.ceil(count / family);
  if (families > bases.length) {
    throw new UsageError(
      `--speakers ${count} in families of ${family} needs ${families} base voices; this split ` +
        `has ${bases.length}`,
    );
  }
  const maxFamily = Math.min(ESPEAK_PITCHES.length, FLITE_PITCHES.length, FLITE_SPEEDS.length);
  if (family > maxFamily) throw new UsageError(`--family is at most ${maxFamily}`);
  const order = shuffled(bases, rng(seed, 'family-order'));
  const accents = shuffled(tools.accents, rng(seed, 'accents'));
  const speakers: Speaker[] = [];
  for (let f = 0; f < families; f++) {
    const base = order[f] as BaseVoice;
    const random = rng(seed, 'family', f);
    const accent = accents[f % accents.length] as Accent;
    const espeak = base.engine === 'espeak-ng';
    const pitches: (number | null)[] = espeak ? ESPEAK_PITCHES : base.pitch ? FLITE_PITCHES : [];
    const speeds = espeak ? ESPEAK_SPEEDS : FLITE_SPEEDS;
    const byPitch = pitches.length > 0;
    const levels = byPitch ? pitches.length : speeds.length;
    const first = Math.floor(random() * (levels - family + 1));
    const speed = pick(speeds, random);
    const wordGap = espeak ? pick(ESPEAK_WORD_GAPS, random) : 0;
    for (let j = 0; j < family && speakers.length < count; j++) {
      const recipe: Recipe = {
        engine: base.engine,
        voice: espeak ? accent.file : (base.name ?? ''),
        accent: espeak ? accent.language : null,
        variant: espeak ? base.name : null,
        pitch: byPitch ? (pitches[first + j] ?? null) : null,
        speed: byPitch ? speed : (speeds[first + j] as number),
        wordGap,
      };
      const id = firstId + speakers.length;
      speakers.push({ id, recipe, command: commandFor(recipe) });
    }
  }
  return speakers;
}

export function planSpeakers(
  tools: Tools,
  seed: number,
  count: number,
  firstId: number,
  split: VoiceSplit = { voices: 'all', heldOutVoices: 0, family: 1 },
): Speaker[] {
  const bases = baseVoices(tools, seed, split);
  if (split.family > 1) return planFamilies(tools, bases, seed, count, firstId, split.family);
  const keep = new Set(bases.map(baseKey));
  const { max } = recipeSpace(tools);
  if (count > max) {
    throw new UsageError(
      `--speakers ${count} is more than the ${max} distinct voice recipes the installed ` +
        `espeak-ng and flite voices allow (${tools.accents.length} accents, ` +
        `${tools.variants.length} espeak-ng variants plus each accent's own voice, ` +
        `${tools.fliteVoices.length} flite voices); use --speakers ${max} or fewer`,
    );
  }
  const espeakBase: BaseVoice[] = [null, ...tools.variants].map((name) => ({
    engine: 'espeak-ng',
    name,
    pitch: true,
  }));
  const fliteBase: BaseVoice[] = tools.fliteVoices
    .map((v): BaseVoice => ({ engine: 'flite', name: v.voice, pitch: v.pitch }))
    .filter((b) => keep.has(baseKey(b)));
  // The seeded order of all espeak-ng voices, filtered afterwards: without a hold-out (the
  // default) the speakers are those of earlier versions of this script.
  const order = shuffled(espeakBase, rng(seed, 'espeak-order')).filter((b) => keep.has(baseKey(b)));
  const offset = Math.floor(rng(seed, 'flite-offset')() * FLITE_EVERY);
  shuffled(fliteBase, rng(seed, 'flite-order')).forEach((voice, k) => {
    order.splice(Math.min(order.length, offset + k * FLITE_EVERY), 0, voice);
  });
  const accents = shuffled(tools.accents, rng(seed, 'accents'));

  // Per base voice (and accent): the unused (pitch, speed) pairs, in a seeded order.
  const remaining = new Map<string, [number | null, number][]>();
  const combos = (base: BaseVoice, accent: string): [number | null, number][] => {
    const key = `${base.engine}/${base.name ?? ''}/${accent}`;
    let list = remaining.get(key);
    if (!list) {
      const pitches: (number | null)[] =
        base.engine === 'espeak-ng' ? ESPEAK_PITCHES : base.pitch ? FLITE_PITCHES : [null];
      const speeds = base.engine === 'espeak-ng' ? ESPEAK_SPEEDS : FLITE_SPEEDS;
      const all = pitches.flatMap((p) => speeds.map((s): [number | null, number] => [p, s]));
      list = shuffled(all, rng(seed, 'combos', key));
      remaining.set(key, list);
    }
    return list;
  };

  const speakers: Speaker[] = [];
  let espeakTurn = 0;
  while (speakers.length < count) {
    const before = speakers.length;
    for (const base of order) {
      if (speakers.length === count) break;
      const id = firstId + speakers.length;
      let recipe: Recipe | null = null;
      if (base.engine === 'espeak-ng') {
        for (let k = 0; k < accents.length && !recipe; k++) {
          const accent = accents[(espeakTurn + k) % accents.length] as Accent;
          const [pitch, speed] = combos(base, accent.file).shift() ?? [];
          if (speed === undefined) continue;
          const wordGap = pick(ESPEAK_WORD_GAPS, rng(seed, 'gap', id - firstId));
          recipe = {
            engine: base.engine,
            voice: accent.file,
            accent: accent.language,
            variant: base.name,
            pitch: pitch ?? null,
            speed,
            wordGap,
          };
        }
        if (recipe) espeakTurn++;
      } else {
        const [pitch, speed] = combos(base, '').shift() ?? [];
        if (speed !== undefined) {
          recipe = {
            engine: base.engine,
            voice: base.name ?? '',
            accent: null,
            variant: null,
            pitch: pitch ?? null,
            speed,
            wordGap: 0,
          };
        }
      }
      if (recipe) speakers.push({ id, recipe, command: commandFor(recipe) });
    }
    if (speakers.length === before) throw new Error('recipe space exhausted early (a bug)');
  }
  return speakers;
}
