/**
 * Writes a synthetic multi-speaker speech corpus in the LibriSpeech layout, for speaker
 * identification benchmarks:
 *
 *   <out>/<speaker>/<chapter>/<speaker>-<chapter>-<NNNN>.flac   16 kHz mono 16-bit FLAC
 *   <out>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt     "<utt-id> <TRANSCRIPT>" lines
 *   <out>/manifest.json                                         tools, seed, recipes, durations
 *
 *   npm run data:speech -- --speakers 20 --utterances 30 --out data/speech
 *   node --import @swc-node/register/esm-register scripts/make-speech-corpus.ts --help
 *
 * Each speaker is a voice recipe drawn from --seed: an espeak-ng English accent + voice variant
 * with a fixed pitch (-p), speed (-s) and word gap (-g), or a flite voice with a fixed f0_shift
 * and speaking rate. Every distinct base voice (espeak-ng variant or flite voice) is used once
 * before any is reused with another accent, pitch or speed. Speaker k's recipe depends only on
 * the seed and k, so a larger --speakers keeps the first speakers as they were. Each speaker
 * reads --utterances different sentences from scripts/speech/sentences.ts; a clip outside
 * --min-seconds..--max-seconds is thrown away and the next sentence drawn. Synthesis is
 * deterministic, so the same settings give the same corpus, byte for byte.
 *
 * Needs espeak-ng, flite and sox (Debian: sudo apt-get install espeak-ng flite sox flac).
 * Existing utterances are kept (unless --force); files are written under a temporary name and
 * renamed into place. Exit status: 0 done, 1 failure, 2 bad usage, 130 interrupted.
 */
import { execFile } from 'node:child_process';
import { mkdir, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { Progress, duration } from '../src/cli/progress.js';
import { SENTENCES, checkSentences, toTranscript } from './speech/sentences.js';
import {
  ESPEAK_VARIANTS,
  FLITE_VOICES,
  UsageError,
  commandFor,
  planSpeakers,
  recipeSpace,
  rng,
  shuffled,
  type Accent,
  type Recipe,
  type Speaker,
  type Tools,
  type VoiceSplit,
} from './speech/voices.js';

const SAMPLE_RATE = 16000;
const APT_HINT = 'sudo apt-get install espeak-ng flite sox flac';

// ---------------------------------------------------------------------------------------------
// Processes.

/** A tool that could not start (code ENOENT), failed, or was killed by a signal. */
class ToolError extends Error {
  constructor(
    message: string,
    readonly code: string | number | null,
    readonly signal: string | null,
  ) {
    super(message);
  }
}

/** Runs a program with an argv array (no shell); rejects with its stderr on failure. */
function run(cmd: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = execFile(
      cmd,
      args,
      { encoding: 'utf8', maxBuffer: 16 << 20 },
      (error, stdout, stderr) => {
        if (!error) return resolvePromise(stdout);
        const code = (error as { code?: string | number }).code ?? null;
        const detail = stderr.trim().split('\n').slice(-3).join(' / ') || error.message;
        const how = error.signal ? `killed by ${error.signal}` : `exit ${String(code)}`;
        reject(new ToolError(`${cmd} failed (${how}): ${detail}`, code, error.signal ?? null));
      },
    );
    child.stdin?.on('error', () => {}); // the child may exit before reading its input
    child.stdin?.end(input ?? '');
  });
}

/** Runs a program and returns its binary stdout. */
function runBuffer(cmd: string, args: readonly string[]): Promise<Buffer> {
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { encoding: 'buffer', maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      if (error) reject(new ToolError(`${cmd} failed: ${stderr.toString().trim()}`, null, null));
      else resolvePromise(stdout);
    });
  });
}

/** A tool's --version text (flite exits 1 after printing it); null if it is not installed. */
function toolVersion(cmd: string, args: string[]): Promise<string | null> {
  return new Promise((resolvePromise) => {
    execFile(cmd, args, { encoding: 'utf8' }, (error, stdout, stderr) => {
      const code = (error as { code?: string | number } | null)?.code;
      resolvePromise(code === 'ENOENT' ? null : `${stdout}\n${stderr}`.trim());
    });
  });
}

