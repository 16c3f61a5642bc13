/**
 * The training Job template of the Kubernetes job runner: one `batch/v1` Job per training job,
 * rendered from the job's spec and the runner's config (`k8s/base/training-runner.yaml`, mounted
 * in the API pods at /etc/gim/training-runner.yaml). Pure: no NestJS, no environment, no API calls.
 * `k8s/base/training-job.example.yaml` is a golden rendering, and the RBAC Role in `k8s/` grants
 * exactly `KUBERNETES_RUNNER_API_CALLS` (both checked by test/unit/k8s-manifests.test.ts).
 */
import type { IJob } from 'kubernetes-models/batch/v1/Job';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSecurityContext } from 'kubernetes-models/v1/PodSecurityContext';
import type { ISecurityContext } from 'kubernetes-models/v1/SecurityContext';
import type { IToleration } from 'kubernetes-models/v1/Toleration';
import type { IVolume } from 'kubernetes-models/v1/Volume';
import type { IVolumeMount } from 'kubernetes-models/v1/VolumeMount';
import { NAME_RE } from '../../gim/store/versioned-dir.js';

export const TRAINING_KINDS = ['encoder', 'head', 'probe', 'promote'] as const;
export type TrainingKind = (typeof TRAINING_KINDS)[number];

/** One training job, as the runner submits it. */
export interface TrainingJobSpec {
  /**
   * The job's id: lowercase letters, digits and '-', at most 48 characters, so that the Job's name
   * `gim-train-<id>-<attempt>` fits the 63 of a label value (the Job controller labels its pods
   * with it).
   */
  readonly jobId: string;
  /**
   * 1-based attempt (1 to 9999): each attempt is its own Job, since a retry cannot reuse the name
   * of a failed Job that still exists (until its ttlSecondsAfterFinished).
   */
  readonly attempt: number;
  /** The stack (or the stack a head or probe is for). */
  readonly model: string;
  readonly kind: TrainingKind;
  /**
   * The `gim` CLI arguments, passed verbatim (`train image --data ... --name ...`). The root
   * filesystem is read-only: anything the command writes (`--checkpoint-dir`) must be under
   * /models (or /tmp, which does not outlive the pod).
   */
  readonly args: readonly string[];
  /** The Job's `activeDeadlineSeconds`: past it Kubernetes kills the pod (DeadlineExceeded). */
  readonly timeoutSeconds: number;
}

export type Quantity = string | number;

/** What every training Job of one runner shares (parsed by `parseRunnerConfig`). */
export interface RunnerConfig {
  readonly namespace: string;
  /** The image to train with: the API's own image, so trainer and server agree on the format. */
  readonly image: string;
  readonly serviceAccountName: string;
  /** The models PVC (ReadWriteMany), mounted at /models. */
  readonly modelsClaimName: string;
  /** `nvidia.com/gpu` limit of the training container; 0 for none. */
  readonly gpu: number;
  readonly resources: {
    readonly requests?: Readonly<Record<string, Quantity>>;
    readonly limits?: Readonly<Record<string, Quantity>>;
  };
  readonly nodeSelector: Readonly<Record<string, string>>;
  readonly tolerations: readonly IToleration[];
  readonly ttlSecondsAfterFinished: number;
  readonly backoffLimit: number;
  /**
   * The training pod's `terminationGracePeriodSeconds`: after SIGTERM (a cancel deletes the Job,
   * a node drain evicts the pod) the trainer finishes its step, writes a checkpoint on the models
   * volume and exits; past this Kubernetes kills it and the step is lost. The Kubernetes default
   * (30 s) is short for a slow step plus a checkpoint on a network volume.
   */
  readonly terminationGracePeriodSeconds: number;
}

export type KubernetesVerb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete';

export interface KubernetesApiCall {
  /** '' for the core group. */
  readonly apiGroup: string;
  /** A resource or sub-resource (`pods/log`). */
  readonly resource: string;
  readonly verbs: readonly KubernetesVerb[];
}

/**
 * Every Kubernetes API call the runner makes, in its own namespace. The Role in k8s/base/rbac.yaml
 * must grant exactly these: a new call is added here first, and the test then fails until the
 * Role grants it.
 */
