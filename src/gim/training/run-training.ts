import { GimError } from '../errors.js';
import { Rng } from '../random.js';
import type { TrainConfig } from './config.js';
import type { TrainingData } from './modality.js';
import { exportTrainerState, releaseTrainerState, type GreedyTrainer } from './greedy-trainer.js';
import { join } from 'node:path';
import {
  CHECKPOINT_FORMAT,
  checkpointName,
  saveCheckpoint,
  type CheckpointState,
} from './checkpoint.js';

export interface StepProgress {
  /** 1-based phase and module being trained (sequential), or null when all train together. */
  phase: number;
  phases: number;
  module: number | null;
  epoch: number;
  epochs: number;
  step: number;
  stepsPerEpoch: number;
  /** Optimiser steps over the whole run, and their total. */
  globalStep: number;
  totalSteps: number;
  /** Loss of this step per module (null: not trained in this step). */
  losses: (number | null)[];
  /** Items (images, clips) per second, and their units (patches, ...) per second. */
  itemsPerSecond: number;
  unitsPerSecond: number;
  unitName: string;
  etaSeconds: number;
}

export interface EpochSummary {
  phase: number;
  module: number | null;
  epoch: number;
  /** Mean loss of the epoch per module (null: not trained in this epoch). */
  losses: (number | null)[];
  seconds: number;
}

/** Why a checkpoint was taken: at the end of an epoch, or where a stopped run stopped. */
export type CheckpointReason = 'epoch' | 'cancel';

export interface TrainCallbacks {
  onStep?(p: StepProgress): void;
  onEpochEnd?(e: EpochSummary): void;
  /**
   * A checkpoint is on disk at `path`. On a stop, called once with reason `cancel` (with the
   * checkpoint already written at that step, if the stop came right after one).
   */
  onCheckpoint?(path: string, info: { globalStep: number; reason: CheckpointReason }): void;
}

export interface RunOptions {
  callbacks?: TrainCallbacks;
  /** Save a checkpoint here after every epoch, and where an aborted run stops. */
  checkpointDir?: string;
  /** Continue from a saved state (the trainer must already hold its weights). */
  resumeFrom?: CheckpointState;
  /** Stops after the current step when aborted, with a checkpoint at that step. */
  signal?: AbortSignal;
  data: { source: string; fingerprint: string; items: number };
}

export interface TrainResult {
  /** Mean loss of each module's last trained epoch (null: not trained in this run). */
  finalLosses: (number | null)[];
  steps: number;
  epochs: number;
  durationSeconds: number;
  history: CheckpointState['history'];
  aborted: boolean;
}

