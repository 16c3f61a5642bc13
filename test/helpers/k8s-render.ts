/**
 * Renders a kustomization of `k8s/` to plain objects: with `kubectl kustomize` when kubectl is
 * on PATH, else with `renderBuiltin`, a small TypeScript kustomize for exactly the features
 * `k8s/` uses (resources, configMapGenerator with content-hash names, namespace, images,
 * strategic-merge patches from files). It throws on any other kustomize feature rather than
 * render it wrongly, and a test checks it renders every overlay exactly as kubectl does, so the
 * manifest checks run the same in CI without kubectl.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';

/** A Kubernetes object as YAML gives it. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

type Json = Record<string, unknown>;

export const isObject = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** Every document of a YAML file or text (empty documents left out); throws on a YAML error. */
export function parseYamlDocuments(text: string, where: string): unknown[] {
  return parseAllDocuments(text).flatMap((doc) => {
    if (doc.errors.length > 0) throw new Error(`${where}: ${doc.errors[0]!.message}`);
    const value: unknown = doc.toJS();
    return value === null || value === undefined ? [] : [value];
  });
}

function asObjects(docs: unknown[], where: string): K8sObject[] {
  return docs.map((doc, i) => {
    if (!isObject(doc) || typeof doc.kind !== 'string' || !isObject(doc.metadata))
      throw new Error(`${where}: document ${i + 1} is not a Kubernetes object`);
    return doc as K8sObject;
  });
}

/** Why kubectl cannot render here, or undefined when it can. */
export function kubectlMissing(): string | undefined {
  const r = spawnSync('kubectl', ['version', '--client=true'], { encoding: 'utf8' });
  if (r.error) return `kubectl is not on PATH (${r.error.message})`;
  if (r.status !== 0) return `kubectl version failed: ${r.stderr.trim()}`;
  return undefined;
}

export function renderKubectl(dir: string): K8sObject[] {
  const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
  if (r.error || r.status !== 0)
    throw new Error(`kubectl kustomize ${dir}: ${r.error?.message ?? r.stderr.trim()}`);
  return asObjects(parseYamlDocuments(r.stdout, `kubectl kustomize ${dir}`), dir);
}

/** What one kustomization directory builds, before generated names get their hash. */
interface Build {
  objects: K8sObject[];
  /** The ConfigMaps a configMapGenerator made (they get a content-hash suffix). */
  generated: Set<K8sObject>;
}

const KUSTOMIZATION_FIELDS = new Set([
  'apiVersion',
  'kind',
  'namespace',
  'resources',
  'configMapGenerator',
  'images',
  'patches',
]);
const GENERATOR_FIELDS = new Set(['name', 'behavior', 'envs', 'files', 'literals']);

/** kustomize's `kubectl kustomize <dir>`, for the features k8s/ uses (see the file comment). */
export function renderBuiltin(dir: string): K8sObject[] {
  const { objects, generated } = build(resolve(dir));
  const renamed = new Map<string, string>();
  for (const cm of generated) {
    const name = `${cm.metadata.name}-${configMapHash(cm)}`;
    renamed.set(cm.metadata.name, name);
    cm.metadata.name = name;
  }
  for (const obj of objects) {
    const pod = podSpec(obj);
    if (pod) renameConfigMapRefs(pod, renamed);
  }
  return objects;
}

