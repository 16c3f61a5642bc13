import type { StepProgressEvent } from './progress-events.js';

/**
 * `progress` events of head and probe fits, in the shape of training steps: one phase per
 * (layer, pooling) fitted, `module` = its layer, one step per epoch (the fits run an epoch
 * without yielding), `losses` = [training loss]. Early stopping can end a fit before `epochs`.
 */
export function fitProgress(
  epochs: number,
  /** Training items a fit goes through per epoch (before any validation split is taken off). */
  items: number,
): (
  epoch: number,
  loss: number,
  validationLoss: number | undefined,
  fit: { index: number; count: number; layer: number },
) => StepProgressEvent {
  const started = performance.now();
  let done = 0;
  return (epoch, loss, validationLoss, fit) => {
    done++;
    const globalStep = (fit.index - 1) * epochs + epoch;
    const totalSteps = fit.count * epochs;
    const rate = done / Math.max((performance.now() - started) / 1000, 1e-9);
    return {
      phase: fit.index,
      phases: fit.count,
      module: fit.layer,
      epoch,
      epochs,
      step: 1,
      stepsPerEpoch: 1,
      globalStep,
      totalSteps,
      losses: [loss],
      ...(validationLoss === undefined ? {} : { validationLoss }),
      itemsPerSecond: rate * items,
      unitsPerSecond: rate * items,
      unitName: 'items',
      etaSeconds: (totalSteps - globalStep) / rate,
    };
  };
}
