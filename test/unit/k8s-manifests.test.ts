/**
 * Offline checks of k8s/ (kustomize base + overlays gpu and cpu): every rendered object validates
 * strictly against the Kubernetes schemas, and the manifests agree with the app (routes, settings,
 * metrics, RBAC of the job runner, the training Job template). Each check is shown to fail on a
 * purpose-made mistake. Renders with kubectl when it is on PATH, else with the builtin renderer
 * (test/helpers/k8s-render.ts), which a test checks renders exactly as kubectl does.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Deployment } from 'kubernetes-models/apps/v1';
import request from 'supertest';
import { parse as parseYaml, stringify } from 'yaml';
import {
  JobTemplateError,
  KUBERNETES_RUNNER_API_CALLS,
  type RunnerConfig,
  parseRunnerConfig,
  renderTrainingJob,
} from '../../src/app/jobs/kubernetes-job.js';
import { type TestApp, bootApp } from '../e2e/serve-fixtures.js';
import {
  type AppFacts,
  EXAMPLE_TRAINING_SPEC,
  type ManifestContext,
  checkTrainingJob,
  runChecks,
} from '../helpers/k8s-checks.js';
import {
  type K8sObject,
  kubectlMissing,
  parseYamlDocuments,
  renderBuiltin,
  renderKubectl,
} from '../helpers/k8s-render.js';
import { validateStrict } from '../helpers/k8s-schema.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const K8S = join(ROOT, 'k8s');
const OVERLAYS = ['gpu', 'cpu'] as const;
type Overlay = (typeof OVERLAYS)[number];
const GOLDEN = join(K8S, 'base/training-job.example.yaml');
const NOT_RESOURCES = [
  'admin-token.secret.example.yaml',
  'prometheus-adapter-rules.yaml',
  'training-job.example.yaml',
  'training-runner.yaml',
];

const KUBECTL_MISSING = kubectlMissing();
const DIRS = ['base', 'overlays/gpu', 'overlays/cpu'] as const;
const readYaml = (path: string): unknown => parseYaml(readFileSync(path, 'utf8'));

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? yamlFiles(join(dir, e.name))
      : e.name.endsWith('.yaml')
        ? [join(dir, e.name)]
        : [],
  );
}

const baseRunner = (): RunnerConfig =>
  parseRunnerConfig(readYaml(join(K8S, 'base/training-runner.yaml')));

/** Finds the one object of `kind` (and name prefix) in a rendering; asserts it is there. */
function find<T = Record<string, unknown>>(objects: K8sObject[], kind: string, name = ''): T {
  const found = objects.find((o) => o.kind === kind && o.metadata.name.startsWith(name));
  assert.ok(found, `no ${kind} ${name}`);
  return found as unknown as T;
}

// Loose accessors for mutations (the objects are YAML, typed only where checked).
/* eslint-disable @typescript-eslint/no-explicit-any */
type Loose = any;
const container = (objects: K8sObject[]): Loose =>
  find<Loose>(objects, 'Deployment').spec.template.spec.containers[0];
const podSpecOf = (objects: K8sObject[]): Loose =>
  find<Loose>(objects, 'Deployment').spec.template.spec;
/* eslint-enable @typescript-eslint/no-explicit-any */

