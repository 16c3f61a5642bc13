import { join } from 'node:path';
import { peekCheckpoint, removeCheckpoints } from '../gim/training/checkpoint.js';
import type { TrainJobOptions, TrainOutcome } from '../gim/training/train-stack.js';
import type { TrainableStack } from '../gim/training/modality.js';
import type { CheckpointReason } from '../gim/training/run-training.js';
import { StackStore } from '../gim/store/stack-store.js';
import { isUntrained } from '../gim/store/manifest.js';
import { duration, Progress, progressCallbacks } from './progress.js';
import { reportedRun, type ProgressJsonOptions } from './reported-run.js';

/** What `gim train <modality>` needs from its options to run as a reported job. */
export interface TrainJobCliOptions extends ProgressJsonOptions {
  name: string;
  modelsDir: string;
  checkpointDir?: string;
  resume?: boolean;
  /** 0: the untrained twin is published; no checkpoint is read, written or removed. */
  epochs: number;
  label: string[];
}

/** What the modality's action gets to train with. */
export interface TrainJobContext {
  progress: Progress;
  callbacks: NonNullable<TrainJobOptions['callbacks']>;
  signal: AbortSignal;
  checkpointDir: string;
  store: StackStore;
}

/**
 * A training run as a job: progress on stderr and as events, a stop signal that checkpoints and
 * exits 3 without publishing, and the publish with its `published` and `result` events.
 */
export async function runTrainJob(
  o: TrainJobCliOptions,
  modality: 'image' | 'audio',
  train: (job: TrainJobContext) => Promise<TrainOutcome<TrainableStack>>,
): Promise<void> {
  const checkpointDir = o.checkpointDir ?? join('.checkpoints', o.name);
  await reportedRun(
    {
      ...o,
      command: 'train',
      modality,
      name: o.name,
      resumeStep: async () =>
        o.resume && o.epochs !== 0 ? ((await peekCheckpoint(checkpointDir))?.step ?? null) : null,
    },
    async (ctx) => {
      const { events } = ctx;
      const progress = new Progress('train', undefined, process.stderr, (line) =>
        events.emit({ type: 'log', line }),
      );
      const human = progressCallbacks(progress);
      let last: { path: string; globalStep: number; reason: CheckpointReason } | undefined;
      const callbacks: TrainJobContext['callbacks'] = {
        onLog: human.onLog,
        onStep: (p) => {
          human.onStep?.(p);
          events.progress(p, p.step === p.stepsPerEpoch);
        },
        onEpochEnd: (e) => {
          human.onEpochEnd?.(e);
          events.emit({ type: 'epoch', ...e });
        },
        onCheckpoint: (path, info) => {
          last = { path, ...info };
          events.emit({ type: 'checkpoint', path, ...info });
        },
      };
      const store = new StackStore(o.modelsDir);
      const outcome = await train({
        progress,
        callbacks,
        signal: ctx.signal,
        checkpointDir,
        store,
      });
      const untrained = isUntrained(outcome.draft.manifest);
      if (ctx.signal.aborted) {
        progress.stop();
        outcome.stack.dispose();
        if (untrained) ctx.throwIfStopped('before publishing the untrained stack');
        // Stopped after training had ended: its last epoch checkpoint is the stop's checkpoint.
        if (last && last.reason !== 'cancel')
          events.emit({ type: 'checkpoint', ...last, reason: 'cancel' });
        ctx.throwIfStopped(
          `at step ${outcome.result.steps}; checkpoint in ${checkpointDir} (continue with --resume)`,
        );
      }
      ctx.publishing();
      progress.stop();
      const manifest = await store.publish(o.name, outcome.draft, { labels: o.label });
      outcome.stack.dispose();
      // An untrained publish used no checkpoint: one there belongs to another run.
      if (!untrained) await removeCheckpoints(checkpointDir);
      events.emit({
        type: 'published',
        kind: 'stack',
        name: manifest.name,
        version: manifest.version,
        labels: o.label,
      });
      const { result } = outcome;
      const line =
        `published ${manifest.name}@${manifest.version} (labels: ${o.label.join(', ')}) in ${store.root}; ` +
        (untrained
          ? `untrained: the initial weights of seed ${manifest.training.seed} (a random-init baseline)`
          : `final losses ${manifest.modules.map((m) => m.finalLoss?.toFixed(4) ?? '-').join(' / ')}; ` +
            `${result.steps} steps in ${duration(result.durationSeconds)}`);
      ctx.out.write(`${line}\n`);
      events.emit({ type: 'log', line });
      events.emit({
        type: 'result',
        finalLosses: result.finalLosses,
        steps: result.steps,
        durationSeconds: result.durationSeconds,
      });
    },
  );
}