function firstMatch(text: string, re: RegExp): string {
  return re.exec(text)?.[1]?.trim() ?? text.trim().split('\n')[0] ?? '?';
}

/** Checks the tools and asks the engines which voices they really have. */
async function probeTools(): Promise<Tools> {
  const [espeak, flite, sox, flac] = await Promise.all([
    toolVersion('espeak-ng', ['--version']),
    toolVersion('flite', ['--version']),
    toolVersion('sox', ['--version']),
    toolVersion('flac', ['--version']),
  ]);
  const missing = Object.entries({ 'espeak-ng': espeak, flite, sox })
    .filter(([, v]) => v === null)
    .map(([k]) => k);
  if (missing.length > 0) {
    throw new UsageError(`${missing.join(', ')} not found. Install them with: ${APT_HINT}`, 1);
  }
  const soxHelp = await run('sox', ['-h']);
  if (!/AUDIO FILE FORMATS:.*\bflac\b/.test(soxHelp)) {
    throw new UsageError(`this sox cannot write FLAC. Install it with: ${APT_HINT}`, 1);
  }

  // `espeak-ng --voices=en`: Pty Language Age/Gender VoiceName File Other...; mbrola voices
  // (mb/...) are listed even when mbrola is not installed, so they are skipped. Voices are
  // named by file: `-v en-gb+f2` finds no file called en-gb and drops the variant, silently.
  const accents = new Map<string, string>(); // file -> language
  for (const line of (await run('espeak-ng', ['--voices=en'])).split('\n')) {
    const m = /^\s*\d+\s+(\S+)\s+\S+\s+\S+\s+(\S+)/.exec(line);
    if (!m?.[1] || !m[2] || m[2].startsWith('mb/') || m[2].startsWith('!v/')) continue;
    if (!accents.has(m[2])) accents.set(m[2], m[1]);
  }
  const installedVariants = new Set<string>();
  for (const line of (await run('espeak-ng', ['--voices=variant'])).split('\n')) {
    const m = /\s!v\/(\S+)/.exec(line);
    if (m?.[1]) installedVariants.add(m[1]);
  }
  const variants = ESPEAK_VARIANTS.filter((v) => installedVariants.has(v));
  // Keep only the accents that really apply a variant: the same word with and without one
  // must differ.
  const probe = variants.includes('f2') ? 'f2' : variants[0];
  const usable: Accent[] = [];
  for (const [file, language] of accents) {
    if (probe !== undefined) {
      const say = (voice: string) => runBuffer('espeak-ng', ['-v', voice, '--stdout', 'hello']);
      const [plain, varied] = await Promise.all([say(file), say(`${file}+${probe}`)]);
      if (plain.equals(varied)) {
        process.stderr.write(`note: espeak-ng ignores variants on ${file}; not using it\n`);
        continue;
      }
    }
    usable.push({ language, file });
  }
  const fliteList = new Set(
    (await run('flite', ['-lv'])).replace(/^.*?:/s, '').trim().split(/\s+/),
  );
  const tools: Tools = {
    versions: {
      'espeak-ng': firstMatch(espeak ?? '', /text-to-speech:\s*([^\s]+)/),
      flite: firstMatch(flite ?? '', /version:\s*(\S+)/),
      sox: firstMatch(sox ?? '', /(SoX v\S+)/),
      flac: flac === null ? 'not installed (sox encodes FLAC itself)' : firstMatch(flac, /(.*)/),
    },
    accents: usable.sort((a, b) => a.language.localeCompare(b.language)),
    variants,
    fliteVoices: FLITE_VOICES.filter((v) => fliteList.has(v.voice)),
  };
  if (tools.accents.length === 0) {
    throw new UsageError(`espeak-ng lists no English voice. Reinstall it: ${APT_HINT}`, 1);
  }
  return tools;
}

