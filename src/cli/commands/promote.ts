import { Command, InvalidArgumentError } from 'commander';
import { dataSpecOfSource } from '../../gim/classify/train-head.js';
import { DATASET_SPEC_HELP } from '../../gim/data/open-dataset.js';
import { GimError } from '../../gim/errors.js';
import {
  stackSpace,
  strandedHeads,
  strandedHeadsError,
  type StrandedHead,
} from '../../gim/store/head-binding.js';
import { HeadStore } from '../../gim/store/head-store.js';
import type { LabelMoveMeta } from '../../gim/store/label-history.js';
import type { ProbeScore, PromotionEvaluation } from '../../gim/store/manifest.js';
import { StackStore } from '../../gim/store/stack-store.js';
import { checkLabel } from '../../gim/store/versioned-dir.js';
import {
  reportedRun,
  withProgressJsonOptions,
  type ProgressJsonOptions,
  type RunContext,
} from '../reported-run.js';
import { backendOption, int, modelsDirOption, positiveNumber, startBackend } from '../shared.js';
import { trainAndPublishHead } from './classifier.js';
import { probeScore, probeSettings, probeStack, type ProbeOptions } from './probe.js';

interface PromoteOptions extends ProgressJsonOptions {
  model: string;
  label: string;
  gateData?: string;
  gateTestData?: string;
  gateLayers: string;
  gatePooling?: string;
  gateEpochs: number;
  gateLimit?: number;
  gateSeed: number;
  gateTestFraction: number;
  margin: number;
  retrainHeads?: boolean;
  dryRun?: boolean;
  by: string;
  reason?: string;
  modelsDir: string;
  backend?: string;
}

/** A retrained head: the version that served the old target, and the one published for the new. */
interface RetrainedHead {
  head: string;
  from: number;
  version: number;
  /** Head labels moved from `from` to `version`. */
  labels: string[];
}