function build(dir: string): Build {
  const file = join(dir, 'kustomization.yaml');
  const k = parseYamlDocuments(readFileSync(file, 'utf8'), file)[0];
  if (!isObject(k)) throw new Error(`${file}: not a mapping`);
  for (const field of Object.keys(k)) {
    if (!KUSTOMIZATION_FIELDS.has(field))
      throw new Error(`${file}: the builtin renderer does not support '${field}'; use kubectl`);
  }
  const out: Build = { objects: [], generated: new Set() };
  for (const entry of list<string>(k.resources)) {
    const path = resolve(dir, entry);
    if (statSync(path).isDirectory()) {
      const sub = build(path);
      out.objects.push(...sub.objects);
      for (const cm of sub.generated) out.generated.add(cm);
    } else {
      out.objects.push(...asObjects(parseYamlDocuments(readFileSync(path, 'utf8'), path), path));
    }
  }
  for (const gen of list<Json>(k.configMapGenerator)) generate(dir, gen, out);
  for (const patch of list<Json>(k.patches)) {
    if (Object.keys(patch).some((f) => f !== 'path'))
      throw new Error(`${file}: only 'patches: - path:' (strategic merge) is supported`);
    const path = resolve(dir, String(patch.path));
    for (const p of asObjects(parseYamlDocuments(readFileSync(path, 'utf8'), path), path)) {
      const i = out.objects.findIndex(
        (o) => o.kind === p.kind && o.metadata.name === p.metadata.name,
      );
      if (i < 0) throw new Error(`${path}: no ${p.kind} ${p.metadata.name} to patch`);
      if (out.generated.has(out.objects[i]!))
        throw new Error(`${path}: patches a generated object`);
      out.objects[i] = mergePatch(out.objects[i], p, '') as K8sObject;
    }
  }
  for (const image of list<Json>(k.images)) setImage(out.objects, image, file);
  if (typeof k.namespace === 'string') {
    for (const obj of out.objects) {
      obj.metadata.namespace = k.namespace;
      // As kustomize does: a ServiceAccount subject without a namespace is in this one.
      for (const subject of list<Json>(obj.subjects)) {
        if (subject.kind === 'ServiceAccount' && subject.namespace === undefined)
          subject.namespace = k.namespace;
      }
    }
  }
  return out;
}

function list<T>(value: unknown): T[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new Error(`expected a list, got ${JSON.stringify(value)}`);
  return value as T[];
}

function generate(dir: string, gen: Json, out: Build): void {
  for (const field of Object.keys(gen)) {
    if (!GENERATOR_FIELDS.has(field))
      throw new Error(`configMapGenerator.${field} is not supported by the builtin renderer`);
  }
  const name = String(gen.name);
  const data: Record<string, string> = {};
  for (const envs of list<string>(gen.envs)) Object.assign(data, readEnvFile(resolve(dir, envs)));
  for (const entry of list<string>(gen.files)) {
    const [key, path] = entry.includes('=') ? entry.split('=', 2) : [basename(entry), entry];
    data[key!] = readFileSync(resolve(dir, path!), 'utf8');
  }
  for (const literal of list<string>(gen.literals)) {
    const eq = literal.indexOf('=');
    if (eq <= 0) throw new Error(`configMapGenerator ${name}: bad literal ${literal}`);
    data[literal.slice(0, eq)] = literal.slice(eq + 1);
  }
  const behavior = gen.behavior ?? 'create';
  const existing = [...out.generated].find((cm) => cm.metadata.name === name);
  if (behavior === 'create') {
    if (existing) throw new Error(`configMapGenerator ${name}: exists already`);
    const cm: K8sObject = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data };
    out.objects.push(cm);
    out.generated.add(cm);
  } else if (behavior === 'merge' || behavior === 'replace') {
    if (!existing) throw new Error(`configMapGenerator ${name}: nothing to ${behavior}`);
    existing.data = behavior === 'merge' ? { ...(existing.data as Json), ...data } : data;
  } else {
    throw new Error(`configMapGenerator ${name}: unknown behavior ${String(behavior)}`);
  }
}

