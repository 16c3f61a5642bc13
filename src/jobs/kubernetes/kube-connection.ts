/**
 * Where the Kubernetes API is and how to authenticate, from the two standard places: the pod's
 * service account (in a cluster) or a kubeconfig file (outside). The caller says which and passes
 * the paths and the `KUBERNETES_SERVICE_HOST`/`_PORT` values: nothing here reads the environment.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { KubeConnection } from './kube-api.js';

/** Where the kubelet mounts a pod's service account token, CA and namespace. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** A kubeconfig or service account that cannot make a connection. */
export class KubeConnectionError extends Error {
  override readonly name = 'KubeConnectionError';
}

export interface InClusterOptions {
  /** `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`, as the kubelet sets them. */
  host: string;
  port: string | number;
  /** Default SERVICE_ACCOUNT_DIR. */
  serviceAccountDir?: string;
}

/**
 * The connection of a pod's service account: `https://host:port`, the token file (read again
 * as it rotates), the cluster CA and the pod's namespace.
 */
export function inClusterConnection(options: InClusterOptions): KubeConnection {
  const dir = options.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  if (!options.host || !options.port)
    throw new KubeConnectionError(
      'in-cluster Kubernetes connection: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not in a pod?)',
    );
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  const read = (file: string) => {
    try {
      return readFileSync(resolve(dir, file), 'utf8');
    } catch (e) {
      throw new KubeConnectionError(
        `in-cluster Kubernetes connection: cannot read ${resolve(dir, file)} (is a service account token mounted?): ${(e as Error).message}`,
      );
    }
  };
  read('token');
  return {
    server: `https://${host}:${options.port}`,
    tokenFile: resolve(dir, 'token'),
    ca: read('ca.crt'),
    namespace: read('namespace').trim(),
  };
}

interface Named<T> {
  name?: string;
  [key: string]: unknown;
  value?: T;
}

/**
 * The connection of a kubeconfig's context (`context`, else `current-context`): the cluster's
 * server and CA (`certificate-authority-data` or a file), the user's token (`token`, `tokenFile`)
 * or client certificate (`-data` or files), the context's namespace. Relative file paths are
 * relative to the kubeconfig, as kubectl reads them. `exec` and `auth-provider` users are refused
 * with a message: they run programs we do not.
 */
export function kubeconfigConnection(path: string, context?: string): KubeConnection {
  let config: Record<string, unknown>;
  try {
    config = parseYaml(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new KubeConnectionError(`kubeconfig ${path}: ${(e as Error).message}`);
  }
  const fail = (problem: string) => new KubeConnectionError(`kubeconfig ${path}: ${problem}`);
  const pick = (list: string, name: unknown, field: string): Record<string, unknown> => {
    const entries = Array.isArray(config?.[list]) ? (config[list] as Named<unknown>[]) : [];
    const entry = entries.find((e) => e?.name === name);
    const value = entry?.[field];
    if (typeof value !== 'object' || value === null)
      throw fail(`no ${field} named ${String(name)}`);
    return value as Record<string, unknown>;
  };
  const contextName = context ?? config?.['current-context'];
  if (typeof contextName !== 'string' || contextName === '')
    throw fail('no context given and no current-context');
  const ctx = pick('contexts', contextName, 'context');
  const cluster = pick('clusters', ctx.cluster, 'cluster');
  const user = ctx.user === undefined ? {} : pick('users', ctx.user, 'user');
  if (user.exec !== undefined || user['auth-provider'] !== undefined)
    throw fail(
      `user ${String(ctx.user)} authenticates with an exec plugin or auth provider, which the runner does not run: use a token or a client certificate`,
    );
  const base = dirname(resolve(path));
  /** Inline base64 `<field>-data`, or the file `<field>`. */
  const material = (from: Record<string, unknown>, field: string): string | undefined => {
    const data = from[`${field}-data`];
    if (typeof data === 'string') return Buffer.from(data, 'base64').toString('utf8');
    const file = from[field];
    if (typeof file !== 'string') return undefined;
    try {
      return readFileSync(resolve(base, file), 'utf8');
    } catch (e) {
      throw fail(`${field} ${file}: ${(e as Error).message}`);
    }
  };
  if (typeof cluster.server !== 'string')
    throw fail(`cluster ${String(ctx.cluster)} has no server`);
  const connection: {
    -readonly [K in keyof KubeConnection]: KubeConnection[K];
  } = { server: cluster.server };
  const ca = material(cluster, 'certificate-authority');
  if (ca !== undefined) connection.ca = ca;
  if (cluster['insecure-skip-tls-verify'] === true) connection.insecureSkipTlsVerify = true;
  if (typeof user.token === 'string') connection.token = user.token;
  else if (typeof user.tokenFile === 'string') connection.tokenFile = resolve(base, user.tokenFile);
  const cert = material(user, 'client-certificate');
  const key = material(user, 'client-key');
  if ((cert === undefined) !== (key === undefined))
    throw fail(`user ${String(ctx.user)}: a client certificate needs both certificate and key`);
  if (cert !== undefined && key !== undefined) Object.assign(connection, { cert, key });
  if (typeof ctx.namespace === 'string') connection.namespace = ctx.namespace;
  return connection;
}