export function promoteCommand(): Command {
  return withProgressJsonOptions(new Command('promote'))
    .description(
      'move a label (default stable) to a stack version if its probe accuracy beats the current ' +
        "target's by a margin, and only if no head bound to the label would be stranded",
    )
    .requiredOption('--model <ref>', 'the candidate: name@version (or name@label)')
    .option('--label <label>', 'the label to move', 'stable')
    .option(
      '--gate-data <spec>',
      `labelled data the gate probes both versions on: ${DATASET_SPEC_HELP}, or a speaker ` +
        'folder (audio); without it there is no gate (only the head check)',
    )
    .option('--gate-test-data <spec>', 'labelled test data (default: a stratified split)')
    .option('--gate-layers <list>', 'layers the gate probes: all, last or a list', 'all')
    .option('--gate-pooling <list>', 'poolings the gate probes (default: as `gim probe`)')
    .option('--gate-epochs <n>', 'probe training epochs', int(1), 20)
    .option('--gate-limit <n>', 'at most n training items (stratified)', int(10))
    .option('--gate-seed <n>', 'split and probe seed', int(0), 1)
    .option('--gate-test-fraction <f>', 'audio: share of utterances held out', positiveNumber, 0.2)
    .option(
      '--margin <x>',
      'the candidate must beat the current target by at least this much accuracy (0.01 = 1 point)',
      number,
      0,
    )
    .option(
      '--retrain-heads',
      'retrain the heads the move would strand on the candidate (their recorded data and ' +
        'settings), then move the label and theirs together',
    )
    .option('--dry-run', 'evaluate and check, record the verdict in the manifest, move nothing')
    .option('--by <who>', 'who asks, for the label history', 'cli')
    .option('--reason <text>', 'why, for the label history')
    .addOption(modelsDirOption())
    .addOption(backendOption())
    .action((o: PromoteOptions) =>
      reportedRun({ ...o, command: 'promote', name: o.model }, async (ctx) => {
        checkLabel(o.label);
        const stacks = new StackStore(o.modelsDir);
        const heads = new HeadStore(o.modelsDir);
        const { name, version } = await stacks.resolve(o.model);
        const current = (await stacks.labelState(name)).labels[o.label];
        const say = (line: string) => {
          ctx.out.write(`${line}\n`);
          ctx.events.emit({ type: 'log', line });
        };
        say(
          `promoting ${name}@${version} to '${o.label}' (now ${current === undefined ? 'unset' : `version ${current}`})` +
            `${o.dryRun ? ' (dry run)' : ''}`,
        );
        const needsBackend = o.gateData !== undefined || o.retrainHeads === true;
        if (needsBackend) await startBackend(o.backend, false, ctx.log);

        // 1. The gate: both versions probed on the same data with the same settings, this run.
        let gate: PromotionEvaluation | undefined;
        if (o.gateData !== undefined) {
          // One set of probe options for both versions (only the model differs).
          const probe: ProbeOptions = {
            model: `${name}@${version}`,
            data: o.gateData,
            testData: o.gateTestData,
            layers: o.gateLayers,
            pooling: o.gatePooling,
            testFraction: o.gateTestFraction,
            epochs: o.gateEpochs,
            limit: o.gateLimit,
            seed: o.gateSeed,
            modelsDir: o.modelsDir,
            progressIntervalMs: o.progressIntervalMs,
          };
          const score = async (v: number): Promise<ProbeScore> => {
            say(`gate: probing ${name}@${v}`);
            const { rows } = await probeStack({ ...probe, model: `${name}@${v}` }, ctx);
            return probeScore(v, rows);
          };
          const candidate = await score(version);
          const baseline =
            current === undefined || current === version ? null : await score(current);
          const passed = baseline === null || candidate.accuracy >= baseline.accuracy + o.margin;
          gate = {
            kind: 'promotion-gate',
            at: new Date().toISOString(),
            by: o.by,
            label: o.label,
            data: o.gateData,
            testData: o.gateTestData ?? null,
            settings: probeSettings(probe),
            margin: o.margin,
            candidate,
            baseline,
            passed,
            dryRun: o.dryRun === true,
          };
          await stacks.recordEvaluation(`${name}@${version}`, gate);
          say(`gate ${passed ? 'passed' : 'refused'}: ${gateLine(gate)}`);
        }
        const verdict = gate && gateSummary(gate);

        // 2. The heads bound to the label's current target that the candidate would strand.
        let stranded: StrandedHead[] = [];
        if (current !== undefined && current !== version)
          stranded = await strandedHeads(
            heads,
            name,
            await stackSpace(stacks, `${name}@${current}`),
            await stackSpace(stacks, `${name}@${version}`),
          );
        for (const s of stranded)
          say(
            `head ${s.head}@${s.version} (layer ${s.layer}, ${s.pooling}) fits version ${current}, ` +
              `not ${version}: needs space ${s.requiredEmbeddingSpaceId}, gets ${s.givenEmbeddingSpaceId ?? 'no such layer'}`,
          );
        const base = {
          model: name,
          version,
          label: o.label,
          from: current ?? null,
          ...(verdict ? { gate: verdict } : {}),
          strandedHeads: stranded,
        };
        const meta = (extra: Partial<LabelMoveMeta> = {}): LabelMoveMeta => ({
          by: o.by,
          ...(o.reason !== undefined ? { reason: o.reason } : {}),
          ...(verdict ? { gate: verdict } : {}),
          ...extra,
        });

        if (o.dryRun) {
          const wouldPromote =
            (gate?.passed ?? true) && (stranded.length === 0 || o.retrainHeads === true);
          say(`dry run: would ${wouldPromote ? '' : 'not '}promote; nothing moved`);
          ctx.events.emit({
            type: 'promotion',
            promoted: false,
            dryRun: true,
            wouldPromote,
            ...base,
          });
          return;
        }
        if (gate && !gate.passed) {
          await stacks.recordLabelDecision(name, o.label, meta());
          ctx.events.emit({ type: 'promotion', promoted: false, dryRun: false, ...base });
          return;
        }
        if (current === version) {
          // A resumed promotion whose move had happened: the label is where it was asked to be.
          say(`'${o.label}' already points at version ${version}`);
          ctx.events.emit({
            type: 'promotion',
            promoted: true,
            already: true,
            dryRun: false,
            ...base,
          });
          return;
        }
        if (stranded.length > 0 && o.retrainHeads !== true)
          throw strandedHeadsError(
            name,
            o.label,
            current as number,
            version,
            stranded,
            'ask for the heads to be retrained (gim promote --retrain-heads; job spec ' +
              '"retrain_heads": true), or retrain them yourself first',
          );

        // 3. Heads first: new versions that fit the candidate (published under `latest` only).
        const retrained: RetrainedHead[] = [];
        for (const s of stranded) {
          ctx.throwIfStopped(`before retraining head ${s.head}`);
          retrained.push(await retrainHead(o, ctx, heads, name, version, s));
        }

        // 4. The move: the stack label, compare-and-set against the target decided on, then the
        // head labels. A request resolving the label in between gets a head version that fits
        // whichever target it resolved (headVersionFor), so none fails.
        ctx.publishing();
        const state = await stacks.labelState(name);
        if (state.labels[o.label] !== current)
          throw new GimError(
            'conflict',
            `'${o.label}' of ${name} moved to ${state.labels[o.label] ?? 'nothing'} while the ` +
              `promotion ran (it was ${current ?? 'unset'}): run it again`,
          );
        await stacks.moveLabel(name, o.label, version, meta(), state.etag);
        for (const r of retrained)
          for (const label of r.labels)
            await heads.moveLabel(
              name,
              r.head,
              label,
              r.version,
              meta({ reason: `with ${name}@${o.label} -> ${version}` }),
            );
        say(`moved ${name}@${o.label}: ${current ?? 'unset'} -> ${version}`);
        ctx.events.emit({ type: 'promotion', promoted: true, dryRun: false, ...base, retrained });
      }),
    );
}