export const KUBERNETES_RUNNER_API_CALLS: readonly KubernetesApiCall[] = Object.freeze([
  // Submit (get: adopt the Job of an AlreadyExists), follow (list + watch), re-adopt by label
  // after a restart (list), cancel (delete).
  { apiGroup: 'batch', resource: 'jobs', verbs: ['create', 'get', 'list', 'watch', 'delete'] },
  // Exit codes and OOMKilled of the Job's pods; a forced cancel deletes them with no grace period
  // (the garbage collector would give them their full terminationGracePeriodSeconds).
  { apiGroup: '', resource: 'pods', verbs: ['list', 'delete'] },
  // The trainer's output, copied to the job's log when its Job ends (logs outlive the pods).
  { apiGroup: '', resource: 'pods/log', verbs: ['get'] },
  // One replica reconciles: the Lease (gim-serve-jobs) decides which.
  { apiGroup: 'coordination.k8s.io', resource: 'leases', verbs: ['get', 'create', 'update'] },
]);

/** The CLI's entry in the image (WORKDIR /app), and its exit status for bad input. */
export const CLI_COMMAND: readonly string[] = Object.freeze(['node', 'dist/src/cli/main.js']);
export const BAD_INPUT_EXIT_CODE = 2;
export const TRAIN_CONTAINER = 'train';
export const MODELS_MOUNT = '/models';
/** Where the image's CUDA_CACHE_PATH points (the root filesystem is read-only). */
export const CUDA_CACHE_MOUNT = '/cache/cuda';

/** The serving Deployment's pod security context; the test checks `k8s/` uses the same. */
export const POD_SECURITY_CONTEXT: Readonly<IPodSecurityContext> = Object.freeze({
  runAsNonRoot: true,
  runAsUser: 10001,
  runAsGroup: 10001,
  fsGroup: 10001,
  fsGroupChangePolicy: 'OnRootMismatch',
  seccompProfile: { type: 'RuntimeDefault' },
} satisfies IPodSecurityContext);

export const CONTAINER_SECURITY_CONTEXT: Readonly<ISecurityContext> = Object.freeze({
  runAsNonRoot: true,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
} satisfies ISecurityContext);

/** A runner config or job spec that cannot make a valid Job; one problem a line. */
export class JobTemplateError extends Error {
  override readonly name = 'JobTemplateError';

