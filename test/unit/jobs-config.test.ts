/**
 * The training jobs' settings in loadConfig (src/app/config.ts): the environment local trainers
 * get is the service's own without its settings (ADMIN_TOKEN above all), with MODELS_DIR and
 * GIM_BACKEND as the service resolved them; JOB_RUNNER=kubernetes needs POD_NAME and an API.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { CONFIG_ENV_NAMES, ConfigError, loadConfig } from '../../src/app/config.js';

describe('loadConfig: training jobs', () => {
  test("local trainers get the service's environment without its settings", () => {
    const config = loadConfig({
      PATH: '/usr/local/bin:/usr/bin',
      HOME: '/home/gim',
      TF_CPP_MIN_LOG_LEVEL: '2',
      LD_LIBRARY_PATH: '/usr/local/cuda/lib64',
      ADMIN_TOKEN: 'a-secret-token-0123456789',
      DATA_ROOT: '/data',
      JOB_NICENESS: '5',
      KUBECONFIG: '/home/gim/.kube/config',
      MODELS_DIR: 'some/models',
      GIM_BACKEND: 'wasm',
    });
    assert.deepEqual(config.jobs.trainerEnv, {
      PATH: '/usr/local/bin:/usr/bin',
      HOME: '/home/gim',
      TF_CPP_MIN_LOG_LEVEL: '2',
      LD_LIBRARY_PATH: '/usr/local/cuda/lib64',
      MODELS_DIR: join(process.cwd(), 'some/models'),
      GIM_BACKEND: 'wasm',
    });
    assert.ok(Object.isFrozen(config.jobs.trainerEnv));
    assert.equal(config.jobs.niceness, 5);
    // Without GIM_BACKEND the trainer picks its backend itself; MODELS_DIR always as resolved.
    const plain = loadConfig({ ADMIN_TOKEN: 'a-secret-token-0123456789', LANG: 'C.UTF-8' });
    assert.deepEqual(plain.jobs.trainerEnv, {
      LANG: 'C.UTF-8',
      MODELS_DIR: join(process.cwd(), 'models'),
    });
  });

  test('no app setting reaches a trainer except MODELS_DIR and GIM_BACKEND', () => {
    const env = Object.fromEntries(CONFIG_ENV_NAMES.map((name) => [name, 'x']));
    // Values loadConfig accepts, for those it checks.
    Object.assign(env, {
      PORT: '8080',
      GIM_BACKEND: 'cpu',
      LOG_LEVEL: 'warn',
      PRELOAD: 'none',
      MAX_BATCH_SIZE: '8',
      MAX_BATCH_DELAY_MS: '0',
      REF_CACHE_MS: '0',
      MAX_QUEUE: '8',
      REQUEST_TIMEOUT_MS: '1000',
      MAX_AUDIO_SECONDS_PER_REQUEST: '10',
      MAX_BODY_BYTES: '2048',
      MAX_ITEMS: '4',
      AUDIO_DECODE_THREADS: '1',
      MAX_INPUT_PIXELS: '100',
      ADMIN_TOKEN: 'a-secret-token-0123456789',
      SHUTDOWN_DELAY_MS: '0',
      SHUTDOWN_TIMEOUT_MS: '1000',
      JOB_RUNNER: 'kubernetes',
      JOB_MAX_RUNNING: '1',
      JOB_TIMEOUT_SECONDS: '60',
      JOB_MAX_RESUMES: '1',
      JOB_STOP_GRACE_MS: '1000',
      JOB_NICENESS: '1',
    });
    const config = loadConfig(env);
    assert.deepEqual(Object.keys(config.jobs.trainerEnv).sort(), ['GIM_BACKEND', 'MODELS_DIR']);
  });

  test('JOB_RUNNER=kubernetes needs POD_NAME and an API', () => {
    assert.throws(
      () => loadConfig({ JOB_RUNNER: 'kubernetes' }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.deepEqual(error.problems, [
          'POD_NAME: required with JOB_RUNNER=kubernetes (the pod name, from the downward API)',
          'JOB_RUNNER=kubernetes: no Kubernetes API (KUBERNETES_SERVICE_HOST in a pod, or KUBECONFIG outside)',
        ]);
        return true;
      },
    );
    const k = loadConfig({
      JOB_RUNNER: 'kubernetes',
      POD_NAME: 'gim-serve-5d8f7c9b6-x2k4q',
      KUBERNETES_SERVICE_HOST: 'kubernetes.default.svc',
      KUBERNETES_SERVICE_PORT: '443',
    }).jobs;
    assert.equal(k.runner, 'kubernetes');
    assert.equal(k.kubernetes.runnerConfigPath, '/etc/gim/training-runner.yaml');
    assert.equal(k.kubernetes.podName, 'gim-serve-5d8f7c9b6-x2k4q');
  });
});