/** kustomize's env files: KEY=VALUE lines, `#` comments; anything fancier is refused. */
function readEnvFile(path: string): Record<string, string> {
  const data: Record<string, string> = {};
  for (const [i, line] of readFileSync(path, 'utf8').split('\n').entries()) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=([^\s"']*)$/.exec(line);
    if (!m) throw new Error(`${path}:${i + 1}: not a plain KEY=VALUE line (builtin renderer)`);
    data[m[1]!] = m[2]!;
  }
  return data;
}

/**
 * kustomize's name suffix of a generated ConfigMap: the first 10 hex digits of the SHA-256 of
 * Go's json.Marshal of {data, kind, name: ""} (sorted keys, <>& escaped), with 0 1 3 a e
 * replaced by g h k m t.
 */
function configMapHash(cm: K8sObject): string {
  const data = cm.data as Record<string, string>;
  const sorted = Object.fromEntries(
    Object.keys(data)
      .sort()
      .map((k) => [k, data[k]]),
  );
  const json = JSON.stringify({ data: sorted, kind: 'ConfigMap', name: '' }).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  const hex = createHash('sha256').update(json).digest('hex').slice(0, 10);
  const swap: Record<string, string> = { '0': 'g', '1': 'h', '3': 'k', a: 'm', e: 't' };
  return hex.replace(/[013ae]/g, (c) => swap[c]!);
}

/** The pod spec of a Deployment, Job, ... (spec.template.spec), if any. */
export function podSpec(obj: unknown): Json | undefined {
  const spec = isObject(obj) && isObject(obj.spec) ? obj.spec : undefined;
  const template = spec && isObject(spec.template) ? spec.template : undefined;
  return template && isObject(template.spec) ? template.spec : undefined;
}

function containersOf(pod: Json): Json[] {
  return [...list<Json>(pod.initContainers), ...list<Json>(pod.containers)];
}

function renameConfigMapRefs(pod: Json, renamed: Map<string, string>): void {
  const rename = (ref: unknown) => {
    if (isObject(ref) && typeof ref.name === 'string' && renamed.has(ref.name))
      ref.name = renamed.get(ref.name);
  };
  for (const volume of list<Json>(pod.volumes)) {
    rename(volume.configMap);
    if (isObject(volume.projected))
      for (const source of list<Json>(volume.projected.sources)) rename(source.configMap);
  }
  for (const c of containersOf(pod)) {
    for (const from of list<Json>(c.envFrom)) rename(from.configMapRef);
    for (const env of list<Json>(c.env))
      if (isObject(env.valueFrom)) rename(env.valueFrom.configMapKeyRef);
  }
}

function setImage(objects: K8sObject[], image: Json, where: string): void {
  if (Object.keys(image).some((f) => !['name', 'newName', 'newTag', 'digest'].includes(f)))
    throw new Error(`${where}: images supports name, newName, newTag, digest`);
  for (const obj of objects) {
    const pod = podSpec(obj);
    for (const c of pod ? containersOf(pod) : []) {
      const m = /^([^@:]+(?::\d+\/[^@:]+)?)(?::([^@]+))?(?:@(.+))?$/.exec(String(c.image));
      if (!m || m[1] !== image.name) continue;
      const name = (image.newName as string | undefined) ?? m[1];
      if (image.digest) c.image = `${name}@${String(image.digest)}`;
      else if (image.newTag) c.image = `${name}:${String(image.newTag)}`;
      else c.image = `${name}${m[2] ? `:${m[2]}` : ''}${m[3] ? `@${m[3]}` : ''}`;
    }
  }
}

/** Strategic-merge keys of the pod-spec lists k8s/ patches; other lists are replaced. */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  env: 'name',
  ports: 'containerPort',
  imagePullSecrets: 'name',
};

/** A strategic merge patch: maps merge, keyed lists merge by key (new items first), null deletes. */
function mergePatch(base: unknown, patch: unknown, key: string): unknown {
  if (patch === null) return undefined;
  if (isObject(patch)) {
    const out: Json = isObject(base) ? { ...base } : {};
    for (const [k, v] of Object.entries(patch)) {
      if (k.startsWith('$')) throw new Error(`patch directive ${k} is not supported (builtin)`);
      const merged = mergePatch(out[k], v, k);
      if (merged === undefined) delete out[k];
      else out[k] = merged;
    }
    return out;
  }
  const mergeKey = MERGE_KEYS[key];
  if (Array.isArray(patch) && Array.isArray(base) && mergeKey) {
    const keyOf = (item: unknown) => (isObject(item) ? item[mergeKey] : undefined);
    const added = patch.filter((p) => !base.some((b) => keyOf(b) === keyOf(p)));
    const merged = base.map((b) => {
      const p = patch.find((item) => keyOf(item) === keyOf(b));
      return p === undefined ? b : mergePatch(b, p, '');
    });
    return [...added, ...merged];
  }
  return structuredClone(patch);
}