// ---------------------------------------------------------------------------------------------
// Files.

const tmpSuffix = `.tmp-${process.pid}`;

async function writeAtomic(path: string, data: string): Promise<void> {
  const tmp = path + tmpSuffix;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

interface FlacInfo {
  sampleRate: number;
  channels: number;
  bitsPerSample: number;
  seconds: number;
  bytes: number;
}

/**
 * Reads a FLAC file's STREAMINFO block; null if the file is missing or not FLAC. Files are
 * renamed into place whole, but one cut short by something else would still have a good
 * header: such a file (under a tenth of its PCM size; speech FLAC is about half) is refused.
 */
async function readFlacInfo(path: string): Promise<FlacInfo | null> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return null;
  }
  try {
    const buf = Buffer.alloc(42);
    const { bytesRead } = await fh.read(buf, 0, 42, 0);
    if (bytesRead < 42 || buf.toString('latin1', 0, 4) !== 'fLaC') return null;
    if ((buf.readUInt8(4) & 0x7f) !== 0) return null; // STREAMINFO comes first
    const s = buf.subarray(8); // STREAMINFO: 2+2+3+3 bytes, then 20/3/5/36 bits
    const sampleRate = (s.readUInt8(10) << 12) | (s.readUInt8(11) << 4) | (s.readUInt8(12) >> 4);
    const channels = ((s.readUInt8(12) >> 1) & 7) + 1;
    const bitsPerSample = (((s.readUInt8(12) & 1) << 4) | (s.readUInt8(13) >> 4)) + 1;
    const samples = (s.readUInt8(13) & 0x0f) * 2 ** 32 + s.readUInt32BE(14);
    const { size } = await fh.stat();
    if (size < (samples * channels * bitsPerSample) / 8 / 10) return null;
    return {
      sampleRate,
      channels,
      bitsPerSample,
      seconds: sampleRate ? samples / sampleRate : 0,
      bytes: size,
    };
  } finally {
    await fh.close();
  }
}

/** Whether process `pid` (from a temporary file name) still runs. */
function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes temporary files and work directories left by runs that died. */
async function removeStaleTemp(dir: string, depth: number): Promise<number> {
  let removed = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const m = /(?:\.tmp-|^\.work-)(\d+)$/.exec(e.name);
    if (m && !alive(Number(m[1]))) {
      await rm(join(dir, e.name), { recursive: true, force: true });
      removed++;
    } else if (e.isDirectory() && depth > 0 && /^\d+$/.test(e.name)) {
      removed += await removeStaleTemp(join(dir, e.name), depth - 1);
    }
  }
  return removed;
}

// ---------------------------------------------------------------------------------------------
// The corpus plan.

interface Chapter {
  speaker: Speaker;
  id: number;
  dir: string;
  transPath: string;
  /** utterance index in chapter -> transcript, for the utterances on disk. */
  lines: Map<number, string>;
  saving: Promise<void>;
}

interface Utterance {
  speaker: Speaker;
  chapter: Chapter;
  /** Index among the speaker's utterances (0..M-1) and within its chapter. */
  index: number;
  inChapter: number;
  id: string;
  path: string;
  /** Sentence indices to try, in order. */
  candidates: number[];
  seconds: number | null;
  sentence: number | null;
}

interface Settings extends VoiceSplit {
  speakers: number;
  utterances: number;
  chapters: number;
  out: string;
  seed: number;
  force: boolean;
  minSeconds: number;
  maxSeconds: number;
  jobs: number;
  firstId: number;
}

function saveChapter(chapter: Chapter): Promise<void> {
  chapter.saving = chapter.saving.then(() => {
    const text = [...chapter.lines.entries()]
      .sort(([a], [b]) => a - b)
      .map(([i, t]) => `${chapter.speaker.id}-${chapter.id}-${String(i).padStart(4, '0')} ${t}\n`)
      .join('');
    return writeAtomic(chapter.transPath, text);
  });
  return chapter.saving;
}

