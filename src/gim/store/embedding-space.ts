import { createHash, type Hash } from 'node:crypto';
import type * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import type { StackManifest } from './manifest.js';
import { weightBytes } from './tfjs-files.js';

/**
 * Which embedding space a layer's vectors live in. Two stack versions whose layer k has the same
 * digest compute the same function up to layer k (same input adapter, same module topologies and
 * weights for modules 1..k), so vectors stored from one stay valid for the other: a version
 * retrained from module k keeps the digests of layers < k and invalidates only layers >= k.
 *
 * Bump the scheme when what goes into a digest changes: every stored space id changes with it.
 */
const SCHEME = 'gim-space/1';

/**
 * sha256 hex digests, one per layer: layer k covers the adapter config and, for modules 1..k,
 * the model.json topology, the weight shapes and dtypes (names are left out: they carry no
 * numbers) and the weight bytes. Canonical JSON (sorted keys), so key order never matters.
 */
export function layerDigests(manifest: StackManifest, modules: tf.io.ModelArtifacts[]): string[] {
  if (modules.length !== manifest.modules.length) {
    throw new GimError(
      'invalid_argument',
      `${modules.length} module models for ${manifest.modules.length} manifest modules`,
    );
  }
  const hash = createHash('sha256');
  part(hash, 'scheme', SCHEME);
  part(hash, 'adapter', canonicalJson(manifest.adapter));
  return modules.map((artifacts, i) => {
    const topology = artifacts.modelTopology;
    if (topology === undefined) {
      throw new GimError('invalid_data', `module ${i + 1} has no model topology`);
    }
    part(hash, 'module', String(i + 1));
    part(
      hash,
      'topology',
      topology instanceof ArrayBuffer ? new Uint8Array(topology) : canonicalJson(topology),
    );
    const specs = (artifacts.weightSpecs ?? []).map(({ shape, dtype, quantization }) => ({
      shape,
      dtype,
      quantization: quantization ?? null,
    }));
    part(hash, 'weightSpecs', canonicalJson(specs));
    part(hash, 'weights', weightBytes(artifacts.weightData));
    // The running hash covers modules 1..k; a copy is finished for layer k.
    return hash.copy().digest('hex');
  });
}

/** A short id for vectors of one layer under one pooling: 32 hex chars of sha256. */
export function embeddingSpaceId(layerDigest: string, pooling: string): string {
  return createHash('sha256').update(`${layerDigest}:${pooling}`).digest('hex').slice(0, 32);
}

/** Each part is framed by its tag and byte length, so no two sequences of parts hash alike. */
function part(hash: Hash, tag: string, value: string | Uint8Array): void {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  hash.update(`${tag}:${bytes.byteLength}:`);
  hash.update(bytes);
}

/** JSON with object keys sorted at every level. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)),
        )
      : v,
  );
}
