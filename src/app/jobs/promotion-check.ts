import { Injectable } from '@nestjs/common';
import { stackSpace, strandedHeads, strandedHeadsError } from '../../gim/store/head-binding.js';
import { HeadStore } from '../../gim/store/head-store.js';
import { StackStore } from '../../gim/store/stack-store.js';
import type { JobPlan } from '../../jobs/job-spec.js';
import { GUARDED_LABEL } from '../labels/labels.service.js';

/**
 * Refuses at submit (409) a `promote` job that would strand heads bound to `stable` and does not
 * ask to retrain them: the same check `gim promote` makes before it moves the label, made early
 * so the caller learns it in the answer, not minutes later from the job. Reads module weights to
 * hash them (a few MB), never loads tfjs.
 */
@Injectable()
export class PromotionCheck {
  constructor(
    private readonly stacks: StackStore,
    private readonly heads: HeadStore,
  ) {}

  async check(plan: JobPlan): Promise<void> {
    const spec = plan.spec;
    if (plan.kind !== 'promote' || spec.retrain_heads === true || spec.dry_run === true) return;
    const label = typeof spec.label === 'string' ? spec.label : GUARDED_LABEL;
    if (label !== GUARDED_LABEL) return;
    const { name, version } = await this.stacks.resolve(`${plan.model}@${String(spec.version)}`);
    const current = (await this.stacks.labelState(name)).labels[label];
    if (current === undefined || current === version) return;
    const stranded = await strandedHeads(
      this.heads,
      name,
      await stackSpace(this.stacks, `${name}@${current}`),
      await stackSpace(this.stacks, `${name}@${version}`),
    );
    if (stranded.length > 0)
      throw strandedHeadsError(
        name,
        label,
        current,
        version,
        stranded,
        'add "retrain_heads": true to the spec to retrain them first (encoder and heads then ' +
          'move together), or "dry_run": true to see what the promotion would do',
      );
  }
}