async function readTrans(path: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const text = await readFile(path, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const m = /^(\S+) (.+)$/.exec(line.trim());
    if (m?.[1] && m[2]) out.set(m[1], m[2]);
  }
  return out;
}

/**
 * Lays out chapters and utterances, keeping the utterances already on disk (valid FLAC at
 * 16 kHz mono, within the length limits, with a known transcript) unless --force.
 */
async function planCorpus(
  speakers: Speaker[],
  s: Settings,
): Promise<{ chapters: Chapter[]; utterances: Utterance[]; pruned: number }> {
  const byTranscript = new Map(SENTENCES.map((t, i) => [toTranscript(t), i]));
  const chapters: Chapter[] = [];
  const utterances: Utterance[] = [];
  let pruned = 0;
  for (const speaker of speakers) {
    const perm = shuffled(
      SENTENCES.map((_, i) => i),
      rng(s.seed, 'sentences', speaker.id - s.firstId),
    );
    const kept = new Set<number>();
    const speakerUtts: Utterance[] = [];
    const perChapter = Math.ceil(s.utterances / s.chapters);
    for (let c = 0; c < s.chapters; c++) {
      const id = c + 1;
      const dir = join(s.out, String(speaker.id), String(id));
      const chapter: Chapter = {
        speaker,
        id,
        dir,
        transPath: join(dir, `${speaker.id}-${id}.trans.txt`),
        lines: new Map(),
        saving: Promise.resolve(),
      };
      chapters.push(chapter);
      const trans = s.force ? new Map<string, string>() : await readTrans(chapter.transPath);
      const first = c * perChapter;
      const last = Math.min(s.utterances, first + perChapter);
      for (let index = first; index < last; index++) {
        const inChapter = index - first;
        const uttId = `${speaker.id}-${id}-${String(inChapter).padStart(4, '0')}`;
        // Utterance j tries sentences perm[j], perm[j + M], ...: disjoint across utterances,
        // so the choice does not depend on the order in which the workers finish.
        const candidates: number[] = [];
        for (let k = index; k < perm.length; k += s.utterances) candidates.push(perm[k] as number);
        const utt: Utterance = {
          speaker,
          chapter,
          index,
          inChapter,
          id: uttId,
          path: join(dir, `${uttId}.flac`),
          candidates,
          seconds: null,
          sentence: null,
        };
        const transcript = trans.get(uttId);
        const sentence = transcript === undefined ? undefined : byTranscript.get(transcript);
        if (sentence !== undefined && !kept.has(sentence)) {
          const info = await readFlacInfo(utt.path);
          if (
            info &&
            info.sampleRate === SAMPLE_RATE &&
            info.channels === 1 &&
            info.bitsPerSample === 16 &&
            info.seconds >= s.minSeconds &&
            info.seconds <= s.maxSeconds
          ) {
            utt.seconds = info.seconds;
            utt.sentence = sentence;
            kept.add(sentence);
            chapter.lines.set(inChapter, transcript as string);
          }
        }
        speakerUtts.push(utt);
      }
    }
    // Sentences of kept utterances (perhaps from a run with another --utterances) are taken.
    for (const u of speakerUtts) {
      if (u.sentence === null) u.candidates = u.candidates.filter((i) => !kept.has(i));
    }
    utterances.push(...speakerUtts);
    pruned += await pruneSpeakerDir(join(s.out, String(speaker.id)), speaker, speakerUtts);
  }
  return { chapters, utterances, pruned };
}

