import { Injectable, Logger } from '@nestjs/common';
import { isGimError } from '../../gim/errors.js';
import { StackStore } from '../../gim/store/stack-store.js';
import {
  type ModelList,
  type VersionDescription,
  describeSummary,
  describeVersion,
} from './model-description.js';

/** Stacks, versions and layers as the store has them on disk (no worker involved). */
@Injectable()
export class ModelsService {
  private readonly logger = new Logger(ModelsService.name);

  constructor(private readonly store: StackStore) {}

  /**
   * Every stack; one whose labels or default manifest are damaged on disk is listed apart, with
   * the reason, so that it neither hides the others nor goes unnoticed.
   */
  async list(): Promise<ModelList> {
    const list: ModelList = { models: [], unavailable: [] };
    for (const summary of await this.store.list()) {
      try {
        if (summary.unavailable !== undefined) throw summary.unavailable;
        const manifest = await this.store.check(summary.name);
        list.models.push(describeSummary(summary, manifest.version, manifest.modality));
      } catch (e) {
        if (!isGimError(e) || e.code !== 'model_unavailable') throw e;
        this.logger.warn(e.message);
        list.unavailable.push({ name: summary.name, error: e.message, error_type: e.code });
      }
    }
    return list;
  }

  /** A version (`3`), a label (`stable`), or the default version when `selector` is undefined. */
  async describe(name: string, selector?: string): Promise<VersionDescription> {
    const manifest = await this.store.check(selector === undefined ? name : `${name}@${selector}`);
    const fallback = await this.store.resolve(name);
    // The store reads labels only through its listing.
    const summary = (await this.store.list()).find((s) => s.name === name) ?? {
      name,
      versions: [manifest.version],
      labels: {},
    };
    return describeVersion(describeSummary(summary, fallback.version, manifest.modality), manifest);
  }
}
