/**
 * The Kubernetes API connection from a pod's service account and from a kubeconfig, used over
 * real TLS against the fake API server (test/fixtures/kube-tls: a CA, a server and a client
 * certificate it signed, and an unrelated CA).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { KubeApi, KubeApiError } from '../../src/jobs/kubernetes/kube-api.js';
import {
  KubeConnectionError,
  inClusterConnection,
  kubeconfigConnection,
} from '../../src/jobs/kubernetes/kube-connection.js';
import { FakeKubeApi } from '../helpers/fake-kube-api.js';

const TLS = join(import.meta.dirname, '../fixtures/kube-tls');
const pem = (file: string) => readFileSync(join(TLS, file), 'utf8');
const b64 = (file: string) => Buffer.from(pem(file)).toString('base64');

let fake: FakeKubeApi;
let dir: string;
let port: string;

before(async () => {
  fake = await FakeKubeApi.startTls(
    { key: pem('server.key'), cert: pem('server.crt'), ca: pem('ca.crt') },
    'sa-token',
    'kubeconfig-token',
    'cert:gim-serve',
  );
  port = new URL(fake.url).port;
  dir = await mkdtemp(join(tmpdir(), 'gim-kube-conn-'));
});
after(async () => {
  await fake.close();
  await rm(dir, { recursive: true, force: true });
});

/** One call through the connection: lists Jobs in its namespace. */
async function listJobs(connection: ConstructorParameters<typeof KubeApi>[0]) {
  const api = new KubeApi(connection, { requestTimeoutMs: 5000 });
  try {
    return await api.listJobs(api.namespace ?? 'default', '');
  } finally {
    api.close();
  }
}

describe('inClusterConnection', () => {
  test('reads the service account token, CA and namespace, and calls the API over TLS', async () => {
    const sa = join(dir, 'serviceaccount');
    await mkdir(sa, { recursive: true });
    await writeFile(join(sa, 'token'), 'sa-token\n');
    await writeFile(join(sa, 'ca.crt'), pem('ca.crt'));
    await writeFile(join(sa, 'namespace'), 'gim');
    const connection = inClusterConnection({ host: '127.0.0.1', port, serviceAccountDir: sa });
    assert.equal(connection.server, `https://127.0.0.1:${port}`);
    assert.equal(connection.namespace, 'gim');
    assert.equal(connection.tokenFile, join(sa, 'token'));
    const from = fake.calls.length;
    assert.deepEqual((await listJobs(connection)).items, []);
    assert.equal(fake.calls[from]?.token, 'sa-token');
    assert.equal(fake.calls[from]?.path, '/apis/batch/v1/namespaces/gim/jobs');

    assert.throws(
      () => inClusterConnection({ host: '', port: '', serviceAccountDir: sa }),
      /KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set/,
    );
    assert.throws(
      () =>
        inClusterConnection({ host: '10.0.0.1', port: 443, serviceAccountDir: join(dir, 'none') }),
      (e: unknown) =>
        e instanceof KubeConnectionError && /is a service account token mounted/.test(e.message),
    );
    assert.equal(
      inClusterConnection({ host: 'fd00::1', port: 443, serviceAccountDir: sa }).server,
      'https://[fd00::1]:443',
    );
  });

  test('a server certificate the CA did not sign is refused', async () => {
    await assert.rejects(
      listJobs({ server: fake.url, token: 'sa-token', ca: pem('other-ca.crt') }),
      (e: unknown) => {
        assert.ok(
          e instanceof KubeApiError && e.code === 'runner_error' && e.status === 0,
          String(e),
        );
        assert.match(e.message, /certificate/);
        return true;
      },
    );
  });
});

describe('kubeconfigConnection', () => {
  const write = async (name: string, config: object) => {
    const path = join(dir, name);
    await writeFile(path, stringify(config));
    return path;
  };
  const kubeconfig = (users: object[], extra: object = {}) => ({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      // A CA file relative to the kubeconfig, as kubectl reads it.
      { name: 'lab', cluster: { server: fake.url, 'certificate-authority': 'ca.crt' } },
      { name: 'elsewhere', cluster: { server: 'https://10.9.9.9:6443' } },
    ],
    users,
    contexts: [
      { name: 'lab-token', context: { cluster: 'lab', user: 'token-user', namespace: 'gim' } },
      { name: 'lab-cert', context: { cluster: 'lab', user: 'cert-user' } },
      { name: 'lab-exec', context: { cluster: 'lab', user: 'exec-user' } },
    ],
    'current-context': 'lab-token',
    ...extra,
  });
  const users = [
    { name: 'token-user', user: { token: 'kubeconfig-token' } },
    {
      name: 'cert-user',
      user: { 'client-certificate-data': b64('client.crt'), 'client-key-data': b64('client.key') },
    },
    { name: 'exec-user', user: { exec: { command: 'aws', args: ['eks', 'get-token'] } } },
  ];

  test('the current context: server, CA file, token and namespace', async () => {
    await writeFile(join(dir, 'ca.crt'), pem('ca.crt'));
    const path = await write('config', kubeconfig(users));
    const connection = kubeconfigConnection(path);
    assert.deepEqual(connection, {
      server: fake.url,
      ca: pem('ca.crt'),
      token: 'kubeconfig-token',
      namespace: 'gim',
    });
    const from = fake.calls.length;
    await listJobs(connection);
    assert.equal(fake.calls[from]?.token, 'kubeconfig-token');
  });

  test('a named context with a client certificate (inline data)', async () => {
    const path = await write('config', kubeconfig(users));
    const connection = kubeconfigConnection(path, 'lab-cert');
    assert.equal(connection.token, undefined);
    const from = fake.calls.length;
    await listJobs(connection);
    assert.equal(fake.calls[from]?.token, 'cert:gim-serve');
  });

  test('refuses what it cannot use, naming it', async () => {
    const path = await write('config', kubeconfig(users));
    const refused = (p: string, context: string | undefined, pattern: RegExp) =>
      assert.throws(
        () => kubeconfigConnection(p, context),
        (e: unknown) => e instanceof KubeConnectionError && pattern.test(e.message),
      );
    refused(path, 'lab-exec', /exec plugin or auth provider/);
    refused(path, 'nope', /no context named nope/);
    refused(
      await write('no-current', kubeconfig(users, { 'current-context': '' })),
      undefined,
      /no context given and no current-context/,
    );
    refused(
      await write(
        'half-cert',
        kubeconfig([{ name: 'cert-user', user: { 'client-certificate-data': b64('client.crt') } }]),
      ),
      'lab-cert',
      /needs both certificate and key/,
    );
    refused(join(dir, 'missing'), undefined, /ENOENT/);
  });
});