/** Removes utterance files and chapters of this speaker that the plan no longer has. */
async function pruneSpeakerDir(dir: string, speaker: Speaker, utts: Utterance[]): Promise<number> {
  const wanted = new Set(utts.flatMap((u) => [u.path, u.chapter.transPath]));
  const chapterDirs = new Set(utts.map((u) => u.chapter.dir));
  let removed = 0;
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (!e.isDirectory() || !/^\d+$/.test(e.name)) continue;
    const chapterDir = join(dir, e.name);
    const ours = new RegExp(`^${speaker.id}-${e.name}(-\\d{4}\\.flac|\\.trans\\.txt)$`);
    const files = await readdir(chapterDir);
    for (const f of files) {
      if (ours.test(f) && !wanted.has(join(chapterDir, f))) {
        await rm(join(chapterDir, f), { force: true });
        removed++;
      }
    }
    if (!chapterDirs.has(chapterDir) && (await readdir(chapterDir)).length === 0) {
      await rm(chapterDir, { recursive: true, force: true });
    }
  }
  return removed;
}

// ---------------------------------------------------------------------------------------------
// Synthesis.

class Interrupted extends Error {}

let stopping: NodeJS.Signals | null = null;

async function synthesize(
  utt: Utterance,
  s: Settings,
  workDir: string,
  stats: { redrawn: number },
): Promise<void> {
  const { recipe } = utt.speaker;
  const wav = join(workDir, `${utt.id}.wav`);
  const tmpFlac = utt.path + tmpSuffix;
  const lengths: string[] = [];
  for (const sentence of utt.candidates) {
    if (stopping) throw new Interrupted();
    const text = SENTENCES[sentence] as string;
    const [cmd, ...args] = commandFor(recipe, text, wav) as [string, ...string[]];
    try {
      await run(cmd, args, recipe.engine === 'espeak-ng' ? text : undefined);
      // -R: repeatable dither; -G: guard against clipping (some variants peak at full scale).
      await run('sox', [
        ...['-R', '-G', wav, '--comment', ''],
        ...['-r', String(SAMPLE_RATE), '-c', '1', '-b', '16', '-t', 'flac', tmpFlac],
      ]);
    } catch (e) {
      // A child killed by a signal: an interrupt (Ctrl-C reaches the whole process group).
      if (e instanceof ToolError && e.signal) stopping ??= e.signal as NodeJS.Signals;
      if (stopping) throw new Interrupted();
      throw e;
    } finally {
      await rm(wav, { force: true });
    }
    const info = await readFlacInfo(tmpFlac);
    if (!info || info.sampleRate !== SAMPLE_RATE || info.channels !== 1) {
      await rm(tmpFlac, { force: true });
      throw new Error(`${utt.id}: sox wrote no 16 kHz mono FLAC`);
    }
    if (info.seconds < s.minSeconds || info.seconds > s.maxSeconds) {
      await rm(tmpFlac, { force: true });
      lengths.push(`${info.seconds.toFixed(2)} s`);
      stats.redrawn++;
      continue;
    }
    await rename(tmpFlac, utt.path);
    utt.seconds = info.seconds;
    utt.sentence = sentence;
    utt.chapter.lines.set(utt.inChapter, toTranscript(text));
    await saveChapter(utt.chapter);
    return;
  }
  throw new Error(
    `speaker ${utt.speaker.id} (${describe(recipe)}): no sentence left for utterance ` +
      `${utt.index + 1} between ${s.minSeconds} and ${s.maxSeconds} s (tried ${lengths.length}: ` +
      `${lengths.join(', ') || 'none left'}); lower --utterances or widen --min/--max-seconds`,
  );
}

function describe(r: Recipe): string {
  if (r.engine === 'espeak-ng') {
    return `espeak-ng ${r.voice}${r.variant ? `+${r.variant}` : ''} p${r.pitch} s${r.speed} g${r.wordGap}`;
  }
  return `flite ${r.voice} f0x${r.pitch ?? '-'} rate ${r.speed}`;
}

/** Runs `fn` over `items` with `jobs` workers; stops taking work on the first failure. */
async function pool<T>(items: T[], jobs: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown = null;
  const worker = async (): Promise<void> => {
    while (failure === null && !stopping && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (e) {
        if (!(e instanceof Interrupted) && failure === null) failure = e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, items.length) }, worker));
  if (failure !== null) throw failure;
}

