/**
 * Offline schema validation of Kubernetes objects with the validators `kubernetes-models` ships
 * (ajv code compiled from the Kubernetes OpenAPI schemas, and prometheus-operator's CRDs), made
 * strict: unknown fields are errors, as `kubectl apply` (server-side field validation) makes them.
 *
 * The models accept unknown fields (the schemas have no `additionalProperties: false`), and the
 * packages ship compiled validators, not JSON schemas to walk. So the object is handed to the
 * validator behind proxies that record which keys it reads: a compiled validator reads every
 * property its schema declares (`data.x !== undefined`) and every key of a map schema
 * (`for (k in data) ... data[k]`), so a key it never reads is a key the schema does not know.
 * An object whose keys the validator reads none of has a free-form schema
 * (`x-kubernetes-preserve-unknown-fields`): it is reported by `unchecked`, not as an error.
 */
import { Model } from '@kubernetes-models/base';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { Job } from 'kubernetes-models/batch/v1';
import { Lease } from 'kubernetes-models/coordination.k8s.io/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import {
  ConfigMap,
  PersistentVolumeClaim,
  Secret,
  Service,
  ServiceAccount,
} from 'kubernetes-models/v1';

interface ModelClass {
  readonly apiVersion: string;
  readonly kind: string;
  readonly prototype: Model<unknown>;
}

/**
 * The kinds k8s/ may contain, and the Lease the job controller writes (the fake API server of
 * test/helpers/fake-kube-api.ts validates it); another kind is an error until it is added here.
 */
const MODELS: readonly ModelClass[] = [
  ConfigMap,
  Secret,
  Service,
  ServiceAccount,
  PersistentVolumeClaim,
  Deployment,
  Job,
  Lease,
  HorizontalPodAutoscaler,
  PodDisruptionBudget,
  NetworkPolicy,
  Role,
  RoleBinding,
  ServiceMonitor,
];

/** What ajv's errors carry (the `ajv` package is not a direct dependency). */
interface AjvError {
  instancePath: string;
  keyword: string;
  message?: string;
}

interface Tracked {
  path: string;
  keys: string[];
  read: Set<string>;
}

/** A deep copy of `value` behind proxies that record, per object, the keys read from it. */
function track(value: unknown, path: string, records: Tracked[]): unknown {
  if (Array.isArray(value)) return value.map((v, i) => track(v, `${path}/${i}`, records));
  if (typeof value !== 'object' || value === null) return value;
  const copy: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) copy[k] = track(v, `${path}/${k}`, records);
  const record: Tracked = { path, keys: Object.keys(copy), read: new Set() };
  records.push(record);
  const note = (key: string | symbol) => typeof key === 'string' && record.read.add(key);
  return new Proxy(copy, {
    get(target, key, receiver) {
      note(key);
      return Reflect.get(target, key, receiver);
    },
    has(target, key) {
      note(key);
      return Reflect.has(target, key);
    },
  });
}

export interface SchemaReport {
  /** `Kind name: /json/pointer message`, one per problem; [] when valid. */
  problems: string[];
  /** Paths of objects with a free-form schema, whose fields nothing checked. */
  unchecked: string[];
}

export interface ValidateOptions {
  /**
   * For patches and other partial objects: missing required fields are not errors (unknown
   * fields and wrong types still are).
   */
  partial?: boolean;
}

/** Validates one object strictly against the schema of its apiVersion and kind. */
export function validateStrict(obj: unknown, options: ValidateOptions = {}): SchemaReport {
  const o = (typeof obj === 'object' && obj !== null ? obj : {}) as {
    apiVersion?: unknown;
    kind?: unknown;
    metadata?: { name?: unknown };
  };
  const id = `${String(o.kind)} ${String(o.metadata?.name ?? '(no name)')}`;
  const model = MODELS.find((m) => m.apiVersion === o.apiVersion && m.kind === o.kind);
  if (!model) {
    return {
      problems: [`${id}: no schema for apiVersion ${String(o.apiVersion)} kind ${String(o.kind)}`],
      unchecked: [],
    };
  }
  const records: Tracked[] = [];
  const proxy = track(obj, '', records);
  const problems: string[] = [];
  try {
    // A model's validate() runs the compiled validator on `this`: here, on the proxy.
    model.prototype.validate.call(proxy);
  } catch (error) {
    const errors = (error as { errors?: AjvError[] }).errors;
    if (!errors) throw error;
    for (const e of errors) {
      if (options.partial && e.keyword === 'required') continue;
      problems.push(`${id}: ${e.instancePath || '/'} ${e.message ?? e.keyword}`);
    }
  }
  const unchecked: string[] = [];
  for (const r of records) {
    if (r.keys.length === 0) continue;
    if (r.read.size === 0) {
      unchecked.push(r.path || '/');
      continue;
    }
    for (const key of r.keys) {
      if (!r.read.has(key)) problems.push(`${id}: ${r.path}/${key} unknown field`);
    }
  }
  return { problems, unchecked };
}
