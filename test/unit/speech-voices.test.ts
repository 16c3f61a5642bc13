import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ESPEAK_PITCHES,
  ESPEAK_VARIANTS,
  FLITE_PITCHES,
  FLITE_SPEEDS,
  FLITE_VOICES,
  UsageError,
  baseKey,
  baseVoices,
  planSpeakers,
  type Recipe,
  type Tools,
  type VoiceSplit,
} from '../../scripts/speech/voices.js';

// What the engines report on this project's Debian machines, less than all of it: the planning
// only needs the lists (make-speech-corpus.ts asks the real engines for them).
const TOOLS: Tools = {
  versions: {},
  accents: [
    { language: 'en-gb', file: 'gmw/en' },
    { language: 'en-gb-scotland', file: 'gmw/en-GB-scotland' },
    { language: 'en-us', file: 'gmw/en-US' },
    { language: 'en-us-nyc', file: 'gmw/en-US-nyc' },
  ],
  variants: ESPEAK_VARIANTS.slice(0, 40),
  fliteVoices: [...FLITE_VOICES],
};

/** The base voice a recipe is made from, as the hold-out counts it. */
const baseOf = (r: Recipe) =>
  baseKey({ engine: r.engine, name: r.engine === 'flite' ? r.voice : r.variant, pitch: true });

const split = (voices: VoiceSplit['voices'], family = 1): VoiceSplit => ({
  voices,
  heldOutVoices: 12,
  family,
});

test('--held-out-voices: train and held-out corpora of one seed share no base voice', () => {
  const all = baseVoices(TOOLS, 1, split('all')).map(baseKey);
  const train = baseVoices(TOOLS, 1, split('train')).map(baseKey);
  const heldOut = baseVoices(TOOLS, 1, split('held-out')).map(baseKey);
  assert.equal(heldOut.length, 12);
  assert.equal(train.length + heldOut.length, all.length);
  assert.deepEqual([...train, ...heldOut].sort(), [...all].sort());
  assert.ok(heldOut.every((k) => !train.includes(k)));
  // The reserved set depends on the seed, not on the order of the engines' lists.
  const reversed = { ...TOOLS, variants: [...TOOLS.variants].reverse() };
  assert.deepEqual(baseVoices(reversed, 1, split('held-out')).map(baseKey).sort(), heldOut.sort());
  assert.notDeepEqual(baseVoices(TOOLS, 2, split('held-out')).map(baseKey).sort(), heldOut.sort());

  // Through the speakers: 160 training speakers and 36 held-out ones (families of 3).
  const trainBases = new Set(
    planSpeakers(TOOLS, 1, 160, 1001, split('train')).map((s) => baseOf(s.recipe)),
  );
  const heldOutSpeakers = planSpeakers(TOOLS, 1, 36, 5001, split('held-out', 3));
  assert.equal(heldOutSpeakers.length, 36);
  for (const s of heldOutSpeakers)
    assert.ok(!trainBases.has(baseOf(s.recipe)), `${baseOf(s.recipe)} is in both corpora`);
});

test('--family 3: members share voice, accent, speed and word gap, at adjacent pitch levels', () => {
  const speakers = planSpeakers(TOOLS, 1, 36, 5001, split('held-out', 3));
  assert.deepEqual(
    speakers.map((s) => s.id),
    Array.from({ length: 36 }, (_, i) => 5001 + i),
  );
  const bases = new Set<string>();
  for (let f = 0; f < 12; f++) {
    const members = speakers.slice(3 * f, 3 * f + 3).map((s) => s.recipe);
    const [first] = members as [Recipe];
    bases.add(baseOf(first));
    for (const m of members) {
      assert.equal(m.engine, first.engine);
      assert.equal(m.voice, first.voice);
      assert.equal(m.accent, first.accent);
      assert.equal(m.variant, first.variant);
      assert.equal(m.wordGap, first.wordGap);
    }
    if (first.engine === 'espeak-ng' || first.pitch !== null) {
      // Pitch steps: one level apart, same speed.
      const levels = members.map((m) =>
        (first.engine === 'espeak-ng' ? ESPEAK_PITCHES : FLITE_PITCHES).indexOf(m.pitch as number),
      );
      assert.ok(levels.every((l) => l >= 0));
      assert.deepEqual(levels, [levels[0], (levels[0] as number) + 1, (levels[0] as number) + 2]);
      assert.ok(members.every((m) => m.speed === first.speed));
    } else {
      // flite rms ignores f0_shift: its members are adjacent speeds.
      const levels = members.map((m) => FLITE_SPEEDS.indexOf(m.speed));
      assert.deepEqual(levels, [levels[0], (levels[0] as number) + 1, (levels[0] as number) + 2]);
    }
  }
  assert.equal(bases.size, 12, 'one base voice per family');
  assert.throws(
    () => planSpeakers(TOOLS, 1, 39, 5001, split('held-out', 3)),
    (e: unknown) => e instanceof UsageError && /needs 13 base voices/.test(e.message),
  );
});

test('speaker k depends only on the seed and k: a larger corpus keeps its first speakers', () => {
  const small = planSpeakers(TOOLS, 1, 20, 1001, split('train'));
  const large = planSpeakers(TOOLS, 1, 60, 1001, split('train'));
  assert.deepEqual(large.slice(0, 20), small);
  assert.deepEqual(planSpeakers(TOOLS, 1, 20, 1001, split('train')), small);
  const recipes = new Set(large.map((s) => JSON.stringify(s.recipe)));
  assert.equal(recipes.size, large.length, 'no two speakers share a recipe');
});
