/**
 * Which head versions fit which stack versions, and which heads a label move would strand.
 *
 * A head is trained in one embedding space (a layer and pooling of one function of the input);
 * `bindHead` accepts it for any stack version that gives that space. A head named without a
 * version is applied to a stack version as `headVersionFor` decides: its default version (label
 * `stable`, else `latest`) when that fits, else its newest version that fits. So once heads have
 * been retrained on a new stack version, a stack label can move first and every request that
 * resolves the label gets a head that fits, before and after the move: encoder and heads move
 * together without a window in which they disagree.
 */
import { GimError, isGimError } from '../errors.js';
import { embeddingSpaceId, layerDigests } from './embedding-space.js';
import { bindHead, type HeadManifest } from './head-manifest.js';
import type { HeadStore } from './head-store.js';
import type { StackManifest } from './manifest.js';
import type { StackStore } from './stack-store.js';

/** A stack version as the binding check needs it. */
export interface StackSpace {
  manifest: StackManifest;
  /** `layerDigests(manifest, modules)`. */
  spaceDigests: readonly string[];
}

/** A head that fits the label's current target and would fit none of its versions after a move. */
export interface StrandedHead {
  head: string;
  /** The head version serving the current target. */
  version: number;
  layer: number;
  pooling: string;
  /** The space the head needs (the current target's). */
  requiredEmbeddingSpaceId: string;
  /** The new target's space at that layer and pooling; null when it has no such layer. */
  givenEmbeddingSpaceId: string | null;
}

/** A stored stack version's manifest and layer digests (reads its weights to hash them). */
export async function stackSpace(stacks: StackStore, ref: string): Promise<StackSpace> {
  const { manifest, modules } = await stacks.load(ref);
  return { manifest, spaceDigests: layerDigests(manifest, modules) };
}

function fits(head: HeadManifest, stack: StackSpace): boolean {
  try {
    bindHead(head, stack.manifest, stack.spaceDigests);
    return true;
  } catch (e) {
    if (isGimError(e) && e.code === 'conflict') return false;
    throw e;
  }
}

/**
 * The version of head `name` applied to `stack` when a request names no head version: the
 * head's default version if it fits, else its newest version that fits; undefined if none does.
 */
export async function headVersionFor(
  heads: HeadStore,
  model: string,
  name: string,
  stack: StackSpace,
): Promise<HeadManifest | undefined> {
  const preferred = await heads.loadManifest(model, name);
  if (fits(preferred, stack)) return preferred;
  const versions = (await heads.list(model)).find((h) => h.name === name)?.versions ?? [];
  for (const version of [...versions].sort((a, b) => b - a)) {
    if (version === preferred.version) continue;
    const manifest = await heads.loadManifest(model, `${name}@${version}`);
    if (fits(manifest, stack)) return manifest;
  }
  return undefined;
}

/**
 * The heads of stack `model` that a move of a label from `from` to `to` would strand: each has a
 * version fitting `from` (it serves requests through the label today) and none fitting `to`.
 */
export async function strandedHeads(
  heads: HeadStore,
  model: string,
  from: StackSpace,
  to: StackSpace,
): Promise<StrandedHead[]> {
  const out: StrandedHead[] = [];
  for (const { name } of await heads.list(model)) {
    const serving = await headVersionFor(heads, model, name, from);
    if (serving === undefined || (await headVersionFor(heads, model, name, to)) !== undefined)
      continue;
    const { layer, pooling } = serving.encoder;
    const digest = layer <= to.manifest.modules.length ? to.spaceDigests[layer - 1] : undefined;
    out.push({
      head: name,
      version: serving.version,
      layer,
      pooling,
      requiredEmbeddingSpaceId: serving.encoder.embeddingSpaceId,
      givenEmbeddingSpaceId: digest === undefined ? null : embeddingSpaceId(digest, pooling),
    });
  }
  return out;
}

/**
 * The conflict (409) of a label move that would strand `stranded`: names each head and both
 * space ids, and says how to move anyway.
 */
export function strandedHeadsError(
  model: string,
  label: string,
  from: number,
  to: number,
  stranded: StrandedHead[],
  howToProceed: string,
): GimError {
  const list = stranded
    .map(
      (s) =>
        `${s.head}@${s.version} (layer ${s.layer}, ${s.pooling}: needs space ` +
        `${s.requiredEmbeddingSpaceId}, ${model}@${to} gives ${s.givenEmbeddingSpaceId ?? 'no such layer'})`,
    )
    .join('; ');
  return new GimError(
    'conflict',
    `moving ${model}@${label} from version ${from} to ${to} would strand ` +
      `${stranded.length === 1 ? 'head' : 'heads'} ${list}; ${howToProceed}`,
    {
      details: {
        // Returned to HTTP clients as `details` (the error body's machine-readable part).
        response: {
          stranded_heads: stranded.map((s) => ({
            head: s.head,
            version: s.version,
            layer: s.layer,
            pooling: s.pooling,
            required_embedding_space_id: s.requiredEmbeddingSpaceId,
            given_embedding_space_id: s.givenEmbeddingSpaceId,
          })),
        },
      },
    },
  );
}
