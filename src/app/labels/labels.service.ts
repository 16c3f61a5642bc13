import { Injectable } from '@nestjs/common';
import { GimError, isGimError } from '../../gim/errors.js';
import { strandedHeads, strandedHeadsError } from '../../gim/store/head-binding.js';
import { HeadStore } from '../../gim/store/head-store.js';
import { previousTarget } from '../../gim/store/label-history.js';
import { StackStore } from '../../gim/store/stack-store.js';
import type { LabelState } from '../../gim/store/versioned-dir.js';
import { type Actor, AuditLog } from '../admin/audit-log.js';
import { InferenceService } from '../inference/inference.service.js';
import { MetricsService } from '../metrics/metrics.service.js';

/** Where a label lives: a stack's labels, or one head's. */
export interface LabelOwner {
  model: string;
  head?: string;
}

/** How a label move asks to happen: the caller's entity tag, and why. */
export interface MoveRequest {
  ifMatch: string;
  reason?: string;
  /** Move `stable` even if heads bound to it would be stranded (otherwise a 409). */
  strandHeads?: boolean;
}

/** The stack label whose moves are checked against the heads bound to it. */
export const GUARDED_LABEL = 'stable';

/**
 * Stack and head labels as an admin resource: read with an entity tag and history, move with
 * compare-and-set, delete (not `latest`), roll back. A stack label moves only once its new
 * target is loaded and warmed up (golden embeddings checked) in this replica's inference worker,
 * so that no request here waits on a cold load; other replicas switch when they have loaded it
 * too (InferenceService.modelFor), within REF_CACHE_MS of the move.
 */
@Injectable()
export class LabelsService {
  constructor(
    private readonly stacks: StackStore,
    private readonly heads: HeadStore,
    private readonly inference: InferenceService,
    private readonly audit: AuditLog,
    private readonly metrics: MetricsService,
  ) {}

  read(owner: LabelOwner): Promise<LabelState> {
    return owner.head === undefined
      ? this.stacks.labelState(owner.model)
      : this.heads.labelState(owner.model, owner.head);
  }

  set(
    owner: LabelOwner,
    label: string,
    version: unknown,
    req: MoveRequest,
    actor: Actor,
  ): Promise<LabelState> {
    if (typeof version !== 'number' || !Number.isInteger(version) || version < 1)
      throw new GimError('invalid_argument', '"version" must be a positive integer');
    return this.counted(owner, label, 'set', () =>
      this.audit.record(actor, 'label.set', `${target(owner, label)}=${version}`, async () => {
        await this.warm(owner, version);
        await this.checkHeads(owner, label, version, req);
        return this.move(owner, label, version, req, actor);
      }),
    );
  }

  remove(owner: LabelOwner, label: string, req: MoveRequest, actor: Actor): Promise<LabelState> {
    if (label === 'latest')
      throw new GimError('conflict', "label 'latest' is kept by publishing and cannot be deleted");
    return this.counted(owner, label, 'delete', () =>
      this.audit.record(actor, 'label.delete', target(owner, label), () =>
        this.move(owner, label, null, req, actor),
      ),
    );
  }

  rollback(owner: LabelOwner, label: string, req: MoveRequest, actor: Actor): Promise<LabelState> {
    return this.counted(owner, label, 'rollback', () =>
      this.audit.record(actor, 'label.rollback', target(owner, label), async () => {
        const state = await this.read(owner);
        const back = previousTarget(state.history, label, state.labels[label]);
        if (back !== undefined) {
          await this.warm(owner, back);
          await this.checkHeads(owner, label, back, req);
        }
        const meta = { by: actor.id, ...(req.reason !== undefined ? { reason: req.reason } : {}) };
        return owner.head === undefined
          ? this.stacks.rollbackLabel(owner.model, label, meta, req.ifMatch)
          : this.heads.rollbackLabel(owner.model, owner.head, label, meta, req.ifMatch);
      }),
    );
  }

  /** Counts the change in `gim_label_moves_total` by how it ended. */
  private async counted(
    owner: LabelOwner,
    label: string,
    action: 'set' | 'delete' | 'rollback',
    change: () => Promise<LabelState>,
  ): Promise<LabelState> {
    let outcome = 'moved';
    try {
      return await change();
    } catch (e) {
      outcome = isGimError(e) ? e.code : 'error';
      throw e;
    } finally {
      this.metrics.countLabelMove(owner.model, owner.head ?? '', label, action, outcome);
    }
  }

  private move(
    owner: LabelOwner,
    label: string,
    version: number | null,
    req: MoveRequest,
    actor: Actor,
  ): Promise<LabelState> {
    const meta = { by: actor.id, ...(req.reason !== undefined ? { reason: req.reason } : {}) };
    return owner.head === undefined
      ? this.stacks.moveLabel(owner.model, label, version, meta, req.ifMatch)
      : this.heads.moveLabel(owner.model, owner.head, label, version, meta, req.ifMatch);
  }

  /**
   * A move of a stack's `stable` label that would strand heads (each fits the current target and
   * no version of it fits the new one) is a 409 naming them and both embedding spaces, unless the
   * request says to strand them. Both versions are loaded in the worker already (serving, warmed).
   */
  private async checkHeads(
    owner: LabelOwner,
    label: string,
    version: number,
    req: MoveRequest,
  ): Promise<void> {
    if (owner.head !== undefined || label !== GUARDED_LABEL || req.strandHeads === true) return;
    const current = (await this.stacks.labelState(owner.model)).labels[label];
    if (current === undefined || current === version) return;
    const [from, to] = await Promise.all([
      this.inference.model({ name: owner.model, version: current }),
      this.inference.model({ name: owner.model, version }),
    ]);
    const stranded = await strandedHeads(this.heads, owner.model, from, to);
    if (stranded.length > 0)
      throw strandedHeadsError(
        owner.model,
        label,
        current,
        version,
        stranded,
        'submit a promotion job that retrains them first (POST /admin/v1/training-jobs with ' +
          `{"kind": "promote", "model": "${owner.model}", "spec": {"version": ${version}, ` +
          '"retrain_heads": true}}), or send "strand_heads": true to move anyway',
      );
  }

  /** Loads a stack version in the worker before a label points at it (heads load in ms). */
  private async warm(owner: LabelOwner, version: number): Promise<void> {
    if (owner.head !== undefined) return;
    const versions = await this.stacks.listVersions(owner.model);
    if (!versions.includes(version))
      throw new GimError(
        'not_found',
        `stack '${owner.model}' has no version ${version}; versions: ${versions.join(', ')}`,
      );
    await this.inference.model({ name: owner.model, version });
  }
}

function target(owner: LabelOwner, label: string): string {
  return `${owner.model}${owner.head === undefined ? '' : `/classifiers/${owner.head}`}@${label}`;
}
