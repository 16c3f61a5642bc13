import { Injectable } from '@nestjs/common';
import type { LabelScore } from '../../gim/classify/linear-head.js';
import { GimError } from '../../gim/errors.js';
import { HeadStore, type LoadedHead } from '../../gim/store/head-store.js';
import { headVersionFor } from '../../gim/store/head-binding.js';
import { type HeadManifest, bindHead } from '../../gim/store/head-manifest.js';
import { StackStore } from '../../gim/store/stack-store.js';
import type { EncodedInputs } from '../embeddings/embedding-inputs.js';
import { EmbeddingsService } from '../embeddings/embeddings.service.js';
import type { InFlightRequest } from '../http/in-flight.decorator.js';
import { MetricsService } from '../metrics/metrics.service.js';
import { DEFAULT_TOP_K, parseClassifyOptions } from './classify-options.js';

/** One version of a head, as listed. */
export interface HeadVersionSummary {
  version: number;
  labels: string[];
  encoder: { version: number; layer: number; pooling: string; normalize: boolean };
  embedding_space_id: string;
  classes: string[];
  accuracy: { train: number; validation: number | null; test: number | null };
  created_at: string;
}

export interface HeadSummaryBody {
  name: string;
  labels: Record<string, number>;
  /** The version used when a request names none: label stable, else latest. */
  default_version: number;
  versions: HeadVersionSummary[];
}

export interface ClassifyResponse {
  model: string;
  version: number;
  head: string;
  head_version: number;
  layer: number;
  pooling: string;
  normalize: boolean;
  items: number;
  /** Per item, in request order: the top_k classes, most probable first. */
  results: LabelScore[][];
}

/**
 * Classification heads over HTTP. A head is loaded from the HeadStore once per (model, head,
 * version) (published versions never change), bound to the stack version asked for (409 when
 * that version does not give the head's embedding space), and applied on the main thread to the
 * pooled vectors the embedding pipeline computes: the same decoders, batch queue and worker pass
 * as POST /v1/models/{name}/embeddings.
 */
@Injectable()
export class ClassifiersService {
  /** By `model/head@version`; a failed load is removed so the next request retries it. */
  private readonly heads = new Map<string, Promise<LoadedHead>>();

  constructor(
    private readonly store: HeadStore,
    private readonly stacks: StackStore,
    private readonly embeddings: EmbeddingsService,
    private readonly metrics: MetricsService,
  ) {}

  async list(model: string): Promise<HeadSummaryBody[]> {
    await this.stacks.resolve(model); // not_found for an unknown stack
    const out: HeadSummaryBody[] = [];
    for (const summary of await this.store.list(model)) {
      const versions: HeadVersionSummary[] = [];
      for (const version of summary.versions) {
        const m = await this.store.loadManifest(model, `${summary.name}@${version}`);
        versions.push({
          version,
          labels: Object.entries(summary.labels)
            .filter(([, v]) => v === version)
            .map(([label]) => label),
          encoder: {
            version: m.encoder.version,
            layer: m.encoder.layer,
            pooling: m.encoder.pooling,
            normalize: m.encoder.normalize,
          },
          embedding_space_id: m.encoder.embeddingSpaceId,
          classes: m.classes,
          accuracy: {
            train: m.metrics.train.accuracy,
            validation: m.metrics.validation?.accuracy ?? null,
            test: m.metrics.test?.accuracy ?? null,
          },
          created_at: m.createdAt,
        });
      }
      const { version } = await this.store.resolve(model, summary.name);
      out.push({ name: summary.name, labels: summary.labels, default_version: version, versions });
    }
    return out;
  }

  /** The stored manifest of a head version (`selector`: a version, a label, or the default). */
  async describe(model: string, head: string, selector?: unknown): Promise<HeadManifest> {
    await this.stacks.resolve(model); // not_found for an unknown stack
    const { headSelector } = parseClassifyOptions([
      { where: 'query string', values: { head_version: selector } },
    ]);
    return (await this.head(model, head, headSelector)).manifest;
  }

  /** `POST /v1/models/{name}/classifiers/{head}/classify` */
  async classify(
    name: string,
    headName: string,
    inputs: EncodedInputs,
    query: Record<string, unknown>,
    request: InFlightRequest,
  ): Promise<ClassifyResponse> {
    const options = parseClassifyOptions([
      { where: 'query string', values: query },
      { where: 'body', values: inputs.bodyOptions },
    ]);
    let loaded: LoadedHead;
    let model: Awaited<ReturnType<EmbeddingsService['model']>>;
    if (options.headSelector === undefined && options.selector !== undefined) {
      // A stack version (or label) named, the head not: the head version that fits it (its
      // default, else its newest that does), so a label moved together with retrained heads
      // never pairs the new stack with an old head.
      model = await this.embeddings.model(name, options.selector);
      const fitting = await headVersionFor(this.store, name, headName, model);
      loaded = await this.head(name, headName, fitting && String(fitting.version));
    } else {
      loaded = await this.head(name, headName, options.headSelector);
      model = await this.embeddings.model(
        name,
        options.selector ?? String(loaded.manifest.encoder.version),
      );
    }
    const { manifest, head } = loaded;
    // A conflict (409) unless this version gives the head's embedding space at its layer.
    const binding = bindHead(manifest, model.manifest, model.spaceDigests);
    const decoded = await this.embeddings.decodeInputs(model, inputs, request);
    const [pooled] = await this.embeddings.embedItems(
      model,
      decoded,
      [binding.layer],
      binding.pooling,
      binding.normalize,
      request,
    );
    if (pooled === undefined) throw new GimError('backend_unavailable', 'no embeddings came back');
    const x = new Float32Array(decoded.length * head.dim); // [n, D]
    pooled.vectors.forEach((v, i) => {
      if (v.length !== head.dim)
        throw new GimError(
          'conflict',
          `head '${manifest.name}@${manifest.version}' takes ${head.dim}-d features; ` +
            `${model.name}@${model.version} gives ${v.length}-d at layer ${binding.layer}`,
        );
      x.set(v, i * head.dim);
    });
    const probs = head.predict(x, decoded.length); // [n, C]
    const results = head.topK(probs, Math.min(options.topK ?? DEFAULT_TOP_K, head.classes));
    this.metrics.countClassifications(model.name, manifest.name, decoded.length);
    return {
      model: model.name,
      version: model.version,
      head: manifest.name,
      head_version: manifest.version,
      layer: binding.layer,
      pooling: binding.pooling,
      normalize: binding.normalize,
      items: decoded.length,
      results,
    };
  }

  private async head(model: string, name: string, selector?: string): Promise<LoadedHead> {
    const ref = await this.store.resolve(
      model,
      selector === undefined ? name : `${name}@${selector}`,
    );
    const key = `${ref.model}/${ref.name}@${ref.version}`;
    let loading = this.heads.get(key);
    if (loading === undefined) {
      loading = this.store.load(model, `${ref.name}@${ref.version}`);
      this.heads.set(key, loading);
      loading.catch(() => {
        if (this.heads.get(key) === loading) this.heads.delete(key);
      });
    }
    return loading;
  }
}