/** The modules each phase trains: sequential has one phase per module, the others one phase. */
export function trainingPhases(config: TrainConfig, depth: number): number[][] {
  const modules: number[] = [];
  for (let m = config.fromModule; m <= depth; m++) modules.push(m);
  if (config.schedule === 'sequential') return modules.map((m) => [m]);
  if (config.schedule === 'end-to-end') return [[depth]];
  return [modules];
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Seed of the randomness of one step, so that a resumed run draws what the first run would have. */
function stepSeed(seed: number, phase: number, epoch: number, step: number): number {
  let h = seed ^ 0x9e3779b9;
  for (const v of [phase, epoch, step]) h = Math.imul(h ^ v, 0x85ebca6b) ^ (h >>> 13);
  return h >>> 0;
}

/** Where in the run a checkpoint is taken: the phase, epoch and batch the next step trains on. */
interface RunPosition {
  phase: number;
  epochsDone: number;
  stepInEpoch: number;
  epochLossSums: number[];
}

/**
 * The training loop: epochs of shuffled batches through `trainer.step`, progress through
 * callbacks, a checkpoint after every epoch. When `signal` aborts, the current step finishes and
 * a checkpoint is taken at that step (reason `cancel`), so that a resumed run continues with the
 * very next batch.
 */
export async function runTraining(
  trainer: GreedyTrainer,
  data: TrainingData,
  opts: RunOptions,
): Promise<TrainResult> {
  const config = trainer.config;
  const stack = trainer.stack;
  const phases = trainingPhases(config, stack.depth);
  const full = Math.floor(data.count / config.batchSize);
  if (full === 0)
    throw new GimError(
      'invalid_argument',
      `the dataset has ${data.count} items, fewer than one batch of ${config.batchSize}`,
    );
  const stepsPerEpoch = Math.min(full, config.maxStepsPerEpoch ?? full);
  const totalSteps = phases.length * config.epochs * stepsPerEpoch;
  const { unitsPerItem, unitName } = trainer.modality;
  const resume = opts.resumeFrom;
  if (resume && resume.stepInEpoch > stepsPerEpoch)
    throw new GimError(
      'conflict',
      `the checkpoint is at batch ${resume.stepInEpoch} of an epoch of ${stepsPerEpoch}`,
    );
  const history = resume ? [...resume.history] : [];
  let globalStep = resume?.step ?? 0;
  const startSteps = globalStep;
  const started = performance.now();
  const elapsedBefore = resume?.elapsedSeconds ?? 0;
  const finalLosses: (number | null)[] = new Array(stack.depth).fill(null);
  for (const h of history)
    h.losses.forEach((l, i) => {
      if (l !== null) finalLosses[i] = l;
    });
  // The checkpoint on disk at the current step, if any: a stop right after it needs no new one.
  let saved: { path: string; step: number } | null =
    resume && opts.checkpointDir
      ? { path: join(opts.checkpointDir, checkpointName(resume.step)), step: resume.step }
      : null;
  const checkpoint = async (at: RunPosition, reason: CheckpointReason): Promise<void> => {
    if (!opts.checkpointDir) return;
    if (saved?.step === globalStep) {
      if (reason === 'cancel') opts.callbacks?.onCheckpoint?.(saved.path, { globalStep, reason });
      return;
    }
    const state: CheckpointState = {
      format: CHECKPOINT_FORMAT,
      config,
      adapter: stack.adapter,
      modules: stack.moduleConfigs,
      ...at,
      step: globalStep,
      history,
      elapsedSeconds: elapsedBefore + (performance.now() - started) / 1000,
      data: opts.data,
    };
    const trainerState = await exportTrainerState(trainer);
    try {
      const path = await saveCheckpoint(
        opts.checkpointDir,
        state,
        await stack.artifacts(),
        trainerState,
      );
      saved = { path, step: globalStep };
      opts.callbacks?.onCheckpoint?.(path, { globalStep, reason });
    } finally {
      releaseTrainerState(trainerState);
    }
  };
  const zeros = () => new Array<number>(stack.depth).fill(0);
  let aborted = false;

  for (let phase = resume?.phase ?? 0; phase < phases.length && !aborted; phase++) {
    const active = phases[phase] as number[];
    const firstEpoch = resume && phase === resume.phase ? resume.epochsDone : 0;
    for (let epoch = firstEpoch; epoch < config.epochs && !aborted; epoch++) {
      const resuming = resume !== undefined && phase === resume.phase && epoch === firstEpoch;
      const skip = resuming ? resume.stepInEpoch : 0;
      if (opts.signal?.aborted) {
        aborted = true;
        await checkpoint(
          { phase, epochsDone: epoch, stepInEpoch: 0, epochLossSums: zeros() },
          'cancel',
        );
        break;
      }
      const epochStart = performance.now();
      const sums = Float64Array.from(resuming ? resume.epochLossSums : zeros());
      let step = skip;
      const stream = data.batches({
        batchSize: config.batchSize,
        seed: config.seed,
        epoch: phase * config.epochs + epoch,
        skip,
      });
      for await (const batch of step < stepsPerEpoch ? stream : []) {
        const rng = new Rng(stepSeed(config.seed, phase, epoch, step));
        // Per phase (a sequential run schedules each module over its own epochs).
        trainer.scheduleLearningRate(epoch * stepsPerEpoch + step, config.epochs * stepsPerEpoch);
        const losses = trainer.step(batch, active, rng);
        losses.forEach((l, i) => {
          if (!Number.isNaN(l)) sums[i] = (sums[i] as number) + l;
        });
        step++;
        globalStep++;
        const seconds = (performance.now() - started) / 1000;
        const rate = (globalStep - startSteps) / Math.max(seconds, 1e-9);
        opts.callbacks?.onStep?.({
          phase: phase + 1,
          phases: phases.length,
          module: config.schedule === 'sequential' ? (active[0] as number) : null,
          epoch: epoch + 1,
          epochs: config.epochs,
          step,
          stepsPerEpoch,
          globalStep,
          totalSteps,
          losses: losses.map((l) => (Number.isNaN(l) ? null : l)),
          itemsPerSecond: rate * config.batchSize,
          unitsPerSecond: rate * config.batchSize * unitsPerItem,
          unitName,
          etaSeconds: (totalSteps - globalStep) / Math.max(rate, 1e-9),
        });
        if (step >= stepsPerEpoch) break;
        // A prefetched batch resolves in a microtask, so without this a whole epoch could run
        // without the event loop turning: no signal handler could abort it before the epoch end.
        await yieldToEventLoop();
        if (opts.signal?.aborted) {
          aborted = true;
          break;
        }
      }
      if (aborted) {
        const at = { phase, epochsDone: epoch, stepInEpoch: step, epochLossSums: Array.from(sums) };
        await checkpoint(at, 'cancel');
        break;
      }
      const trained = trainer.config.schedule === 'end-to-end' ? [stack.depth] : active;
      const means = Array.from(sums, (s, i) => (trained.includes(i + 1) ? s / step : null));
      means.forEach((l, i) => {
        if (l !== null) finalLosses[i] = l;
      });
      history.push({ phase, epoch, losses: means });
      opts.callbacks?.onEpochEnd?.({
        phase: phase + 1,
        module: config.schedule === 'sequential' ? (active[0] as number) : null,
        epoch: epoch + 1,
        losses: means,
        seconds: (performance.now() - epochStart) / 1000,
      });
      const last = epoch + 1 === config.epochs;
      // Stopped during the epoch's last step: the epoch is complete, and this is the stop's checkpoint.
      aborted = opts.signal?.aborted ?? false;
      await checkpoint(
        {
          phase: last ? phase + 1 : phase,
          epochsDone: last ? 0 : epoch + 1,
          stepInEpoch: 0,
          epochLossSums: zeros(),
        },
        aborted ? 'cancel' : 'epoch',
      );
    }
  }
  if (!aborted && opts.signal?.aborted) {
    // Aborted while the last checkpoint was being written: it stands at the final step.
    aborted = true;
    await checkpoint(
      { phase: phases.length, epochsDone: 0, stepInEpoch: 0, epochLossSums: zeros() },
      'cancel',
    );
  }
  return {
    finalLosses,
    steps: globalStep,
    epochs: config.epochs,
    durationSeconds: elapsedBefore + (performance.now() - started) / 1000,
    history,
    aborted,
  };
}