// ---------------------------------------------------------------------------------------------
// Main.

function intArg(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        `expected an integer in ${min}..${max === Number.MAX_SAFE_INTEGER ? '' : max}`,
      );
    }
    return n;
  };
}

function secondsArg(value: string): number {
  const n = Number(value);
  if (!(Number.isFinite(n) && n >= 0)) throw new InvalidArgumentError('expected seconds >= 0');
  return n;
}

function parseArgs(argv: string[]): Settings {
  const program = new Command('make-speech-corpus')
    .description(
      'Synthesise a multi-speaker English speech corpus (espeak-ng and flite voices) in the ' +
        'LibriSpeech layout: <out>/<speaker>/<chapter>/<speaker>-<chapter>-<NNNN>.flac, ' +
        '16 kHz mono FLAC, with .trans.txt transcripts and a manifest.json.',
    )
    .requiredOption('--out <dir>', 'output directory (created if missing)')
    .addOption(new Option('--speakers <n>', 'number of speakers').default(20).argParser(intArg(1)))
    .addOption(
      new Option('--utterances <m>', `utterances per speaker (at most ${SENTENCES.length})`)
        .default(30)
        .argParser(intArg(1, SENTENCES.length)),
    )
    .addOption(
      new Option('--chapters <c>', 'chapters per speaker (utterances split evenly)')
        .default(1)
        .argParser(intArg(1, 99)),
    )
    .addOption(
      new Option('--seed <n>', 'seed for voice recipes and sentence draws')
        .default(1)
        .argParser(intArg(0)),
    )
    .addOption(
      new Option('--min-seconds <s>', 're-draw the sentence if a clip is shorter')
        .default(1)
        .argParser(secondsArg),
    )
    .addOption(
      new Option('--max-seconds <s>', 're-draw the sentence if a clip is longer')
        .default(6)
        .argParser(secondsArg),
    )
    .addOption(
      new Option('--first-id <n>', 'id of the first speaker (LibriSpeech-like numbers)')
        .default(1001)
        .argParser(intArg(1)),
    )
    .addOption(
      new Option('--jobs <n>', 'synthesis processes run at once').default(2).argParser(intArg(1)),
    )
    .addOption(
      new Option(
        '--held-out-voices <n>',
        'reserve this many base voices (seeded) for held-out sets',
      )
        .default(0)
        .argParser(intArg(0)),
    )
    .addOption(
      new Option('--voices <which>', 'base voices to use: all, all but the reserved, the reserved')
        .choices(['all', 'train', 'held-out'])
        .default('all'),
    )
    .addOption(
      new Option('--family <k>', 'speakers per family of similar voices (adjacent pitches)')
        .default(1)
        .argParser(intArg(1, 5)),
    )
    .option('--force', 're-synthesise utterances that are already present', false)
    .showHelpAfterError('(run with --help for the options)')
    .exitOverride();
  try {
    program.parse(argv);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
    throw e;
  }
  const o = program.opts<Omit<Settings, 'out'> & { out: string }>();
  if (o.minSeconds >= o.maxSeconds) {
    throw new UsageError('--min-seconds must be below --max-seconds');
  }
  if (o.chapters > o.utterances) throw new UsageError('--chapters must not exceed --utterances');
  if (o.voices !== 'all' && o.heldOutVoices === 0) {
    throw new UsageError(`--voices ${o.voices} needs --held-out-voices n (n >= 1)`);
  }
  return { ...o, out: resolve(o.out) };
}

interface SpeakerManifest {
  id: number;
  recipe: Recipe;
  command: string[];
  chapters: number[];
  utterances: number;
  seconds: number;
}

