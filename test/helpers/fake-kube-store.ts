/**
 * The storage half of the fake Kubernetes API server (fake-kube-api.ts): objects by resource,
 * namespace and name, a global resourceVersion counter as etcd's revision, the change history a
 * watch replays from a resourceVersion (410 Gone below the compaction point), and equality-based
 * label selectors.
 */
import { randomUUID } from 'node:crypto';

export type Json = Record<string, unknown>;
export type Resource = 'jobs' | 'pods' | 'leases';
export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface Metadata {
  name: string;
  namespace: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  labels?: Record<string, string>;
  [field: string]: unknown;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: Metadata;
  spec?: Json;
  status?: Json;
  [field: string]: unknown;
}

export interface Change {
  rv: number;
  resource: Resource;
  type: EventType;
  object: KubeObject;
}

/** A label selector as a predicate: `a=b,c==d,e!=f` (the equality-based forms). */
export function parseSelector(
  selector: string | undefined,
): (labels: Record<string, string>) => boolean {
  const terms = (selector ?? '')
    .split(',')
    .filter((t) => t.trim() !== '')
    .map((term) => {
      const m = /^\s*([^!=\s]+)\s*(==|=|!=)\s*([^\s]*)\s*$/.exec(term);
      if (!m) throw new Error(`unsupported label selector term: ${term}`);
      return { key: m[1]!, negate: m[2] === '!=', value: m[3]! };
    });
  return (labels) => terms.every((t) => (labels[t.key] === t.value) !== t.negate);
}

export class FakeKubeStore {
  #rv = 100;
  /** Watches from a version below this get 410 Gone (history compacted). */
  #compactedBefore = 0;
  /** A fake clock: one second per object created, so creation order is visible in timestamps. */
  #clock = Date.parse('2026-01-01T00:00:00Z');
  readonly #objects = new Map<string, KubeObject>();
  readonly #history: Change[] = [];
  readonly #listeners = new Set<(change: Change) => void>();

  get resourceVersion(): string {
    return String(this.#rv);
  }

  get compactedBefore(): number {
    return this.#compactedBefore;
  }

  /** Forgets the history up to now: a watch from any earlier version gets 410 Gone. */
  compact(): void {
    this.#compactedBefore = this.#rv;
  }

  get(resource: Resource, namespace: string, name: string): KubeObject | undefined {
    const obj = this.#objects.get(key(resource, namespace, name));
    return obj && structuredClone(obj);
  }

  list(resource: Resource, namespace: string, selector?: string): KubeObject[] {
    const matches = parseSelector(selector);
    return [...this.#objects.entries()]
      .filter(([k]) => k.startsWith(`${resource}/${namespace}/`))
      .map(([, o]) => structuredClone(o))
      .filter((o) => matches(o.metadata.labels ?? {}));
  }

  /** Stores a new object with the fields the API server sets; the caller checked it is absent. */
  create(resource: Resource, obj: KubeObject): KubeObject {
    this.#clock += 1000;
    const stored: KubeObject = structuredClone(obj);
    stored.metadata = {
      ...stored.metadata,
      uid: randomUUID(),
      resourceVersion: String(++this.#rv),
      creationTimestamp: new Date(this.#clock).toISOString().replace(/\.\d+Z$/, 'Z'),
    };
    this.#put(resource, stored, 'ADDED');
    return structuredClone(stored);
  }

  /** Replaces an object (server-set metadata kept), with a new version. */
  update(resource: Resource, obj: KubeObject): KubeObject {
    const old = this.#objects.get(key(resource, obj.metadata.namespace, obj.metadata.name));
    if (!old) throw new Error(`no ${resource} ${obj.metadata.name}`);
    const stored: KubeObject = structuredClone(obj);
    stored.metadata = {
      ...stored.metadata,
      uid: old.metadata.uid,
      creationTimestamp: old.metadata.creationTimestamp,
      resourceVersion: String(++this.#rv),
    };
    this.#put(resource, stored, 'MODIFIED');
    return structuredClone(stored);
  }

  remove(resource: Resource, namespace: string, name: string): KubeObject | undefined {
    const k = key(resource, namespace, name);
    const old = this.#objects.get(k);
    if (!old) return undefined;
    this.#objects.delete(k);
    const gone: KubeObject = structuredClone(old);
    gone.metadata.resourceVersion = String(++this.#rv);
    this.#emit({ rv: this.#rv, resource, type: 'DELETED', object: gone });
    return gone;
  }

  /** Changes after `rv`, oldest first. */
  since(rv: number): Change[] {
    return this.#history.filter((c) => c.rv > rv).map((c) => structuredClone(c));
  }

  subscribe(listener: (change: Change) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #put(resource: Resource, obj: KubeObject, type: EventType): void {
    this.#objects.set(key(resource, obj.metadata.namespace, obj.metadata.name), obj);
    this.#emit({ rv: this.#rv, resource, type, object: structuredClone(obj) });
  }

  #emit(change: Change): void {
    this.#history.push(change);
    for (const listener of this.#listeners) listener(structuredClone(change));
  }
}

const key = (resource: Resource, namespace: string, name: string) =>
  `${resource}/${namespace}/${name}`;