/** Trains a stranded head again on the candidate with its recorded data and settings. */
async function retrainHead(
  o: PromoteOptions,
  ctx: RunContext,
  heads: HeadStore,
  model: string,
  version: number,
  s: StrandedHead,
): Promise<RetrainedHead> {
  const old = await heads.loadManifest(model, `${s.head}@${s.version}`);
  const spec = (source: string, what: string): string => {
    const found = dataSpecOfSource(source);
    if (found === undefined)
      throw new GimError(
        'invalid_data',
        `head ${s.head}@${s.version} cannot be retrained: its ${what} came from '${source}', ` +
          'which names no dataset to open again; retrain it by hand',
      );
    return found;
  };
  ctx.log(`retraining head ${s.head} (was version ${s.version}) on ${model}@${version}`);
  const { classWeightValues: _weights, ...options } = old.training;
  const head = await trainAndPublishHead(
    {
      model: `${model}@${version}`,
      name: s.head,
      layer: String(old.encoder.layer),
      pooling: old.encoder.pooling,
      normalize: old.encoder.normalize,
      data: spec(old.data.source, 'training data'),
      testData: old.data.test ? spec(old.data.test.source, 'test data') : undefined,
      options,
      labels: ['latest'],
      modelsDir: o.modelsDir,
      emitPublished: false,
    },
    ctx,
  );
  const labels = Object.entries((await heads.labelState(model, s.head)).labels)
    .filter(([label, v]) => v === s.version && label !== 'latest')
    .map(([label]) => label);
  return { head: s.head, from: s.version, version: head.version, labels };
}

/** The verdict as the label history and the job's result carry it. */
function gateSummary(g: PromotionEvaluation): Record<string, unknown> {
  return {
    passed: g.passed,
    metric: 'probe_test_accuracy',
    candidate: {
      version: g.candidate.version,
      accuracy: g.candidate.accuracy,
      ...g.candidate.best,
    },
    baseline: g.baseline && {
      version: g.baseline.version,
      accuracy: g.baseline.accuracy,
      ...g.baseline.best,
    },
    margin: g.margin,
    data: g.data,
    dryRun: g.dryRun,
  };
}

function gateLine(g: PromotionEvaluation): string {
  const pct = (a: number) => `${(100 * a).toFixed(2)}%`;
  const c = `version ${g.candidate.version} ${pct(g.candidate.accuracy)}`;
  if (g.baseline === null) return `${c}; no current target to beat`;
  return `${c} vs version ${g.baseline.version} ${pct(g.baseline.accuracy)} + margin ${pct(g.margin)}`;
}

function number(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < -1 || n > 1)
    throw new InvalidArgumentError('expected a number from -1 to 1 (0.01 = 1 point of accuracy)');
  return n;
}