describe('k8s manifests', () => {
  let dir = '';
  let t: TestApp | undefined;
  let app: AppFacts;
  let adapterRules: unknown;
  const rendered = new Map<Overlay, K8sObject[]>();
  const builtin = new Map<string, K8sObject[]>();
  const kubectl = new Map<string, K8sObject[]>();

  const ctx = (
    overlay: Overlay,
    objects = structuredClone(rendered.get(overlay)!),
  ): ManifestContext => ({
    overlay,
    objects,
    app,
    adapterRules: structuredClone(adapterRules),
  });

  before(async () => {
    // The app as main.ts boots it, with no stacks: its routes and the metric families of /metrics.
    dir = await mkdtemp(join(tmpdir(), 'gim-k8s-'));
    t = await bootApp({ MODELS_DIR: dir, GIM_BACKEND: 'cpu', PRELOAD: 'none' });
    const metrics = await request(t.server).get('/metrics');
    assert.equal(metrics.status, 200);
    const metricTypes = new Map<string, string>();
    for (const m of metrics.text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) metricTypes.set(m[1]!, m[2]!);
    app = { routes: new Set(t.routes), metricTypes };
    adapterRules = readYaml(join(K8S, 'base/prometheus-adapter-rules.yaml'));
    for (const d of DIRS) {
      builtin.set(d, renderBuiltin(join(K8S, d)));
      if (!KUBECTL_MISSING) kubectl.set(d, renderKubectl(join(K8S, d)));
    }
    // kubectl's rendering when there is one (the test below shows the builtin one is the same).
    for (const overlay of OVERLAYS) {
      const d = `overlays/${overlay}`;
      rendered.set(overlay, kubectl.get(d) ?? builtin.get(d)!);
    }
  });

  after(async () => {
    await t?.app.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the app facts the checks use come from the app itself', () => {
    for (const route of ['get /health/ready', 'get /health/live', 'get /metrics'])
      assert.ok(app.routes.has(route), `${route} in ${[...app.routes].join(', ')}`);
    assert.equal(app.metricTypes.get('gim_queue_depth'), 'gauge');
    assert.equal(app.metricTypes.get('gim_requests_total'), 'counter');
  });

  describe('strict schema validation', () => {
    const deployment = () => ({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'd', labels: { anything: 'goes' } },
      spec: {
        selector: { matchLabels: { a: 'b' } },
        template: {
          metadata: { labels: { a: 'b' } },
          spec: { containers: [{ name: 'c', image: 'i', bogus: 1 }] },
        },
      },
    });

    test('kubernetes-models alone accepts unknown fields; validateStrict rejects them', () => {
      assert.doesNotThrow(() => new Deployment(deployment() as never).validate());
      assert.deepEqual(validateStrict(deployment()).problems, [
        'Deployment d: /spec/template/spec/containers/0/bogus unknown field',
      ]);
    });

    test('maps stay open, types and required fields still count, patches may be partial', () => {
      const ok = deployment();
      delete (ok.spec.template.spec.containers[0] as { bogus?: number }).bogus;
      assert.deepEqual(validateStrict(ok), { problems: [], unchecked: [] });
      const typed = structuredClone(ok) as unknown as Record<string, Record<string, unknown>>;
      typed.spec!.replicas = 'two';
      delete typed.spec!.selector;
      assert.deepEqual(validateStrict(typed).problems, [
        'Deployment d: /spec must have required property selector',
        'Deployment d: /spec/replicas must be integer',
      ]);
      assert.deepEqual(validateStrict(typed, { partial: true }).problems, [
        'Deployment d: /spec/replicas must be integer',
      ]);
    });

    test('a CRD (ServiceMonitor) and unknown kinds', () => {
      const sm = structuredClone(find(rendered.get('gpu')!, 'ServiceMonitor')) as Record<
        string,
        never
      >;
      (sm.spec as unknown as { endpoints: Record<string, string>[] }).endpoints[0]!.intervall =
        '30s';
      assert.deepEqual(validateStrict(sm).problems, [
        'ServiceMonitor gim-serve: /spec/endpoints/0/intervall unknown field',
      ]);
      assert.match(
        validateStrict({ apiVersion: 'v1', kind: 'Pdo', metadata: { name: 'x' } }).problems[0]!,
        /no schema for apiVersion v1 kind Pdo/,
      );
    });
  });

  test('every YAML document under k8s/ parses and validates strictly (no renderer needed)', () => {
    const patches = new Set<string>();
    for (const file of yamlFiles(K8S).filter((f) => f.endsWith('kustomization.yaml'))) {
      const k = readYaml(file) as { patches?: { path: string }[] };
      for (const p of k.patches ?? []) patches.add(join(file, '..', p.path));
    }
    const problems: string[] = [];
    let checked = 0;
    for (const file of yamlFiles(K8S)) {
      const name = relative(K8S, file);
      for (const doc of parseYamlDocuments(readFileSync(file, 'utf8'), name)) {
        const kind = (doc as { kind?: string }).kind;
        if (kind === undefined || kind === 'Kustomization') continue;
        checked++;
        const report = validateStrict(doc, { partial: patches.has(file) });
        problems.push(...[...report.problems, ...report.unchecked].map((p) => `${name}: ${p}`));
      }
    }
    assert.deepEqual(problems, []);
    assert.ok(checked >= 15, `${checked} documents`);
  });

  test(
    'kubectl kustomize renders base and overlays exactly as the builtin renderer',
    { skip: KUBECTL_MISSING && `${KUBECTL_MISSING}: the checks use the builtin renderer` },
    () => {
      const byKey = (objects: K8sObject[]) =>
        new Map(objects.map((o) => [`${o.kind}/${o.metadata.name}`, o]));
      for (const d of DIRS) assert.deepEqual(byKey(builtin.get(d)!), byKey(kubectl.get(d)!), d);
    },
  );

  for (const overlay of OVERLAYS) {
    test(`overlay ${overlay}: every check passes`, () => {
      const objects = rendered.get(overlay)!;
      assert.deepEqual(objects.map((o) => o.kind).sort(), [
        'ConfigMap',
        'ConfigMap',
        'Deployment',
        'HorizontalPodAutoscaler',
        'NetworkPolicy',
        'PersistentVolumeClaim',
        'PodDisruptionBudget',
        'Role',
        'RoleBinding',
        'Service',
        'ServiceAccount',
        'ServiceAccount',
        'ServiceMonitor',
      ]);
      assert.deepEqual(runChecks(ctx(overlay)), []);
    });
  }

  test('files that must not be applied are not kustomize resources; no secret value is committed', () => {
    const base = readYaml(join(K8S, 'base/kustomization.yaml')) as { resources: string[] };
    for (const file of NOT_RESOURCES) assert.ok(!base.resources.includes(file), file);
    const secret = readYaml(join(K8S, 'base/admin-token.secret.example.yaml')) as {
      kind: string;
      stringData?: Record<string, string>;
      data?: Record<string, string>;
    };
    assert.equal(secret.kind, 'Secret');
    assert.equal(secret.data, undefined);
    assert.deepEqual(Object.values(secret.stringData ?? {}), ['']);
    for (const overlay of OVERLAYS)
      assert.ok(
        !rendered.get(overlay)!.some((o) => o.kind === 'Secret' || o.kind === 'Job'),
        overlay,
      );
  });

  test('the golden training Job is what renderTrainingJob renders from base/training-runner.yaml', async () => {
    const job = renderTrainingJob(EXAMPLE_TRAINING_SPEC, baseRunner());
    if (process.env.GIM_UPDATE_GOLDEN === '1') {
      const { format, resolveConfig } = await import('prettier');
      const header = readFileSync(GOLDEN, 'utf8').match(/^(#.*\n)+/)?.[0] ?? '';
      const text = await format(header + stringify(job), {
        ...(await resolveConfig(GOLDEN)),
        filepath: GOLDEN,
      });
      writeFileSync(GOLDEN, text);
    }
    assert.deepEqual(
      readYaml(GOLDEN),
      job,
      'k8s/base/training-job.example.yaml is stale: GIM_UPDATE_GOLDEN=1 node --import @swc-node/register/esm-register --test test/unit/k8s-manifests.test.ts',
    );
    assert.deepEqual(checkTrainingJob(job), []);
  });

  describe('each check fails on a purpose-made mistake', () => {
    interface Mistake {
      what: string;
      overlay?: Overlay;
      mutate(objects: K8sObject[], c: ManifestContext): void;
      expect: string;
    }
    /* eslint-disable @typescript-eslint/no-explicit-any */
    const MISTAKES: Mistake[] = [
      {
        what: 'a wrong probe path',
        mutate: (o) => (container(o).readinessProbe.httpGet.path = '/healthz'),
        expect: 'probes: readinessProbe: GET /healthz is not a route the app serves',
      },
      {
        what: 'liveness on the readiness path',
        mutate: (o) => (container(o).livenessProbe.httpGet.path = '/health/ready'),
        expect: 'probes: livenessProbe: on the readiness path',
      },
      {
        what: 'a start-up budget too short for the first CUDA start',
        mutate: (o) => (container(o).startupProbe.failureThreshold = 6),
        expect: 'probes: startupProbe: 60 s before liveness counts, less than the 600 s',
      },
      {
        what: 'a misspelled setting in the ConfigMap',
        mutate: (o) => (find<any>(o, 'ConfigMap', 'gim-serve-config').data.MAX_BATCH_SIZ = '32'),
        expect: 'env: env MAX_BATCH_SIZ (ConfigMap gim-serve-config-',
      },
      {
        what: 'a misspelled runtime name in env',
        mutate: (o) => (container(o).env[0].name = 'TF_FORCE_GPU_ALLOW_GROWHT'),
        expect: 'env: env TF_FORCE_GPU_ALLOW_GROWHT (env) is neither an app setting',
      },
      {
        what: 'a value loadConfig refuses',
        mutate: (o) => (find<any>(o, 'ConfigMap', 'gim-serve-config').data.MAX_BATCH_SIZE = '0'),
        expect:
          'env: loadConfig rejects the ConfigMap: MAX_BATCH_SIZE: expected an integer from 1 to 1024, got "0"',
      },
      {
        what: 'ADMIN_TOKEN as a literal value',
        mutate: (o) => {
          const env = container(o).env.find((e: any) => e.name === 'ADMIN_TOKEN');
          delete env.valueFrom;
          env.value = 'not-a-secret-at-all';
        },
        expect: 'env: ADMIN_TOKEN: must come only from a secretKeyRef with optional: true',
      },
      {
        what: 'an unknown field (a misspelled probe)',
        mutate: (o) => (container(o).readinessprobe = { httpGet: { path: '/health/ready' } }),
        expect:
          'schemas: Deployment gim-serve: /spec/template/spec/containers/0/readinessprobe unknown field',
      },
      {
        what: 'an unknown kind',
        mutate: (o) => o.push({ apiVersion: 'v1', kind: 'Sevrice', metadata: { name: 'x' } }),
        expect: 'schemas: Sevrice x: no schema for apiVersion v1 kind Sevrice',
      },
      {
        what: 'a pod template label the Deployment selector does not match',
        mutate: (o) => (podLabels(o)['app.kubernetes.io/component'] = 'api'),
        expect: 'selectors: Deployment gim-serve: selector does not match its pod template labels',
      },
      {
        what: 'a Service selector that misses the pods',
        mutate: (o) =>
          (find<any>(o, 'Service').spec.selector['app.kubernetes.io/component'] = 'web'),
        expect: 'selectors: Service gim-serve selector does not select the serving pods',
      },
      {
        what: 'a Service selector that also takes training pods',
        mutate: (o) => delete find<any>(o, 'Service').spec.selector['app.kubernetes.io/component'],
        expect: 'selectors: Service gim-serve selector selects training Job pods',
      },
      {
        what: 'a PDB selector that misses the pods',
        mutate: (o) =>
          (find<any>(o, 'PodDisruptionBudget').spec.selector.matchLabels['app.kubernetes.io/name'] =
            'gim'),
        expect:
          'selectors: PodDisruptionBudget gim-serve selector does not select the serving pods',
      },
      {
        what: 'a NetworkPolicy for other pods',
        mutate: (o) => (find<any>(o, 'NetworkPolicy').spec.podSelector.matchLabels = { app: 'x' }),
        expect: 'selectors: NetworkPolicy gim-serve podSelector does not select the serving pods',
      },
      {
        what: 'an HPA aimed elsewhere',
        mutate: (o) => (find<any>(o, 'HorizontalPodAutoscaler').spec.scaleTargetRef.name = 'gim'),
        expect: 'selectors: HorizontalPodAutoscaler gim-serve: scaleTargetRef Deployment/gim',
      },
      {
        what: 'a Service targetPort that is no container port',
        mutate: (o) => (find<any>(o, 'Service').spec.ports[0].targetPort = 'web'),
        expect: 'ports: Service gim-serve port http: targetPort web is no container port',
      },
      {
        what: 'a container port that is not PORT',
        mutate: (o) => (container(o).ports[0].containerPort = 8081),
        expect: 'ports: container port http is 8081, but the app listens on PORT 8080',
      },
      {
        what: 'a PORT that is not the container port',
        mutate: (o) => (find<any>(o, 'ConfigMap', 'gim-serve-config').data.PORT = '9000'),
        expect: 'ports: container port http is 8080, but the app listens on PORT 9000',
      },
      {
        what: 'a ServiceMonitor on a port name the Service lacks',
        mutate: (o) => (find<any>(o, 'ServiceMonitor').spec.endpoints[0].port = 'metrics'),
        expect: 'ports: ServiceMonitor gim-serve: port metrics is no Service port name',
      },
      {
        what: 'a NetworkPolicy open on every port',
        mutate: (o) => delete find<any>(o, 'NetworkPolicy').spec.ingress[0].ports,
        expect: 'ports: NetworkPolicy ingress[0]: open on every port',
      },
      {
        what: 'an HPA metric no adapter rule serves',
        mutate: (o) =>
          (find<any>(o, 'HorizontalPodAutoscaler').spec.metrics[0].pods.metric.name =
            'gim_queue_wait_seconds'),
        expect: 'hpa: HPA metric gim_queue_wait_seconds: no prometheus-adapter rule serves it',
      },
      {
        what: 'an HPA metric whose series /metrics does not expose',
        mutate: (_, c: any) =>
          (c.adapterRules.rules[0].seriesQuery = 'gim_queue_length{namespace!="",pod!=""}'),
        expect:
          'hpa: HPA metric gim_queue_depth: series gim_queue_length is not exposed by /metrics',
      },
      {
        what: 'a counter served without rate()',
        mutate: (_, c: any) =>
          (c.adapterRules.rules[0].seriesQuery = 'gim_items_total{namespace!="",pod!=""}'),
        expect:
          'hpa: HPA metric gim_queue_depth: gim_items_total is a counter; the adapter must rate() it',
      },
      {
        what: 'no CPU fallback and a fast scale-down',
        mutate: (o) => {
          const spec = find<any>(o, 'HorizontalPodAutoscaler').spec;
          spec.metrics = spec.metrics.slice(0, 1);
          spec.behavior.scaleDown = { stabilizationWindowSeconds: 60, policies: [] };
        },
        expect: 'hpa: HPA: no CPU utilization fallback',
      },
      {
        what: 'a PDB that blocks drains',
        mutate: (o) => delete find<any>(o, 'PodDisruptionBudget').spec.unhealthyPodEvictionPolicy,
        expect: 'pdb: PodDisruptionBudget: unhealthyPodEvictionPolicy is not AlwaysAllow',
      },
      {
        what: 'an RBAC verb too many',
        mutate: (o) => find<any>(o, 'Role').rules[1].verbs.push('watch'),
        expect:
          'rbac: Role grants watch on core pods, which the runner does not call (KUBERNETES_RUNNER_API_CALLS)',
      },
      {
        what: 'an RBAC verb too few',
        mutate: (o) => (find<any>(o, 'Role').rules[0].verbs = ['create', 'get', 'list', 'delete']),
        expect: 'rbac: Role does not grant watch on batch jobs, which the runner calls',
      },
      {
        what: 'a RoleBinding to another ServiceAccount',
        mutate: (o) => (find<any>(o, 'RoleBinding').subjects[0].name = 'default'),
        expect: "rbac: RoleBinding: does not bind the Deployment's ServiceAccount gim-serve in gim",
      },
      {
        what: 'a container running as root',
        mutate: (o) => (container(o).securityContext.runAsNonRoot = false),
        expect: 'security: Deployment container gim-serve: runAsNonRoot is not true',
      },
      {
        what: 'a writable root filesystem',
        mutate: (o) => (container(o).securityContext.readOnlyRootFilesystem = false),
        expect: 'security: Deployment container gim-serve: readOnlyRootFilesystem is not true',
      },
      {
        what: 'capabilities kept and privilege escalation allowed',
        mutate: (o) => {
          container(o).securityContext.capabilities = { drop: ['NET_RAW'] };
          container(o).securityContext.allowPrivilegeEscalation = true;
        },
        expect: 'security: Deployment container gim-serve: capabilities do not drop ALL',
      },
      {
        what: 'no seccomp profile',
        mutate: (o) => {
          delete container(o).securityContext.seccompProfile;
          delete podSpecOf(o).securityContext.seccompProfile;
        },
        expect: 'security: Deployment container gim-serve: seccompProfile is not RuntimeDefault',
      },
      {
        what: 'no writable /tmp',
        mutate: (o) => {
          podSpecOf(o).volumes = podSpecOf(o).volumes.filter((v: any) => v.name !== 'tmp');
          container(o).volumeMounts = container(o).volumeMounts.filter(
            (m: any) => m.name !== 'tmp',
          );
        },
        expect: 'security: Deployment container gim-serve: no emptyDir at /tmp',
      },
      {
        what: 'a preStop sleep',
        mutate: (o) =>
          (container(o).lifecycle = { preStop: { exec: { command: ['sleep', '10'] } } }),
        expect: 'security: Deployment container gim-serve: preStop runs sleep',
      },
      {
        what: 'a GPU overlay without the toleration',
        mutate: (o) => delete podSpecOf(o).tolerations,
        expect: 'gpu: Deployment: no toleration of nvidia.com/gpu NoSchedule',
      },
      {
        what: 'a GPU overlay without the GPU limit',
        mutate: (o) => delete container(o).resources.limits['nvidia.com/gpu'],
        expect: 'gpu: Deployment: no nvidia.com/gpu limit',
      },
      {
        what: 'a GPU limit in the cpu overlay',
        overlay: 'cpu',
        mutate: (o) => (container(o).resources.limits['nvidia.com/gpu'] = 1),
        expect: 'gpu: Deployment: asks for nvidia.com/gpu in the cpu overlay',
      },
      {
        what: 'a GPU node selector in the cpu overlay',
        overlay: 'cpu',
        mutate: (o) => (podSpecOf(o).nodeSelector = { 'nvidia.com/gpu.present': 'true' }),
        expect: 'gpu: Deployment: GPU node selector, toleration or affinity in the cpu overlay',
      },
      {
        what: 'a rollout that drops a pod first',
        mutate: (o) => (find<any>(o, 'Deployment').spec.strategy.rollingUpdate.maxUnavailable = 1),
        expect: 'rollout: Deployment: rollingUpdate.maxUnavailable is 1, not 0',
      },
      {
        what: 'a grace period shorter than the drain',
        mutate: (o) => (podSpecOf(o).terminationGracePeriodSeconds = 25),
        expect:
          'rollout: terminationGracePeriodSeconds 25 is not above SHUTDOWN_DELAY_MS + SHUTDOWN_TIMEOUT_MS (5000 + 20000 ms)',
      },
      {
        what: 'a drain longer than the grace period',
        mutate: (o) =>
          (find<any>(o, 'ConfigMap', 'gim-serve-config').data.SHUTDOWN_TIMEOUT_MS = '45000'),
        expect: 'rollout: terminationGracePeriodSeconds 45 is not above',
      },
      {
        what: 'a ReadWriteOnce models volume',
        mutate: (o) => (find<any>(o, 'PersistentVolumeClaim').spec.accessModes = ['ReadWriteOnce']),
        expect: 'storage: PersistentVolumeClaim gim-models: not ReadWriteMany',
      },
      {
        what: 'models mounted somewhere else than MODELS_DIR',
        mutate: (o) => (find<any>(o, 'ConfigMap', 'gim-serve-config').data.MODELS_DIR = '/data'),
        expect: 'storage: Deployment: no PVC mounted at MODELS_DIR (/data)',
      },
      {
        what: 'a Deployment image the runner config does not follow',
        mutate: (o) => (container(o).image = 'registry.example.com/gim-serve@sha256:0123'),
        expect:
          "runner: training runner: image gim-serve:gpu is not the Deployment's registry.example.com/gim-serve@sha256:0123",
      },
      {
        what: 'a training ServiceAccount with a token',
        mutate: (o) =>
          (o.find(
            (x) => x.kind === 'ServiceAccount' && x.metadata.name === 'gim-train',
          )!.automountServiceAccountToken = true),
        expect: 'runner: ServiceAccount gim-train: training pods must not get an API token',
      },
      {
        what: 'a runner config that does not parse',
        mutate: (o) =>
          (find<any>(o, 'ConfigMap', 'gim-training-runner').data['training-runner.yaml'] +=
            'gpus: 1\n'),
        expect:
          'runner: training runner config: invalid training runner config:\n  gpus: unknown field',
      },
      {
        what: 'the local job runner with several replicas',
        mutate: (o) => delete find<any>(o, 'ConfigMap', 'gim-serve-config').data.JOB_RUNNER,
        expect:
          'jobs: JOB_RUNNER is local with up to 8 replicas: each would run its own job controller',
      },
      {
        what: 'the local job runner with several replicas',
        overlay: 'cpu',
        mutate: (o) => (find<any>(o, 'ConfigMap', 'gim-serve-config').data.JOB_RUNNER = 'local'),
        expect:
          'jobs: JOB_RUNNER is local with up to 8 replicas: each would run its own job controller',
      },
      {
        what: 'no POD_NAME',
        mutate: (o) =>
          (container(o).env = container(o).env.filter((e: any) => e.name !== 'POD_NAME')),
        expect:
          'env: loadConfig rejects the ConfigMap: POD_NAME: required with JOB_RUNNER=kubernetes',
      },
      {
        what: 'POD_NAME as a literal value (every replica the same Lease identity)',
        mutate: (o) => {
          const env = container(o).env.find((e: any) => e.name === 'POD_NAME');
          delete env.valueFrom;
          env.value = 'gim-serve';
        },
        expect: 'jobs: POD_NAME: must come from the downward API (fieldRef metadata.name)',
      },
      {
        what: 'POD_NAME from another field',
        mutate: (o) =>
          (container(o).env.find((e: any) => e.name === 'POD_NAME').valueFrom.fieldRef.fieldPath =
            'spec.nodeName'),
        expect: 'jobs: POD_NAME: must come from the downward API (fieldRef metadata.name)',
      },
      {
        what: 'the runner config ConfigMap not mounted',
        mutate: (o) =>
          (container(o).volumeMounts = container(o).volumeMounts.filter(
            (m: any) => m.name !== 'training-runner',
          )),
        expect:
          'runner: training runner config: no ConfigMap mounted in the serving container has KUBERNETES_RUNNER_CONFIG /etc/gim/training-runner.yaml',
      },
      {
        what: 'KUBERNETES_RUNNER_CONFIG naming a file the ConfigMap lacks',
        mutate: (o) =>
          (find<any>(o, 'ConfigMap', 'gim-serve-config').data.KUBERNETES_RUNNER_CONFIG =
            '/etc/gim/runner.yaml'),
        expect:
          'jobs: training runner config: no ConfigMap mounted in the serving container has KUBERNETES_RUNNER_CONFIG /etc/gim/runner.yaml',
      },
      {
        what: 'no API token for the job runner',
        mutate: (o) =>
          (o.find(
            (x) => x.kind === 'ServiceAccount' && x.metadata.name === 'gim-serve',
          )!.automountServiceAccountToken = false),
        expect: 'rbac: ServiceAccount gim-serve: the job runner needs its token mounted',
      },
      {
        what: 'no right to the Lease',
        mutate: (o) =>
          (find<any>(o, 'Role').rules = find<any>(o, 'Role').rules.filter(
            (r: any) => !r.apiGroups.includes('coordination.k8s.io'),
          )),
        expect: 'rbac: Role does not grant get on coordination.k8s.io leases',
      },
      {
        what: 'no right to create Jobs',
        mutate: (o) => (find<any>(o, 'Role').rules[0].verbs = ['get', 'list', 'watch', 'delete']),
        expect: 'rbac: Role does not grant create on batch jobs',
      },
      {
        what: 'no RoleBinding',
        mutate: (o) => o.splice(o.indexOf(find(o, 'RoleBinding')), 1),
        expect: 'rbac: expected one RoleBinding, found 0',
      },
      {
        what: 'a training pod grace period too short for a checkpoint',
        mutate: (o) => {
          const cm = find<any>(o, 'ConfigMap', 'gim-training-runner');
          cm.data['training-runner.yaml'] = cm.data['training-runner.yaml'].replace(
            /terminationGracePeriodSeconds: \d+/,
            'terminationGracePeriodSeconds: 30',
          );
        },
        expect:
          'jobs: training Job: terminationGracePeriodSeconds 30 is below JOB_STOP_GRACE_MS (60 s)',
      },
      {
        what: 'a checkpoint budget above the training pod grace period',
        overlay: 'cpu',
        mutate: (o) =>
          (find<any>(o, 'ConfigMap', 'gim-serve-config').data.JOB_STOP_GRACE_MS = '300000'),
        expect:
          'jobs: training Job: terminationGracePeriodSeconds 120 is below JOB_STOP_GRACE_MS (300 s)',
      },
      {
        what: 'datasets outside the models volume',
        mutate: (o) => (find<any>(o, 'ConfigMap', 'gim-serve-config').data.DATA_ROOT = '/data'),
        expect: 'jobs: DATA_ROOT /data is not inside MODELS_DIR /models',
      },
      {
        what: 'a NetworkPolicy without DNS',
        mutate: (o) => find<any>(o, 'NetworkPolicy').spec.egress.shift(),
        expect: 'networkPolicy: NetworkPolicy: no egress to DNS (53/UDP)',
      },
    ];
    /* eslint-enable @typescript-eslint/no-explicit-any */

    function podLabels(objects: K8sObject[]): Record<string, string> {
      return find<{ spec: { template: { metadata: { labels: Record<string, string> } } } }>(
        objects,
        'Deployment',
      ).spec.template.metadata.labels;
    }

    for (const m of MISTAKES) {
      test(`${m.what} (${m.overlay ?? 'gpu'})`, () => {
        const c = ctx(m.overlay ?? 'gpu');
        m.mutate(c.objects, c);
        const problems = runChecks(c);
        assert.ok(
          problems.some((p) => p.startsWith(m.expect)),
          `expected a problem starting with:\n  ${m.expect}\ngot:\n  ${problems.join('\n  ')}`,
        );
      });
    }
  });
});

describe('kubernetes-job: parseRunnerConfig', () => {
  const good = () => readYaml(join(K8S, 'base/training-runner.yaml')) as Record<string, unknown>;
  const problems = (obj: unknown): readonly string[] => {
    try {
      parseRunnerConfig(obj);
    } catch (error) {
      assert.ok(error instanceof JobTemplateError, String(error));
      assert.match(error.message, /^invalid training runner config:\n {2}/);
      return error.problems;
    }
    return [];
  };

  test('fills in defaults and freezes', () => {
    const config = parseRunnerConfig({
      namespace: 'ml',
      image: 'gim:1',
      modelsClaimName: 'models',
    });
    assert.deepEqual(config, {
      namespace: 'ml',
      image: 'gim:1',
      serviceAccountName: 'gim-train',
      modelsClaimName: 'models',
      gpu: 0,
      resources: {},
      nodeSelector: {},
      tolerations: [],
      ttlSecondsAfterFinished: 3600,
      backoffLimit: 1,
      terminationGracePeriodSeconds: 120,
    });
    assert.ok(Object.isFrozen(config));
    assert.equal(baseRunner().gpu, 1);
  });

  test('names every bad or unknown field', () => {
    assert.deepEqual(problems('gpu: 1'), ['expected a mapping, got "gpu: 1"']);
    assert.deepEqual(problems({}), [
      'namespace: required (a namespace name (DNS label))',
      'image: required (an image reference without spaces)',
      'modelsClaimName: required (a PersistentVolumeClaim name)',
    ]);
    const cases: [Record<string, unknown>, string][] = [
      [{ gpus: 1 }, 'gpus: unknown field (expected one of namespace, image,'],
      [{ namespace: 'My_NS' }, 'namespace: expected a namespace name (DNS label), got "My_NS"'],
      [
        { image: 'gim serve' },
        'image: expected an image reference without spaces, got "gim serve"',
      ],
      [{ gpu: 1.5 }, 'gpu: expected an integer from 0 to 16, got 1.5'],
      [{ gpu: '1' }, 'gpu: expected an integer from 0 to 16, got "1"'],
      [{ backoffLimit: 6.5 }, 'backoffLimit: expected an integer from 0 to 10, got 6.5'],
      [
        { terminationGracePeriodSeconds: '2m' },
        'terminationGracePeriodSeconds: expected an integer from 1 to 3600, got "2m"',
      ],
      [{ ttlSecondsAfterFinished: -1 }, 'ttlSecondsAfterFinished: expected an integer from 0 to'],
      [{ resources: { limit: {} } }, 'resources.limit: unknown field (expected requests, limits)'],
      [
        { resources: { limits: { memory: '16 GB' } } },
        'resources.limits.memory: expected a quantity',
      ],
      [
        { resources: { limits: { 'nvidia.com/gpu': 1 } } },
        'resources.limits.nvidia.com/gpu: set the top-level gpu field',
      ],
      [
        { nodeSelector: { 'nvidia.com/gpu.present': true } },
        'nodeSelector.nvidia.com/gpu.present: expected a label value (a string; quote "true"), got true',
      ],
      [{ tolerations: { key: 'x' } }, 'tolerations: expected a list, got {"key":"x"}'],
      [
        { tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exist' }] },
        'tolerations[0].operator: expected Equal or Exists, got "Exist"',
      ],
      [
        { tolerations: [{ key: 'a', effect: 'NoSchedul' }] },
        'tolerations[0].effect: expected one of NoSchedule, PreferNoSchedule, NoExecute, got "NoSchedul"',
      ],
      [
        { tolerations: [{ key: 'a', operator: 'Exists', value: 'v' }] },
        'tolerations[0].value: must be empty with operator Exists',
      ],
      [
        { tolerations: [{ key: 'a', tolerations: 1 }] },
        'tolerations[0].tolerations: unknown field',
      ],
    ];
    for (const [patch, expected] of cases) {
      const got = problems({ ...good(), ...patch });
      assert.ok(
        got.some((p) => p.startsWith(expected)),
        `${JSON.stringify(patch)}: expected ${expected}, got ${JSON.stringify(got)}`,
      );
    }
  });
});

describe('kubernetes-job: renderTrainingJob', () => {
  const cpuRunner = (): RunnerConfig =>
    parseRunnerConfig(readYaml(join(K8S, 'overlays/cpu/training-runner.yaml')));

  test('renders a Job that validates strictly, for every kind, with and without a GPU', () => {
    for (const runner of [baseRunner(), cpuRunner()]) {
      for (const kind of ['encoder', 'head', 'probe'] as const) {
        const job = renderTrainingJob({ ...EXAMPLE_TRAINING_SPEC, kind }, runner);
        assert.deepEqual(checkTrainingJob(job), [], `${kind} gpu=${runner.gpu}`);
        assert.equal(job.metadata?.labels?.['gim.dev/kind'], kind);
      }
    }
    const cpu = renderTrainingJob(EXAMPLE_TRAINING_SPEC, cpuRunner()).spec!.template.spec!;
    assert.equal(JSON.stringify(cpu).includes('nvidia.com'), false);
    assert.equal(
      cpu.volumes?.some((v) => v.name === 'cuda-cache'),
      false,
    );
    const gpu = renderTrainingJob(EXAMPLE_TRAINING_SPEC, baseRunner());
    assert.equal(gpu.metadata?.name, 'gim-train-example-0001-1');
    assert.equal(gpu.spec?.template.metadata?.labels?.['gim.dev/attempt'], '1');
    assert.equal(gpu.spec?.activeDeadlineSeconds, EXAMPLE_TRAINING_SPEC.timeoutSeconds);
    const train = gpu.spec!.template.spec!.containers[0]!;
    assert.deepEqual(train.command, ['node', 'dist/src/cli/main.js']);
    assert.deepEqual(train.args, EXAMPLE_TRAINING_SPEC.args);
    assert.equal(train.resources?.limits?.['nvidia.com/gpu'], 1);
  });

  test('the render does not share state with its inputs', () => {
    const runner = baseRunner();
    const job = renderTrainingJob(EXAMPLE_TRAINING_SPEC, runner);
    job.spec!.template.spec!.tolerations!.push({ key: 'x' });
    job.spec!.template.spec!.containers[0]!.args!.push('--oops');
    assert.equal(runner.tolerations.length, 1);
    assert.equal(EXAMPLE_TRAINING_SPEC.args.includes('--oops'), false);
  });

  test('refuses a spec it cannot render, naming each problem', () => {
    assert.throws(
      () =>
        renderTrainingJob(
          {
            jobId: 'Job_1',
            attempt: 0,
            model: 'x'.repeat(64),
            kind: 'train' as never,
            args: [],
            timeoutSeconds: 0,
          },
          baseRunner(),
        ),
      (error: unknown) => {
        assert.ok(error instanceof JobTemplateError);
        assert.deepEqual(
          error.problems.map((p) => p.split(':')[0]),
          ['jobId', 'attempt', 'model', 'kind', 'args', 'timeoutSeconds'],
        );
        assert.match(error.message, /^cannot render the training Job:\n {2}jobId: expected 1-48/);
        return true;
      },
    );
  });

  test('KUBERNETES_RUNNER_API_CALLS is frozen and names each resource once', () => {
    assert.ok(Object.isFrozen(KUBERNETES_RUNNER_API_CALLS));
    const keys = KUBERNETES_RUNNER_API_CALLS.map((c) => `${c.apiGroup}/${c.resource}`);
    assert.equal(new Set(keys).size, keys.length);
  });
});
