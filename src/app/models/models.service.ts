import { Injectable } from '@nestjs/common';
import { StackStore } from '../../gim/store/stack-store.js';
import {
  type ModelSummary,
  type VersionDescription,
  describeSummary,
  describeVersion,
} from './model-description.js';

/** Stacks, versions and layers as the store has them on disk (no worker involved). */
@Injectable()
export class ModelsService {
  constructor(private readonly store: StackStore) {}

  async list(): Promise<ModelSummary[]> {
    const out: ModelSummary[] = [];
    for (const summary of await this.store.list()) {
      const manifest = await this.store.loadManifest(summary.name);
      out.push(describeSummary(summary, manifest.version, manifest.modality));
    }
    return out;
  }

  /** A version (`3`), a label (`stable`), or the default version when `selector` is undefined. */
  async describe(name: string, selector?: string): Promise<VersionDescription> {
    const manifest = await this.store.loadManifest(
      selector === undefined ? name : `${name}@${selector}`,
    );
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