  constructor(
    heading: string,
    readonly problems: readonly string[],
  ) {
    super(`${heading}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
}

const DNS_LABEL_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN_RE =
  /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE_RE = /^(?=.{0,63}$)([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;
const LABEL_NAME_RE = /^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
// A resource quantity as Kubernetes writes them: 500m, 2, 1.5, 8Gi, 1e3.
const QUANTITY_RE = /^(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][-+]?\d+)?$/;
const JOB_ID_RE = /^(?=.{1,48}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const MAX_ATTEMPT = 9999;
const JOB_NAME_PREFIX = 'gim-train-';
const GPU_RESOURCE = 'nvidia.com/gpu';
const MAX_GPUS = 16;
/**
 * Default grace of a training pod after SIGTERM: twice the local runner's default
 * (JOB_STOP_GRACE_MS, 60 s), for a checkpoint written to a network volume.
 */
export const DEFAULT_TRAINING_GRACE_SECONDS = 120;

const RUNNER_KEYS = [
  'namespace',
  'image',
  'serviceAccountName',
  'modelsClaimName',
  'gpu',
  'resources',
  'nodeSelector',
  'tolerations',
  'ttlSecondsAfterFinished',
  'backoffLimit',
  'terminationGracePeriodSeconds',
] as const;
const TOLERATION_KEYS = ['key', 'operator', 'value', 'effect', 'tolerationSeconds'];
const TOLERATION_EFFECTS = ['NoSchedule', 'PreferNoSchedule', 'NoExecute'];

/** `key: value` keys of a label map: an optional DNS-subdomain prefix and a name. */
function isLabelKey(key: string): boolean {
  const slash = key.lastIndexOf('/');
  const name = slash < 0 ? key : key.slice(slash + 1);
  return (slash < 0 || DNS_SUBDOMAIN_RE.test(key.slice(0, slash))) && LABEL_NAME_RE.test(name);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const show = (value: unknown): string => JSON.stringify(value) ?? String(value);

/**
 * Checks a runner config read from YAML and fills in defaults (serviceAccountName `gim-train`,
 * gpu 0, no resources, selector or tolerations, ttlSecondsAfterFinished 3600, backoffLimit 1,
 * terminationGracePeriodSeconds `DEFAULT_TRAINING_GRACE_SECONDS`).
 * Throws a `JobTemplateError` naming every bad or unknown field.
 */
export function parseRunnerConfig(obj: unknown): RunnerConfig {
  const problems: string[] = [];
  if (!isPlainObject(obj)) {
    throw new JobTemplateError('invalid training runner config', [
      `expected a mapping, got ${show(obj)}`,
    ]);
  }
  for (const key of Object.keys(obj)) {
    if (!(RUNNER_KEYS as readonly string[]).includes(key))
      problems.push(`${key}: unknown field (expected one of ${RUNNER_KEYS.join(', ')})`);
  }
  const text = (key: string, re: RegExp, expected: string, fallback?: string): string => {
    const value = obj[key] ?? fallback;
    if (value === undefined) problems.push(`${key}: required (${expected})`);
    else if (typeof value !== 'string' || !re.test(value))
      problems.push(`${key}: expected ${expected}, got ${show(value)}`);
    return typeof value === 'string' ? value : '';
  };
  const integer = (key: string, min: number, max: number, fallback: number): number => {
    const value = obj[key] ?? fallback;
    if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max)
      return value;
    problems.push(`${key}: expected an integer from ${min} to ${max}, got ${show(value)}`);
    return fallback;
  };

  const config: RunnerConfig = {
    namespace: text('namespace', DNS_LABEL_RE, 'a namespace name (DNS label)'),
    image: text('image', /^[^\s]+$/, 'an image reference without spaces'),
    serviceAccountName: text(
      'serviceAccountName',
      DNS_SUBDOMAIN_RE,
      'a service account name',
      'gim-train',
    ),
    modelsClaimName: text('modelsClaimName', DNS_SUBDOMAIN_RE, 'a PersistentVolumeClaim name'),
    gpu: integer('gpu', 0, MAX_GPUS, 0),
    resources: parseResources(obj.resources, problems),
    nodeSelector: parseNodeSelector(obj.nodeSelector, problems),
    tolerations: parseTolerations(obj.tolerations, problems),
    ttlSecondsAfterFinished: integer('ttlSecondsAfterFinished', 0, 30 * 86_400, 3600),
    backoffLimit: integer('backoffLimit', 0, 10, 1),
    terminationGracePeriodSeconds: integer(
      'terminationGracePeriodSeconds',
      1,
      3600,
      DEFAULT_TRAINING_GRACE_SECONDS,
    ),
  };
  if (problems.length > 0) throw new JobTemplateError('invalid training runner config', problems);
  return Object.freeze(config);
}

function parseResources(value: unknown, problems: string[]): RunnerConfig['resources'] {
  if (value === undefined || value === null) return {};
  if (!isPlainObject(value)) {
    problems.push(`resources: expected a mapping with requests and limits, got ${show(value)}`);
    return {};
  }
  const out: { requests?: Record<string, Quantity>; limits?: Record<string, Quantity> } = {};
  for (const [part, amounts] of Object.entries(value)) {
    if (part !== 'requests' && part !== 'limits') {
      problems.push(`resources.${part}: unknown field (expected requests, limits)`);
      continue;
    }
    if (!isPlainObject(amounts)) {
      problems.push(`resources.${part}: expected a mapping of resource: quantity`);
      continue;
    }
    const checked: Record<string, Quantity> = {};
    for (const [name, amount] of Object.entries(amounts)) {
      const where = `resources.${part}.${name}`;
      if (name === GPU_RESOURCE) problems.push(`${where}: set the top-level gpu field instead`);
      else if (!isLabelKey(name)) problems.push(`${where}: not a resource name`);
      else if (
        (typeof amount === 'number' && Number.isFinite(amount) && amount >= 0) ||
        (typeof amount === 'string' && QUANTITY_RE.test(amount))
      )
        checked[name] = amount;
      else
        problems.push(`${where}: expected a quantity such as 2, 500m or 8Gi, got ${show(amount)}`);
    }
    out[part] = checked;
  }
  return out;
}

function parseNodeSelector(value: unknown, problems: string[]): Record<string, string> {
  if (value === undefined || value === null) return {};
  if (!isPlainObject(value)) {
    problems.push(`nodeSelector: expected a mapping of label: value, got ${show(value)}`);
    return {};
  }
  const out: Record<string, string> = {};
  for (const [key, label] of Object.entries(value)) {
    if (!isLabelKey(key)) problems.push(`nodeSelector.${key}: not a label key`);
    else if (typeof label !== 'string' || !LABEL_VALUE_RE.test(label))
      problems.push(
        `nodeSelector.${key}: expected a label value (a string; quote "true"), got ${show(label)}`,
      );
    else out[key] = label;
  }
  return out;
}

function parseTolerations(value: unknown, problems: string[]): IToleration[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) {
    problems.push(`tolerations: expected a list, got ${show(value)}`);
    return [];
  }
  return value.flatMap((t: unknown, i): IToleration[] => {
    const where = `tolerations[${i}]`;
    if (!isPlainObject(t)) {
      problems.push(`${where}: expected a mapping, got ${show(t)}`);
      return [];
    }
    const before = problems.length;
    for (const key of Object.keys(t)) {
      if (!TOLERATION_KEYS.includes(key))
        problems.push(`${where}.${key}: unknown field (expected ${TOLERATION_KEYS.join(', ')})`);
    }
    const operator = t.operator ?? 'Equal';
    if (operator !== 'Equal' && operator !== 'Exists')
      problems.push(`${where}.operator: expected Equal or Exists, got ${show(t.operator)}`);
    if (t.key !== undefined && (typeof t.key !== 'string' || !isLabelKey(t.key)))
      problems.push(`${where}.key: expected a taint key, got ${show(t.key)}`);
    if (operator === 'Exists' && t.value !== undefined)
      problems.push(`${where}.value: must be empty with operator Exists`);
    if (t.value !== undefined && (typeof t.value !== 'string' || !LABEL_VALUE_RE.test(t.value)))
      problems.push(`${where}.value: expected a taint value, got ${show(t.value)}`);
    if (t.effect !== undefined && !TOLERATION_EFFECTS.includes(t.effect as string))
      problems.push(
        `${where}.effect: expected one of ${TOLERATION_EFFECTS.join(', ')}, got ${show(t.effect)}`,
      );
    if (t.tolerationSeconds !== undefined) {
      if (t.effect !== 'NoExecute')
        problems.push(`${where}.tolerationSeconds: only with effect NoExecute`);
      if (!Number.isInteger(t.tolerationSeconds))
        problems.push(`${where}.tolerationSeconds: expected an integer`);
    }
    return problems.length === before ? [t as IToleration] : [];
  });
}

/** Labels of the training Jobs and their pods (the runner lists and re-adopts by them). */
export const JOB_ID_LABEL = 'gim.dev/job-id';
export const ATTEMPT_LABEL = 'gim.dev/attempt';

/** The Job's name: `gim-train-<jobId>-<attempt>` (at most 10 + 48 + 5 = 63 characters). */
export function trainingJobName(jobId: string, attempt: number): string {
  return `${JOB_NAME_PREFIX}${jobId}-${attempt}`;
}

function checkSpec(spec: TrainingJobSpec): void {
  const problems: string[] = [];
  if (typeof spec.jobId !== 'string' || !JOB_ID_RE.test(spec.jobId))
    problems.push(
      `jobId: expected 1-48 lowercase letters, digits and '-' (not at either end), got ${show(spec.jobId)}`,
    );
  if (!Number.isInteger(spec.attempt) || spec.attempt < 1 || spec.attempt > MAX_ATTEMPT)
    problems.push(
      `attempt: expected an integer from 1 to ${MAX_ATTEMPT}, got ${show(spec.attempt)}`,
    );
  // A stack name is also a label value here: at most 63 characters, ending in a letter or digit.
  if (
    typeof spec.model !== 'string' ||
    !NAME_RE.test(spec.model) ||
    !LABEL_VALUE_RE.test(spec.model)
  )
    problems.push(
      `model: expected a stack name of at most 63 characters ending in a letter or digit, got ${show(spec.model)}`,
    );
  if (!(TRAINING_KINDS as readonly string[]).includes(spec.kind))
    problems.push(`kind: expected one of ${TRAINING_KINDS.join(', ')}, got ${show(spec.kind)}`);
  if (!Array.isArray(spec.args) || spec.args.some((a) => typeof a !== 'string'))
    problems.push('args: expected a list of strings (the gim CLI arguments)');
  else if (spec.args.length === 0) problems.push('args: empty (expected a gim command)');
  if (!Number.isInteger(spec.timeoutSeconds) || spec.timeoutSeconds < 1)
    problems.push(`timeoutSeconds: expected a positive integer, got ${show(spec.timeoutSeconds)}`);
  if (problems.length > 0) throw new JobTemplateError('cannot render the training Job', problems);
}

/**
 * The Job the runner creates for `spec`: container `train` running the `gim` CLI on the models
 * PVC, with the serving pods' security context. A bad-input exit (2) fails the Job at once instead
 * of burning retries; a disruption (preemption, node drain) does not count as a retry.
 */
export function renderTrainingJob(spec: TrainingJobSpec, runner: RunnerConfig): IJob {
  checkSpec(spec);
  const labels = {
    'app.kubernetes.io/name': 'gim-serve',
    'app.kubernetes.io/component': 'training',
    [JOB_ID_LABEL]: spec.jobId,
    [ATTEMPT_LABEL]: String(spec.attempt),
    'gim.dev/model': spec.model,
    'gim.dev/kind': spec.kind,
  };
  const gpu = runner.gpu > 0;
  const limits = { ...runner.resources.limits, ...(gpu ? { [GPU_RESOURCE]: runner.gpu } : {}) };
  const resources = {
    ...(runner.resources.requests ? { requests: { ...runner.resources.requests } } : {}),
    ...(Object.keys(limits).length > 0 ? { limits } : {}),
  };
  const volumeMounts: IVolumeMount[] = [
    { name: 'models', mountPath: MODELS_MOUNT },
    { name: 'tmp', mountPath: '/tmp' },
    ...(gpu ? [{ name: 'cuda-cache', mountPath: CUDA_CACHE_MOUNT }] : []),
  ];
  const volumes: IVolume[] = [
    { name: 'models', persistentVolumeClaim: { claimName: runner.modelsClaimName } },
    { name: 'tmp', emptyDir: { sizeLimit: '1Gi' } },
    ...(gpu ? [{ name: 'cuda-cache', emptyDir: { sizeLimit: '2Gi' } }] : []),
  ];
  const container: IContainer = {
    name: TRAIN_CONTAINER,
    image: runner.image,
    command: [...CLI_COMMAND],
    args: [...spec.args],
    env: [{ name: 'MODELS_DIR', value: MODELS_MOUNT }],
    resources,
    securityContext: structuredClone(CONTAINER_SECURITY_CONTEXT),
    volumeMounts,
  };
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: trainingJobName(spec.jobId, spec.attempt),
      namespace: runner.namespace,
      labels,
    },
    spec: {
      backoffLimit: runner.backoffLimit,
      activeDeadlineSeconds: spec.timeoutSeconds,
      ttlSecondsAfterFinished: runner.ttlSecondsAfterFinished,
      podFailurePolicy: {
        rules: [
          {
            action: 'FailJob',
            onExitCodes: {
              containerName: TRAIN_CONTAINER,
              operator: 'In',
              values: [BAD_INPUT_EXIT_CODE],
            },
          },
          { action: 'Ignore', onPodConditions: [{ type: 'DisruptionTarget', status: 'True' }] },
        ],
      },
      template: {
        metadata: { labels: { ...labels } },
        spec: {
          // podFailurePolicy requires Never: a failed container is a failed pod, counted once.
          restartPolicy: 'Never',
          // SIGTERM -> finish the step, checkpoint, exit 3: the time that takes.
          terminationGracePeriodSeconds: runner.terminationGracePeriodSeconds,
          serviceAccountName: runner.serviceAccountName,
          automountServiceAccountToken: false,
          securityContext: structuredClone(POD_SECURITY_CONTEXT),
          ...(Object.keys(runner.nodeSelector).length > 0
            ? { nodeSelector: { ...runner.nodeSelector } }
            : {}),
          ...(runner.tolerations.length > 0
            ? { tolerations: runner.tolerations.map((t) => ({ ...t })) }
            : {}),
          containers: [container],
          volumes,
        },
      },
    },
  };
}