interface Manifest {
  generator: string;
  status: 'incomplete' | 'complete';
  created: string;
  seed: number;
  settings: Omit<Settings, 'out' | 'force' | 'jobs'> & { sampleRate: number; format: string };
  tools: Record<string, string>;
  recipeSpace: { maxSpeakers: number; baseVoices: number };
  sentencePool: number;
  totals?: { speakers: number; utterances: number; seconds: number; bytes: number };
  speakers: SpeakerManifest[];
}

/** Refuses to mix two corpora: same seed, chapters and recipes, or --force. */
async function checkPrevious(path: string, s: Settings, speakers: Speaker[]): Promise<void> {
  const text = await readFile(path, 'utf8').catch(() => null);
  if (text === null || s.force) return;
  let prev: Partial<Manifest>;
  try {
    prev = JSON.parse(text) as Partial<Manifest>;
  } catch {
    throw new UsageError(`${path} is not valid JSON; pass --force or choose another --out`);
  }
  const problems: string[] = [];
  if (prev.seed !== s.seed) problems.push(`--seed ${String(prev.seed)}`);
  if (prev.settings?.chapters !== undefined && prev.settings.chapters !== s.chapters) {
    problems.push(`--chapters ${prev.settings.chapters}`);
  }
  const before = new Map((prev.speakers ?? []).map((p) => [p.id, p.recipe]));
  const changed = speakers.filter((sp) => {
    const old = before.get(sp.id);
    return old !== undefined && JSON.stringify(old) !== JSON.stringify(sp.recipe);
  });
  if (changed.length > 0) {
    problems.push(`other recipes for speakers ${changed.map((sp) => sp.id).join(', ')}`);
  }
  if (problems.length > 0) {
    throw new UsageError(
      `${s.out} holds a corpus made with ${problems.join('; ')}. Pass --force to re-synthesise ` +
        'it with these settings, or choose another --out',
    );
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  checkSentences();
  const s = parseArgs(process.argv);
  const tools = await probeTools();
  const space = recipeSpace(tools);
  const speakers = planSpeakers(tools, s.seed, s.speakers, s.firstId, s);
  const manifestPath = join(s.out, 'manifest.json');
  await mkdir(s.out, { recursive: true });
  await checkPrevious(manifestPath, s, speakers);
  const stale = await removeStaleTemp(s.out, 2);

  const { chapters, utterances, pruned } = await planCorpus(speakers, s);
  const todo = utterances.filter((u) => u.seconds === null);
  for (const dir of new Set(todo.map((u) => u.chapter.dir))) await mkdir(dir, { recursive: true });

  const writeManifest = async (status: Manifest['status']): Promise<Manifest> => {
    const perSpeaker = new Map<number, Utterance[]>();
    for (const u of utterances) {
      perSpeaker.set(u.speaker.id, [...(perSpeaker.get(u.speaker.id) ?? []), u]);
    }
    let bytes = 0;
    if (status === 'complete') {
      for (const u of utterances) bytes += (await stat(u.path)).size;
    }
    const manifest: Manifest = {
      generator: 'scripts/make-speech-corpus.ts',
      status,
      created: new Date().toISOString(),
      seed: s.seed,
      settings: {
        speakers: s.speakers,
        utterances: s.utterances,
        chapters: s.chapters,
        seed: s.seed,
        minSeconds: s.minSeconds,
        maxSeconds: s.maxSeconds,
        firstId: s.firstId,
        voices: s.voices,
        heldOutVoices: s.heldOutVoices,
        family: s.family,
        sampleRate: SAMPLE_RATE,
        format: 'flac, mono, 16-bit',
      },
      tools: tools.versions,
      recipeSpace: { maxSpeakers: space.max, baseVoices: space.baseVoices },
      sentencePool: SENTENCES.length,
      speakers: speakers.map((sp) => {
        const utts = perSpeaker.get(sp.id) ?? [];
        const done = utts.filter((u) => u.seconds !== null);
        return {
          id: sp.id,
          recipe: sp.recipe,
          command: sp.command,
          chapters: [...new Set(utts.map((u) => u.chapter.id))],
          utterances: done.length,
          seconds: Number(done.reduce((t, u) => t + (u.seconds ?? 0), 0).toFixed(3)),
        };
      }),
    };
    if (status === 'complete') {
      manifest.totals = {
        speakers: speakers.length,
        utterances: utterances.length,
        seconds: Number(manifest.speakers.reduce((t, sp) => t + sp.seconds, 0).toFixed(3)),
        bytes,
      };
    }
    await writeAtomic(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
    return manifest;
  };
  await writeManifest('incomplete');

  const log = (line: string) => process.stderr.write(`${line}\n`);
  log(
    `speech corpus: ${s.speakers} speakers x ${s.utterances} utterances -> ${s.out} ` +
      `(seed ${s.seed}; ${utterances.length - todo.length} present, ${todo.length} to synthesise` +
      `${stale ? `; removed ${stale} stale temp files` : ''}` +
      `${pruned ? `; removed ${pruned} files no longer in the plan` : ''})`,
  );
  const extra = (await readdir(s.out, { withFileTypes: true }))
    .filter((e) => e.isDirectory() && /^\d+$/.test(e.name))
    .map((e) => Number(e.name))
    .filter((id) => !speakers.some((sp) => sp.id === id));
  if (extra.length > 0) {
    log(`note: ${s.out} also holds speakers ${extra.join(', ')}, not in this corpus`);
  }

  const workDir = join(s.out, `.work-${process.pid}`);
  await mkdir(workDir, { recursive: true });
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = signal;
    process.stderr.write(`\n${signal}: finishing the clips in progress, then stopping\n`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const progress = new Progress('synthesising', 5_000);
  const stats = { redrawn: 0 };
  let done = 0;
  const synthStart = Date.now();
  if (todo.length > 0) progress.start(todo.length, { status: '' });
  let failure: unknown = null;
  try {
    await pool(todo, s.jobs, async (utt) => {
      await synthesize(utt, s, workDir, stats);
      done++;
      const elapsed = (Date.now() - synthStart) / 1000;
      const rate = done / Math.max(elapsed, 1e-3);
      progress.update(
        done,
        todo.length,
        `${rate.toFixed(1)} utt/s, speaker ${utt.speaker.id}`,
        (todo.length - done) / rate,
      );
    });
  } catch (e) {
    failure = e;
  } finally {
    progress.stop();
    // Every transcript file lists exactly the chapter's utterances on disk.
    await Promise.all(
      chapters.map((c) =>
        (c.lines.size > 0 ? saveChapter(c) : rm(c.transPath, { force: true })).catch(() => {}),
      ),
    );
    await rm(workDir, { recursive: true, force: true });
    await Promise.all(todo.map((u) => rm(u.path + tmpSuffix, { force: true })));
  }
  const synthSeconds = (Date.now() - synthStart) / 1000;
  if (failure !== null || stopping) {
    await writeManifest('incomplete');
    if (failure !== null) throw failure;
    log(`stopped after ${done}/${todo.length} utterances; run again to continue`);
    process.exit(130);
  }

  const manifest = await writeManifest('complete');
  const totals = manifest.totals as NonNullable<Manifest['totals']>;
  const rate = done / Math.max(synthSeconds, 1e-3);
  console.log(
    `${s.out}: ${totals.speakers} speakers, ${totals.utterances} utterances, ` +
      `${duration(totals.seconds)} of audio (${totals.seconds.toFixed(1)} s), ` +
      `${(totals.bytes / 1e6).toFixed(1)} MB. Synthesised ${done} in ${synthSeconds.toFixed(1)} s ` +
      `(${rate.toFixed(1)} utt/s, ${stats.redrawn} re-drawn for length); ` +
      `total ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
}

try {
  await main();
} catch (e) {
  if (e instanceof UsageError) {
    process.stderr.write(`make-speech-corpus: ${e.message}\n`);
    process.exit(e.exitCode);
  }
  process.stderr.write(`make-speech-corpus: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}
