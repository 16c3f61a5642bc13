/**
 * The checks that keep `k8s/` true to the app: each takes one rendered overlay (and what the
 * running app serves) and returns its problems, one sentence each; [] when all holds. The tests
 * run them on the real manifests and on purpose-made mistakes (test/unit/k8s-manifests.test.ts).
 */
import type { IServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { IHorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import type { IJob } from 'kubernetes-models/batch/v1/Job';
import type { INetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { IRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import type { IRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import type { IProbe } from 'kubernetes-models/v1/Probe';
import type { IService } from 'kubernetes-models/v1/Service';
import type { IServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { isAbsolute, relative } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { CONFIG_ENV_NAMES, ConfigError, type AppConfig, loadConfig } from '../../src/app/config.js';
import {
  BAD_INPUT_EXIT_CODE,
  CLI_COMMAND,
  CONTAINER_SECURITY_CONTEXT,
  KUBERNETES_RUNNER_API_CALLS,
  MODELS_MOUNT,
  POD_SECURITY_CONTEXT,
  type RunnerConfig,
  TRAIN_CONTAINER,
  type TrainingJobSpec,
  parseRunnerConfig,
  renderTrainingJob,
} from '../../src/app/jobs/kubernetes-job.js';
import { type K8sObject, isObject } from './k8s-render.js';
import { validateStrict } from './k8s-schema.js';

/**
 * Environment names the Deployment may set that are not app settings (so not in
 * CONFIG_ENV_NAMES): read by Node, libuv, TensorFlow or CUDA. Explicit names, no TF_* pattern, so
 * a misspelled one is still caught. Add a name here only with what reads it.
 */
export const NON_APP_ENV_NAMES: ReadonlyMap<string, string> = new Map([
  ['NODE_ENV', 'Node/NestJS: production in the image'],
  ['NODE_OPTIONS', 'Node: e.g. --max-old-space-size'],
  ['UV_THREADPOOL_SIZE', 'libuv: how many images sharp decodes at once (README)'],
  ['TF_CPP_MIN_LOG_LEVEL', 'TensorFlow: native log level'],
  ['TF_NUM_INTRAOP_THREADS', 'TensorFlow: threads per op (README "Threads")'],
  ['TF_NUM_INTEROP_THREADS', 'TensorFlow: ops run at once'],
  ['TF_FORCE_GPU_ALLOW_GROWTH', 'TensorFlow: do not take the whole GPU (set in the image)'],
  ['CUDA_CACHE_PATH', 'CUDA: the PTX JIT cache directory (set in the image)'],
  ['CUDA_CACHE_MAXSIZE', 'CUDA: the PTX JIT cache size'],
]);

/**
 * The training job the checks render with each overlay's runner config (and the golden file): the
 * first attempt of encoder job example-0001, its arguments as the Kubernetes runner passes them
 * (`trainerArgs` with the job directory as the pod sees it; always `--resume`, see
 * src/jobs/kubernetes/kubernetes-runner.ts). test/unit/kubernetes-runner.test.ts checks the
 * runner creates exactly this Job.
 */
export const EXAMPLE_TRAINING_SPEC: TrainingJobSpec = Object.freeze({
  jobId: 'example-0001',
  attempt: 1,
  model: 'fashion-gim',
  kind: 'encoder',
  args: Object.freeze([
    'train',
    'image',
    '--data',
    '/models/.data/fashion-mnist',
    '--name',
    'fashion-gim',
    '--epochs',
    '3',
    '--progress-json=/models/.jobs/example-0001/progress.ndjson',
    '--checkpoint-dir=/models/.jobs/example-0001/checkpoint',
    '--resume',
  ]),
  timeoutSeconds: 21_600,
});

/** What the running app serves, gathered once by the test. */
export interface AppFacts {
  /** Routes as `get /health/ready`. */
  routes: ReadonlySet<string>;
  /** Metric families on /metrics and their `# TYPE`. */
  metricTypes: ReadonlyMap<string, string>;
}

export interface ManifestContext {
  overlay: 'gpu' | 'cpu';
  objects: K8sObject[];
  app: AppFacts;
  /** k8s/base/prometheus-adapter-rules.yaml, parsed. */
  adapterRules: unknown;
}

export type Check = (ctx: ManifestContext) => string[];

const byKind = <T>(ctx: ManifestContext, kind: string): T[] =>
  ctx.objects.filter((o) => o.kind === kind) as unknown as T[];

/** The one object of a kind, or a problem. */
function only<T>(ctx: ManifestContext, kind: string, problems: string[]): T | undefined {
  const found = byKind<T>(ctx, kind);
  if (found.length !== 1) problems.push(`expected one ${kind}, found ${found.length}`);
  return found[0];
}

const selects = (selector: Record<string, string> | undefined, labels: Record<string, string>) =>
  selector !== undefined &&
  Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([k, v]) => labels[k] === v);

/** The serving Deployment, its pod spec and its serving container (the one with port `http`). */
interface Serving {
  dep: IDeployment;
  pod: IPodSpec;
  podLabels: Record<string, string>;
  container: IContainer;
}

function serving(ctx: ManifestContext, problems: string[]): Serving | undefined {
  const dep = only<IDeployment>(ctx, 'Deployment', problems);
  const pod = dep?.spec?.template.spec;
  const container = pod?.containers.find((c) => c.ports?.some((p) => p.name === 'http'));
  if (!dep || !pod || !container) {
    if (dep) problems.push(`Deployment ${dep.metadata?.name}: no container with a port named http`);
    return undefined;
  }
  return { dep, pod, podLabels: dep.spec?.template.metadata?.labels ?? {}, container };
}

/**
 * What the downward API gives a pod's `fieldRef`s, for the checks: a pod name of the Deployment
 * (its ReplicaSet and pod suffixes are made up), its namespace, a stand-in for other fields.
 */
function fieldValue(ctx: ManifestContext, fieldPath: string): string {
  const dep = byKind<IDeployment>(ctx, 'Deployment')[0];
  if (fieldPath === 'metadata.name') return `${dep?.metadata?.name ?? 'pod'}-5d8f7c9b6-x2k4q`;
  if (fieldPath === 'metadata.namespace') return dep?.metadata?.namespace ?? 'default';
  return `value-of-${fieldPath}`;
}

/**
 * What the kubelet sets in every container, whatever the manifest says: the API server's address
 * (the in-cluster job runner's connection; the value is made up).
 */
export const KUBELET_ENV: Readonly<Record<string, string>> = Object.freeze({
  KUBERNETES_SERVICE_HOST: 'kubernetes.default.svc',
  KUBERNETES_SERVICE_PORT: '443',
});

/**
 * The environment the serving container sees: envFrom ConfigMaps, then env (literal values and
 * downward-API `fieldRef`s; secrets are left out).
 */
function containerEnv(
  ctx: ManifestContext,
  c: IContainer,
  problems: string[],
): { values: Record<string, string>; sources: Map<string, string> } {
  const values: Record<string, string> = {};
  const sources = new Map<string, string>();
  const set = (name: string, value: string | undefined, source: string) => {
    if (sources.has(name))
      problems.push(`env ${name} is set twice (${sources.get(name)}, ${source})`);
    sources.set(name, source);
    if (value !== undefined) values[name] = value;
  };
  for (const from of c.envFrom ?? []) {
    if (from.prefix) problems.push(`envFrom with prefix ${from.prefix}: names would not match`);
    const name = from.configMapRef?.name;
    if (!name) {
      problems.push(`container ${c.name}: envFrom other than a configMapRef`);
      continue;
    }
    const cm = byKind<IConfigMap>(ctx, 'ConfigMap').find((m) => m.metadata?.name === name);
    if (!cm) problems.push(`container ${c.name}: envFrom ConfigMap ${name} is not in the build`);
    for (const [k, v] of Object.entries(cm?.data ?? {})) set(k, v, `ConfigMap ${name}`);
  }
  for (const e of c.env ?? []) {
    const field = e.valueFrom?.fieldRef?.fieldPath;
    const value = e.valueFrom
      ? field === undefined
        ? undefined
        : fieldValue(ctx, field)
      : (e.value ?? '');
    set(e.name, value, 'env');
  }
  return { values, sources };
}

/**
 * loadConfig over the serving container's environment as the pod would have it (the kubelet's
 * variables, then the manifest's), or the problems it names.
 */
function appConfig(ctx: ManifestContext, s: Serving, problems: string[]): AppConfig | undefined {
  try {
    return loadConfig({ ...KUBELET_ENV, ...containerEnv(ctx, s.container, []).values });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    problems.push(...error.problems.map((p) => `loadConfig rejects the ConfigMap: ${p}`));
    return undefined;
  }
}

/** A container port by name or number. */
function containerPort(c: IContainer, port: string | number | undefined) {
  return c.ports?.find((p) =>
    typeof port === 'string' ? p.name === port : p.containerPort === port,
  );
}

// --- the checks --------------------------------------------------------------------------------

/** 1. Every object validates against its Kubernetes (or CRD) schema, unknown fields rejected. */
export const checkSchemas: Check = (ctx) =>
  ctx.objects.flatMap((o) => {
    const { problems, unchecked } = validateStrict(o);
    return [
      ...problems,
      ...unchecked.map((p) => `${o.kind} ${o.metadata.name}: ${p} is free-form (unchecked)`),
    ];
  });

/** 2. The Deployment, Service, PDB, NetworkPolicy, ServiceMonitor, HPA all reach the serving pods. */
export const checkSelectors: Check = (ctx) => {
  const problems: string[] = [];
  const s = serving(ctx, problems);
  if (!s) return problems;
  const name = s.dep.metadata?.name;
  const sel = s.dep.spec?.selector;
  if (sel?.matchExpressions?.length)
    problems.push('Deployment selector: matchExpressions (unchecked)');
  if (!selects(sel?.matchLabels, s.podLabels))
    problems.push(`Deployment ${name}: selector does not match its pod template labels`);
  const training = renderTrainingJob(EXAMPLE_TRAINING_SPEC, exampleRunner(ctx)).spec?.template
    .metadata?.labels;
  const reach = (what: string, selector: Record<string, string> | undefined) => {
    if (!selects(selector, s.podLabels)) problems.push(`${what} does not select the serving pods`);
    if (training && selects(selector, training)) problems.push(`${what} selects training Job pods`);
  };
  reach('Deployment selector', sel?.matchLabels);
  for (const svc of byKind<IService>(ctx, 'Service'))
    reach(`Service ${svc.metadata?.name} selector`, svc.spec?.selector);
  for (const pdb of byKind<IPodDisruptionBudget>(ctx, 'PodDisruptionBudget'))
    reach(`PodDisruptionBudget ${pdb.metadata?.name} selector`, pdb.spec?.selector?.matchLabels);
  for (const np of byKind<INetworkPolicy>(ctx, 'NetworkPolicy'))
    reach(`NetworkPolicy ${np.metadata?.name} podSelector`, np.spec?.podSelector?.matchLabels);
  const terms = s.pod.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution;
  if (!terms?.some((t) => t.podAffinityTerm.topologyKey === 'kubernetes.io/hostname'))
    problems.push('Deployment: no preferred pod anti-affinity by kubernetes.io/hostname');
  for (const t of terms ?? [])
    reach('pod anti-affinity labelSelector', t.podAffinityTerm.labelSelector?.matchLabels);
  for (const hpa of byKind<IHorizontalPodAutoscaler>(ctx, 'HorizontalPodAutoscaler')) {
    const ref = hpa.spec?.scaleTargetRef;
    if (ref?.apiVersion !== 'apps/v1' || ref.kind !== 'Deployment' || ref.name !== name)
      problems.push(
        `HorizontalPodAutoscaler ${hpa.metadata?.name}: scaleTargetRef ${ref?.kind}/${ref?.name} is not Deployment ${name}`,
      );
  }
  const services = byKind<IService>(ctx, 'Service');
  for (const sm of byKind<IServiceMonitor>(ctx, 'ServiceMonitor')) {
    if (!services.some((svc) => selects(sm.spec.selector.matchLabels, svc.metadata?.labels ?? {})))
      problems.push(`ServiceMonitor ${sm.metadata?.name}: selector matches no Service's labels`);
  }
  return problems;
};

/** 3. Ports: Service, probes, NetworkPolicy and ServiceMonitor all reach the app's PORT. */
export const checkPorts: Check = (ctx) => {
  const problems: string[] = [];
  const s = serving(ctx, problems);
  if (!s) return problems;
  const http = containerPort(s.container, 'http');
  // Bad values are the env check's to report.
  const config = appConfig(ctx, s, []);
  if (config && http?.containerPort !== config.port)
    problems.push(
      `container port http is ${http?.containerPort}, but the app listens on PORT ${config.port}`,
    );
  const services = byKind<IService>(ctx, 'Service');
  for (const svc of services) {
    for (const p of svc.spec?.ports ?? []) {
      const target = containerPort(s.container, p.targetPort ?? p.port);
      if (!target)
        problems.push(
          `Service ${svc.metadata?.name} port ${p.name ?? p.port}: targetPort ${p.targetPort} is no container port`,
        );
    }
  }
  for (const [kind, probe] of probes(s.container)) {
    const port = probe?.httpGet?.port;
    if (probe && containerPort(s.container, port) !== http)
      problems.push(`${kind}: port ${port} is not the container's http port`);
  }
  for (const np of byKind<INetworkPolicy>(ctx, 'NetworkPolicy')) {
    for (const [i, rule] of (np.spec?.ingress ?? []).entries()) {
      if (!rule.ports?.length) problems.push(`NetworkPolicy ingress[${i}]: open on every port`);
      for (const p of rule.ports ?? []) {
        if (containerPort(s.container, p.port) !== http)
          problems.push(`NetworkPolicy ingress[${i}]: port ${p.port} is not the http port`);
      }
    }
  }
  const portNames = services.flatMap((svc) => (svc.spec?.ports ?? []).map((p) => p.name));
  for (const sm of byKind<IServiceMonitor>(ctx, 'ServiceMonitor')) {
    for (const e of sm.spec.endpoints ?? []) {
      if (!e.port || !portNames.includes(e.port))
        problems.push(
          `ServiceMonitor ${sm.metadata?.name}: port ${e.port} is no Service port name`,
        );
      if (e.path !== undefined && !ctx.app.routes.has(`get ${e.path}`))
        problems.push(
          `ServiceMonitor ${sm.metadata?.name}: path ${e.path} is not a route the app serves`,
        );
    }
  }
  return problems;
};

function probes(c: IContainer): [string, IProbe | undefined][] {
  return [
    ['startupProbe', c.startupProbe],
    ['readinessProbe', c.readinessProbe],
    ['livenessProbe', c.livenessProbe],
  ];
}

/** 4. Probes: all three, on routes the app really serves; start-up budget for the node type. */
export const checkProbes: Check = (ctx) => {
  const problems: string[] = [];
  const s = serving(ctx, problems);
  if (!s) return problems;
  for (const [kind, probe] of probes(s.container)) {
    const path = probe?.httpGet?.path;
    if (!path) problems.push(`${kind}: missing, or not an httpGet probe`);
    else if (!ctx.app.routes.has(`get ${path.split('?')[0]}`))
      problems.push(`${kind}: GET ${path} is not a route the app serves`);
  }
  const ready = s.container.readinessProbe?.httpGet?.path;
  if (s.container.startupProbe?.httpGet?.path !== ready)
    problems.push('startupProbe: should probe the readiness path (the worker and the warm-up)');
  if (ready !== undefined && s.container.livenessProbe?.httpGet?.path === ready)
    problems.push('livenessProbe: on the readiness path, a busy or warming pod would be restarted');
  const startup = s.container.startupProbe;
  const budget = (startup?.periodSeconds ?? 10) * (startup?.failureThreshold ?? 3);
  const need = ctx.overlay === 'gpu' ? 600 : 60;
  if (budget < need)
    problems.push(
      `startupProbe: ${budget} s before liveness counts, less than the ${need} s a ${ctx.overlay} start needs`,
    );
  return problems;
};

/** 5. Environment: app settings by their real names, values loadConfig accepts, the token secret. */
export const checkEnv: Check = (ctx) => {
  const problems: string[] = [];
  const s = serving(ctx, problems);
  if (!s) return problems;
  const { sources } = containerEnv(ctx, s.container, problems);
  const settings: readonly string[] = CONFIG_ENV_NAMES;
  for (const [name, source] of sources) {
    if (!settings.includes(name) && !NON_APP_ENV_NAMES.has(name))
      problems.push(
        `env ${name} (${source}) is neither an app setting (CONFIG_ENV_NAMES in src/app/config.ts) nor an allow-listed runtime name`,
      );
  }
  appConfig(ctx, s, problems);
  const token = s.container.env?.find((e) => e.name === 'ADMIN_TOKEN');
  const ref = token?.valueFrom?.secretKeyRef;
  if (!ref || ref.optional !== true || sources.get('ADMIN_TOKEN') !== 'env')
    problems.push('ADMIN_TOKEN: must come only from a secretKeyRef with optional: true');
  return problems;
};

/** The series name a prometheus-adapter seriesQuery selects (`name{...}`). */
const seriesName = (query: unknown) =>
  typeof query === 'string' ? /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{|$)/.exec(query)?.[1] : undefined;

/** 6. HPA: scales on series /metrics exposes (through the adapter rules), CPU fallback, slow down. */
export const checkHpa: Check = (ctx) => {
  const problems: string[] = [];
  const hpa = only<IHorizontalPodAutoscaler>(ctx, 'HorizontalPodAutoscaler', problems);
  if (!hpa?.spec) return problems;
  const rules =
    isObject(ctx.adapterRules) && Array.isArray(ctx.adapterRules.rules)
      ? ctx.adapterRules.rules
      : [];
  const metrics = hpa.spec.metrics ?? [];
  const pods = metrics.filter((m) => m.type === 'Pods');
  if (pods.length === 0) problems.push('HPA: no Pods metric (a serving signal)');
  for (const m of pods) {
    const name = m.pods?.metric.name;
    const rule = rules.find((r: unknown) => {
      if (!isObject(r)) return false;
      const as = isObject(r.name) ? r.name.as : undefined;
      return (as ?? seriesName(r.seriesQuery)) === name;
    }) as Record<string, unknown> | undefined;
    if (!rule) {
      problems.push(
        `HPA metric ${name}: no prometheus-adapter rule serves it (prometheus-adapter-rules.yaml)`,
      );
      continue;
    }
    const series = seriesName(rule.seriesQuery);
    const type = series ? ctx.app.metricTypes.get(series) : undefined;
    if (!type) problems.push(`HPA metric ${name}: series ${series} is not exposed by /metrics`);
    const query = String(rule.metricsQuery ?? '');
    if (type && type !== 'gauge' && !/\brate\(/.test(query))
      problems.push(`HPA metric ${name}: ${series} is a ${type}; the adapter must rate() it`);
    const overrides =
      isObject(rule.resources) && isObject(rule.resources.overrides)
        ? rule.resources.overrides
        : {};
    if (!isObject(overrides.pod) || !isObject(overrides.namespace))
      problems.push(`HPA metric ${name}: the adapter rule must map the pod and namespace labels`);
    if (m.pods?.target.type !== 'AverageValue')
      problems.push(`HPA metric ${name}: target must be AverageValue`);
  }
  if (!metrics.some((m) => m.type === 'Resource' && m.resource?.name === 'cpu'))
    problems.push('HPA: no CPU utilization fallback');
  if ((hpa.spec.minReplicas ?? 1) < 2) problems.push('HPA: minReplicas below 2');
  const down = hpa.spec.behavior?.scaleDown;
  if ((down?.stabilizationWindowSeconds ?? 0) < 300)
    problems.push('HPA: scaleDown.stabilizationWindowSeconds below 300');
  if (!down?.policies?.length) problems.push('HPA: no scaleDown policy');
  for (const p of down?.policies ?? []) {
    if (
      (p.type === 'Pods' && p.value > 1) ||
      (p.type === 'Percent' && p.value > 10) ||
      p.periodSeconds < 60
    )
      problems.push(`HPA: scaleDown policy ${p.type} ${p.value}/${p.periodSeconds}s is not slow`);
  }
  return problems;
};

/** 7. PodDisruptionBudget: one pod at a time, and never blocked by an unhealthy one. */
export const checkPdb: Check = (ctx) => {
  const problems: string[] = [];
  const pdb = only<IPodDisruptionBudget>(ctx, 'PodDisruptionBudget', problems);
  if (pdb && pdb.spec?.maxUnavailable !== 1)
    problems.push('PodDisruptionBudget: maxUnavailable is not 1');
  if (pdb && pdb.spec?.unhealthyPodEvictionPolicy !== 'AlwaysAllow')
    problems.push('PodDisruptionBudget: unhealthyPodEvictionPolicy is not AlwaysAllow');
  return problems;
};

/** `group resource` -> sorted verbs. */
function grants(
  calls: readonly { apiGroup: string; resource: string; verbs: readonly string[] }[],
) {
  const out = new Map<string, Set<string>>();
  for (const c of calls) {
    const key = `${c.apiGroup || 'core'} ${c.resource}`;
    const verbs = out.get(key) ?? new Set();
    for (const v of c.verbs) verbs.add(v);
    out.set(key, verbs);
  }
  return out;
}

/** 8. RBAC: the Role grants exactly the runner's API calls, namespaced, to the serving SA. */
export const checkRbac: Check = (ctx) => {
  const problems: string[] = [];
  for (const kind of ['ClusterRole', 'ClusterRoleBinding'])
    if (byKind(ctx, kind).length > 0)
      problems.push(`${kind}: the runner needs namespace rights only`);
  const role = only<IRole>(ctx, 'Role', problems);
  const rules = role?.rules ?? [];
  const granted = grants(
    rules.flatMap((r) => {
      if (r.resourceNames?.length || r.nonResourceURLs?.length)
        problems.push(
          `Role ${role?.metadata?.name}: resourceNames/nonResourceURLs are not runner calls`,
        );
      return (r.apiGroups ?? []).flatMap((apiGroup) =>
        (r.resources ?? []).map((resource) => ({ apiGroup, resource, verbs: r.verbs })),
      );
    }),
  );
  const needed = grants(KUBERNETES_RUNNER_API_CALLS);
  for (const [key, verbs] of granted) {
    for (const v of verbs) {
      if (!needed.get(key)?.has(v))
        problems.push(
          `Role grants ${v} on ${key}, which the runner does not call (KUBERNETES_RUNNER_API_CALLS)`,
        );
    }
  }
  for (const [key, verbs] of needed) {
    for (const v of verbs) {
      if (!granted.get(key)?.has(v))
        problems.push(`Role does not grant ${v} on ${key}, which the runner calls`);
    }
  }
  const s = serving(ctx, problems);
  const sa = s?.pod.serviceAccountName;
  const binding = only<IRoleBinding>(ctx, 'RoleBinding', problems);
  if (binding && (binding.roleRef.kind !== 'Role' || binding.roleRef.name !== role?.metadata?.name))
    problems.push(
      `RoleBinding: roleRef ${binding.roleRef.kind}/${binding.roleRef.name} is not the Role`,
    );
  const ns = s?.dep.metadata?.namespace;
  if (
    binding &&
    !binding.subjects?.some(
      (x) => x.kind === 'ServiceAccount' && x.name === sa && x.namespace === ns,
    )
  )
    problems.push(`RoleBinding: does not bind the Deployment's ServiceAccount ${sa} in ${ns}`);
  const account = byKind<IServiceAccount>(ctx, 'ServiceAccount').find(
    (a) => a.metadata?.name === sa,
  );
  if (!account) problems.push(`ServiceAccount ${sa} (the Deployment's) is not in the build`);
  else if (
    account.automountServiceAccountToken !== true &&
    s?.pod.automountServiceAccountToken !== true
  )
    problems.push(`ServiceAccount ${sa}: the job runner needs its token mounted`);
  return problems;
};

/** Security problems of one pod spec (every container), by what the pod and container set. */
function podSecurity(what: string, pod: IPodSpec): string[] {
  const problems: string[] = [];
  const psc = pod.securityContext ?? {};
  if (pod.hostNetwork || pod.hostPID || pod.hostIPC)
    problems.push(`${what}: uses a host namespace`);
  if (!isDeepStrictEqual(psc, { ...POD_SECURITY_CONTEXT }))
    problems.push(
      `${what}: pod securityContext differs from POD_SECURITY_CONTEXT (kubernetes-job.ts)`,
    );
  for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
    const sc = c.securityContext ?? {};
    const at = `${what} container ${c.name}`;
    if ((sc.runAsNonRoot ?? psc.runAsNonRoot) !== true)
      problems.push(`${at}: runAsNonRoot is not true`);
    const uid = sc.runAsUser ?? psc.runAsUser;
    if (uid !== 10001) problems.push(`${at}: runAsUser is ${uid}, not 10001`);
    if ((sc.runAsGroup ?? psc.runAsGroup) !== 10001)
      problems.push(`${at}: runAsGroup is not 10001`);
    if (sc.readOnlyRootFilesystem !== true)
      problems.push(`${at}: readOnlyRootFilesystem is not true`);
    if (sc.allowPrivilegeEscalation !== false)
      problems.push(`${at}: allowPrivilegeEscalation is not false`);
    if (sc.privileged) problems.push(`${at}: privileged`);
    if (!sc.capabilities?.drop?.includes('ALL') || sc.capabilities.add?.length)
      problems.push(`${at}: capabilities do not drop ALL (or add some)`);
    if ((sc.seccompProfile ?? psc.seccompProfile)?.type !== 'RuntimeDefault')
      problems.push(`${at}: seccompProfile is not RuntimeDefault`);
    if (!isDeepStrictEqual(sc, { ...CONTAINER_SECURITY_CONTEXT }))
      problems.push(
        `${at}: securityContext differs from CONTAINER_SECURITY_CONTEXT (kubernetes-job.ts)`,
      );
    const tmp = c.volumeMounts?.find((m) => m.mountPath === '/tmp');
    if (!pod.volumes?.some((v) => v.name === tmp?.name && v.emptyDir))
      problems.push(`${at}: no emptyDir at /tmp (the root filesystem is read-only)`);
    if (c.lifecycle?.preStop?.exec?.command?.some((arg) => /\bsleep\b/.test(arg)))
      problems.push(
        `${at}: preStop runs sleep (the app delays itself; the image may have no sleep)`,
      );
  }
  return problems;
}

/** 9. Security: the serving pods run non-root, read-only, without privileges or capabilities. */
export const checkSecurity: Check = (ctx) => {
  const problems: string[] = [];
  const s = serving(ctx, problems);
  if (s) problems.push(...podSecurity('Deployment', s.pod));
  // The training Job's pods: checkTrainingJob, through checkRunner.
  return problems;
};

/** 10. GPU: the gpu overlay asks for a GPU node, the cpu overlay nowhere does. */
export const checkGpu: Check = (ctx) => {
  const problems: string[] = [];
  const s = serving(ctx, problems);
  if (!s) return problems;
  const runner = exampleRunner(ctx);
  const job = renderTrainingJob(EXAMPLE_TRAINING_SPEC, runner).spec!.template.spec!;
  for (const [what, pod] of [
    ['Deployment', s.pod],
    ['training Job', job],
  ] as const) {
    const gpus = pod.containers.map((c) => c.resources?.limits?.['nvidia.com/gpu']);
    const selector = pod.nodeSelector?.['nvidia.com/gpu.present'];
    // Exists tolerates any taint value; no effect tolerates every effect.
    const toleration = pod.tolerations?.some(
      (t) =>
        t.key === 'nvidia.com/gpu' &&
        (t.effect ?? 'NoSchedule') === 'NoSchedule' &&
        (t.operator === 'Exists' || t.value !== undefined),
    );
    const mentions = JSON.stringify([pod.nodeSelector, pod.tolerations, pod.affinity]).includes(
      'nvidia.com',
    );
    if (ctx.overlay === 'gpu') {
      if (!gpus.some((g) => Number(g) >= 1)) problems.push(`${what}: no nvidia.com/gpu limit`);
      if (selector !== 'true')
        problems.push(`${what}: no nodeSelector nvidia.com/gpu.present: "true"`);
      if (!toleration) problems.push(`${what}: no toleration of nvidia.com/gpu NoSchedule`);
    } else {
      if (JSON.stringify(pod.containers.map((c) => c.resources)).includes('nvidia.com/gpu'))
        problems.push(`${what}: asks for nvidia.com/gpu in the cpu overlay`);
      if (mentions)
        problems.push(`${what}: GPU node selector, toleration or affinity in the cpu overlay`);
    }
  }
  return problems;
};

/** 11. Rollout and shutdown: no capacity lost in a rollout, the grace period covers the drain. */
export const checkRollout: Check = (ctx) => {
  const problems: string[] = [];
  const s = serving(ctx, problems);
  if (!s) return problems;
  const strategy = s.dep.spec?.strategy;
  if (strategy?.type !== 'RollingUpdate')
    problems.push('Deployment: strategy is not RollingUpdate');
  const { maxSurge, maxUnavailable } = strategy?.rollingUpdate ?? {};
  if (maxUnavailable !== 0 && maxUnavailable !== '0%')
    problems.push(`Deployment: rollingUpdate.maxUnavailable is ${maxUnavailable}, not 0`);
  if (maxSurge !== 1) problems.push(`Deployment: rollingUpdate.maxSurge is ${maxSurge}, not 1`);
  if ((s.dep.spec?.replicas ?? 1) < 2) problems.push('Deployment: fewer than 2 replicas');
  const config = appConfig(ctx, s, []);
  const grace = s.pod.terminationGracePeriodSeconds ?? 30;
  if (config && grace * 1000 <= config.shutdownDelayMs + config.shutdownTimeoutMs)
    problems.push(
      `terminationGracePeriodSeconds ${grace} is not above SHUTDOWN_DELAY_MS + SHUTDOWN_TIMEOUT_MS (${config.shutdownDelayMs} + ${config.shutdownTimeoutMs} ms)`,
    );
  if (config && config.shutdownDelayMs === 0)
    problems.push('SHUTDOWN_DELAY_MS is 0: endpoints would still send to a closed listener');
  return problems;
};

/** 12. Storage: the RWX models PVC at MODELS_DIR, writable, the same claim as the training Jobs. */
export const checkStorage: Check = (ctx) => {
  const problems: string[] = [];
  const s = serving(ctx, problems);
  if (!s) return problems;
  const config = appConfig(ctx, s, []);
  const mount = s.container.volumeMounts?.find((m) => m.mountPath === config?.modelsDir);
  const claim = s.pod.volumes?.find((v) => v.name === mount?.name)?.persistentVolumeClaim
    ?.claimName;
  if (!mount || !claim)
    problems.push(`Deployment: no PVC mounted at MODELS_DIR (${config?.modelsDir})`);
  else if (mount.readOnly)
    problems.push('Deployment: the models volume is read-only (heads are published)');
  const pvc = byKind<IPersistentVolumeClaim>(ctx, 'PersistentVolumeClaim').find(
    (p) => p.metadata?.name === claim,
  );
  if (claim && !pvc) problems.push(`PersistentVolumeClaim ${claim} is not in the build`);
  if (pvc && !pvc.spec?.accessModes?.includes('ReadWriteMany'))
    problems.push(`PersistentVolumeClaim ${claim}: not ReadWriteMany (replicas and Jobs share it)`);
  if (claim && exampleRunner(ctx).modelsClaimName !== claim)
    problems.push(`training runner: modelsClaimName is not ${claim}, the Deployment's`);
  return problems;
};

/**
 * Where the serving container's app reads the runner config: KUBERNETES_RUNNER_CONFIG, or the
 * app's default for it (loadConfig's own, from that one variable).
 */
function runnerConfigPath(ctx: ManifestContext): string {
  const dep = byKind<IDeployment>(ctx, 'Deployment')[0];
  const c = dep?.spec?.template.spec?.containers.find((x) =>
    x.ports?.some((p) => p.name === 'http'),
  );
  const value = c ? containerEnv(ctx, c, []).values.KUBERNETES_RUNNER_CONFIG : undefined;
  return loadConfig(value === undefined ? {} : { KUBERNETES_RUNNER_CONFIG: value }).jobs.kubernetes
    .runnerConfigPath;
}

/**
 * The runner config file as the serving container sees it: the key of a ConfigMap volume mounted
 * at the file's directory (the file name is the key, or an `items` path), undefined when no
 * mounted ConfigMap has it.
 */
function runnerConfigText(ctx: ManifestContext): string | undefined {
  const path = runnerConfigPath(ctx);
  const cms = byKind<IConfigMap>(ctx, 'ConfigMap');
  const dep = byKind<IDeployment>(ctx, 'Deployment')[0];
  const pod = dep?.spec?.template.spec;
  const c = pod?.containers.find((x) => x.ports?.some((p) => p.name === 'http'));
  for (const m of c?.volumeMounts ?? []) {
    const v = pod?.volumes?.find((x) => x.name === m.name);
    const cm = cms.find((x) => x.metadata?.name === v?.configMap?.name);
    if (!v?.configMap || !cm || m.subPath !== undefined || !path.startsWith(`${m.mountPath}/`))
      continue;
    const file = path.slice(m.mountPath.length + 1);
    const key = v.configMap.items
      ? v.configMap.items.find((i) => i.path === file)?.key
      : file.includes('/')
        ? undefined
        : file;
    const text = key === undefined ? undefined : cm.data?.[key];
    if (text !== undefined) return text;
  }
  return undefined;
}

/** The overlay's parsed runner config; throws (failing the check that asked) if it is bad. */
function exampleRunner(ctx: ManifestContext): RunnerConfig {
  const text = runnerConfigText(ctx);
  if (text === undefined)
    throw new Error(
      `no ConfigMap mounted in the serving container has KUBERNETES_RUNNER_CONFIG ${runnerConfigPath(ctx)}`,
    );
  return parseRunnerConfig(parseYaml(text));
}

/** 13. The runner config: parses, matches the Deployment, renders a Job that checks out. */
export const checkRunner: Check = (ctx) => {
  const problems: string[] = [];
  let runner: RunnerConfig;
  try {
    runner = exampleRunner(ctx);
  } catch (error) {
    return [`training runner config: ${(error as Error).message}`];
  }
  const s = serving(ctx, problems);
  if (!s) return problems;
  if (runner.image !== s.container.image)
    problems.push(
      `training runner: image ${runner.image} is not the Deployment's ${s.container.image}`,
    );
  if (runner.namespace !== s.dep.metadata?.namespace)
    problems.push(
      `training runner: namespace ${runner.namespace} is not the Deployment's ${s.dep.metadata?.namespace}`,
    );
  const account = byKind<IServiceAccount>(ctx, 'ServiceAccount').find(
    (a) => a.metadata?.name === runner.serviceAccountName,
  );
  if (!account)
    problems.push(
      `training runner: ServiceAccount ${runner.serviceAccountName} is not in the build`,
    );
  else if (account.automountServiceAccountToken !== false)
    problems.push(
      `ServiceAccount ${runner.serviceAccountName}: training pods must not get an API token`,
    );
  if (runner.serviceAccountName === s.pod.serviceAccountName)
    problems.push("training runner: Jobs would run with the API's ServiceAccount (and its Role)");
  problems.push(...checkTrainingJob(renderTrainingJob(EXAMPLE_TRAINING_SPEC, runner)));
  return problems;
};

/** 14. NetworkPolicy: ingress and egress both restricted, DNS and the API server reachable. */
export const checkNetworkPolicy: Check = (ctx) => {
  const problems: string[] = [];
  const np = only<INetworkPolicy>(ctx, 'NetworkPolicy', problems);
  if (!np?.spec) return problems;
  for (const t of ['Ingress', 'Egress'] as const)
    if (!np.spec.policyTypes?.includes(t)) problems.push(`NetworkPolicy: policyTypes lacks ${t}`);
  const egress = (np.spec.egress ?? []).flatMap((r) => r.ports ?? []);
  for (const protocol of ['UDP', 'TCP'])
    if (!egress.some((p) => p.port === 53 && (p.protocol ?? 'TCP') === protocol))
      problems.push(`NetworkPolicy: no egress to DNS (53/${protocol})`);
  if (!egress.some((p) => p.port === 443 || p.port === 6443))
    problems.push(
      'NetworkPolicy: no egress to the Kubernetes API (443/6443), which the job runner calls',
    );
  if ((np.spec.egress ?? []).some((r) => !r.ports?.length))
    problems.push('NetworkPolicy: an egress rule open on every port');
  return problems;
};

/**
 * 15. Training jobs: more than one replica (or an HPA that makes more) runs them with the
 * Kubernetes runner, never one local job controller per replica on the shared models volume; the
 * runner has what it needs in a pod (POD_NAME from the downward API for the Lease, the runner
 * config file, the API token: checkRunner and checkRbac), dataset paths the training pods can
 * see, and a training pod grace period that covers a checkpoint.
 */
export const checkJobs: Check = (ctx) => {
  const problems: string[] = [];
  const s = serving(ctx, problems);
  if (!s) return problems;
  const config = appConfig(ctx, s, []);
  if (!config) return ['the app config does not load (see the env check)'];
  const replicas = Math.max(
    s.dep.spec?.replicas ?? 1,
    ...byKind<IHorizontalPodAutoscaler>(ctx, 'HorizontalPodAutoscaler').map(
      (h) => h.spec?.maxReplicas ?? 1,
    ),
  );
  if (config.jobs.runner !== 'kubernetes') {
    if (replicas > 1)
      problems.push(
        `JOB_RUNNER is ${config.jobs.runner} with up to ${replicas} replicas: each would run its own job controller and trainers on the shared models volume (set JOB_RUNNER=kubernetes)`,
      );
    return problems;
  }
  const pod = s.container.env?.find((e) => e.name === 'POD_NAME');
  if (pod?.valueFrom?.fieldRef?.fieldPath !== 'metadata.name')
    problems.push(
      'POD_NAME: must come from the downward API (fieldRef metadata.name): each replica its own identity in the jobs Lease',
    );
  let runner: RunnerConfig;
  try {
    runner = exampleRunner(ctx);
  } catch (error) {
    return [...problems, `training runner config: ${(error as Error).message}`];
  }
  if (config.modelsDir !== MODELS_MOUNT)
    problems.push(
      `MODELS_DIR is ${config.modelsDir}, not ${MODELS_MOUNT} where training pods mount the models volume (job paths are passed as they are)`,
    );
  const rel = relative(config.modelsDir, config.jobs.dataRoot);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel))
    problems.push(
      `DATA_ROOT ${config.jobs.dataRoot} is not inside MODELS_DIR ${config.modelsDir}: training pods mount only the models volume, so they could not read the datasets`,
    );
  const grace = renderTrainingJob(EXAMPLE_TRAINING_SPEC, runner).spec?.template.spec
    ?.terminationGracePeriodSeconds;
  const need = Math.ceil(config.jobs.stopGraceMs / 1000);
  if (grace === undefined || grace < need)
    problems.push(
      `training Job: terminationGracePeriodSeconds ${grace ?? '30 (default)'} is below JOB_STOP_GRACE_MS (${need} s), the time a trainer gets to checkpoint after SIGTERM`,
    );
  return problems;
};

/** A rendered training Job: schema-valid and with what the runner relies on. */
export function checkTrainingJob(job: IJob): string[] {
  const problems = validateStrict(job).problems;
  const spec = job.spec;
  const pod = spec?.template.spec;
  if (!spec || !pod) return [...problems, 'Job: no pod template'];
  const train = pod.containers.find((c) => c.name === TRAIN_CONTAINER);
  if (!train) problems.push(`Job: no container ${TRAIN_CONTAINER}`);
  if (!isDeepStrictEqual(train?.command, [...CLI_COMMAND]))
    problems.push(`Job: command is not ${CLI_COMMAND.join(' ')}`);
  if (pod.restartPolicy !== 'Never')
    problems.push('Job: restartPolicy is not Never (podFailurePolicy needs it)');
  if (pod.automountServiceAccountToken !== false) problems.push('Job: mounts an API token');
  const rules = spec.podFailurePolicy?.rules ?? [];
  if (
    !rules.some(
      (r) =>
        r.action === 'FailJob' &&
        r.onExitCodes?.containerName === TRAIN_CONTAINER &&
        r.onExitCodes.operator === 'In' &&
        r.onExitCodes.values.includes(BAD_INPUT_EXIT_CODE),
    )
  )
    problems.push(
      `Job: podFailurePolicy does not fail the Job on exit code ${BAD_INPUT_EXIT_CODE}`,
    );
  if (
    !rules.some(
      (r) => r.action === 'Ignore' && r.onPodConditions?.some((c) => c.type === 'DisruptionTarget'),
    )
  )
    problems.push('Job: podFailurePolicy does not ignore DisruptionTarget');
  if (spec.activeDeadlineSeconds === undefined) problems.push('Job: no activeDeadlineSeconds');
  if (pod.terminationGracePeriodSeconds === undefined)
    problems.push(
      'Job: no terminationGracePeriodSeconds (the default 30 s may cut a checkpoint short)',
    );
  if (spec.ttlSecondsAfterFinished === undefined) problems.push('Job: no ttlSecondsAfterFinished');
  if ((spec.backoffLimit ?? 6) > 3)
    problems.push('Job: backoffLimit above 3 (hours of GPU time each)');
  const models = train?.volumeMounts?.find((m) => m.mountPath === '/models');
  if (!pod.volumes?.some((v) => v.name === models?.name && v.persistentVolumeClaim))
    problems.push('Job: the models PVC is not mounted at /models');
  if (!train?.env?.some((e) => e.name === 'MODELS_DIR' && e.value === '/models'))
    problems.push('Job: MODELS_DIR is not /models');
  const labels = job.metadata?.labels ?? {};
  for (const key of [
    'app.kubernetes.io/name',
    'app.kubernetes.io/component',
    'gim.dev/job-id',
    'gim.dev/model',
  ])
    if (!labels[key] || spec.template.metadata?.labels?.[key] !== labels[key])
      problems.push(`Job: label ${key} missing on the Job or its pods`);
  problems.push(...podSecurity('Job', pod));
  return problems;
}

export const CHECKS: Readonly<Record<string, Check>> = Object.freeze({
  schemas: checkSchemas,
  selectors: checkSelectors,
  ports: checkPorts,
  probes: checkProbes,
  env: checkEnv,
  hpa: checkHpa,
  pdb: checkPdb,
  rbac: checkRbac,
  security: checkSecurity,
  gpu: checkGpu,
  rollout: checkRollout,
  storage: checkStorage,
  runner: checkRunner,
  networkPolicy: checkNetworkPolicy,
  jobs: checkJobs,
});

/** Every check's problems, each prefixed with the check's name. */
export function runChecks(ctx: ManifestContext): string[] {
  return Object.entries(CHECKS).flatMap(([name, check]) => {
    try {
      return check(ctx).map((p) => `${name}: ${p}`);
    } catch (error) {
      return [`${name}: ${(error as Error).message}`];
    }
  });
}
