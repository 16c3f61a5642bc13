/**
 * A small Kubernetes API client for exactly the calls of the training runner and the leader
 * Lease (`KUBERNETES_RUNNER_API_CALLS`), over node:http(s): JSON requests, a bearer token or a
 * client certificate, the cluster's CA, and watches as streams of JSON lines.
 *
 * Not `@kubernetes/client-node`: 2.x crashes at import on Node 20, 1.x brings node-fetch 2 and a
 * generated client for the whole API; we need ten calls, and node:https alone takes a CA and a
 * client certificate (global fetch does not without an undici dependency).
 */
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent, type IncomingMessage, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { IJob } from 'kubernetes-models/batch/v1/Job';
import type { ILease } from 'kubernetes-models/coordination.k8s.io/v1/Lease';
import type { IPod } from 'kubernetes-models/v1/Pod';

/** Where the API is and who we are to it (see kube-connection.ts for where these come from). */
export interface KubeConnection {
  /** `https://host:port` (a test's fake server: `http://`). */
  readonly server: string;
  readonly token?: string;
  /**
   * A file holding the token, read again at most once a minute: in-cluster tokens are projected
   * and rotated by the kubelet, so a token read once at start expires.
   */
  readonly tokenFile?: string;
  /** PEM: the CA that signed the API server's certificate. */
  readonly ca?: string;
  /** PEM: a client certificate and its key (a kubeconfig user without a token). */
  readonly cert?: string;
  readonly key?: string;
  readonly insecureSkipTlsVerify?: boolean;
  /** The service account's or the kubeconfig context's namespace, when known. */
  readonly namespace?: string;
}

/**
 * A refused or failed API call. `not_found` (404), `conflict` (409: AlreadyExists on create, a
 * stale resourceVersion on update: see `reason`), `gone` (410: a watch's resourceVersion is too
 * old; relist), `invalid` (422: the object does not validate), `runner_error` (401/403, the API
 * unreachable, anything else).
 */
export type KubeErrorCode = 'not_found' | 'conflict' | 'gone' | 'invalid' | 'runner_error';

export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';

  constructor(
    readonly code: KubeErrorCode,
    /** The HTTP status, 0 when there was no answer. */
    readonly status: number,
    /** The Status object's reason (`AlreadyExists`, `Conflict`, `NotFound`, `Expired`, ...). */
    readonly reason: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK';
  object: T;
}

export interface ObjectList<T> {
  items: T[];
  /** Where a watch continues from without missing a change. */
  resourceVersion: string;
}

export interface WatchOptions {
  labelSelector: string;
  /** Events after this version (a list's `resourceVersion`). */
  resourceVersion: string;
  /** The server ends the watch after this long; the caller watches again from its last version. */
  timeoutSeconds: number;
  signal?: AbortSignal;
}

export interface DeleteOptions {
  propagationPolicy?: 'Foreground' | 'Background' | 'Orphan';
  gracePeriodSeconds?: number;
}

export interface KubeApiOptions {
  /** Per call (watches excepted). Default 30 s. */
  requestTimeoutMs?: number;
}

interface Status {
  kind?: string;
  reason?: string;
  message?: string;
  code?: number;
}

type Query = Record<string, string | number | boolean | undefined>;

const TOKEN_REREAD_MS = 60_000;
const JOBS = (ns: string) => `/apis/batch/v1/namespaces/${encodeURIComponent(ns)}/jobs`;
const PODS = (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods`;
const LEASES = (ns: string) =>
  `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(ns)}/leases`;
const named = (collection: string, name: string) => `${collection}/${encodeURIComponent(name)}`;

export class KubeApi {
  readonly #connection: KubeConnection;
  readonly #base: URL;
  readonly #agent: HttpAgent;
  readonly #timeoutMs: number;
  #token: { value: string; readAt: number } | undefined;

  constructor(connection: KubeConnection, options: KubeApiOptions = {}) {
    this.#connection = connection;
    this.#base = new URL(connection.server);
    this.#timeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#agent =
      this.#base.protocol === 'https:'
        ? new HttpsAgent({
            keepAlive: true,
            ca: connection.ca,
            cert: connection.cert,
            key: connection.key,
            rejectUnauthorized: connection.insecureSkipTlsVerify !== true,
          })
        : new HttpAgent({ keepAlive: true });
  }

  /** The namespace of the connection (service account or kubeconfig context), if known. */
  get namespace(): string | undefined {
    return this.#connection.namespace;
  }

  /** Closes idle connections (open watches end through their signal). */
  close(): void {
    this.#agent.destroy();
  }

  // --- batch/v1 Jobs ---------------------------------------------------------------------------

  createJob(namespace: string, job: IJob): Promise<IJob> {
    return this.#json('POST', JOBS(namespace), {}, job);
  }

  getJob(namespace: string, name: string): Promise<IJob> {
    return this.#json('GET', named(JOBS(namespace), name));
  }

  async listJobs(namespace: string, labelSelector: string): Promise<ObjectList<IJob>> {
    return this.#list(JOBS(namespace), labelSelector);
  }

  watchJobs(namespace: string, options: WatchOptions): AsyncGenerator<WatchEvent<IJob>> {
    return this.#watch<IJob>(JOBS(namespace), options);
  }

  async deleteJob(namespace: string, name: string, options: DeleteOptions): Promise<void> {
    await this.#json('DELETE', named(JOBS(namespace), name), {}, deleteBody(options));
  }

  // --- v1 Pods ---------------------------------------------------------------------------------

  listPods(namespace: string, labelSelector: string): Promise<ObjectList<IPod>> {
    return this.#list(PODS(namespace), labelSelector);
  }

  async deletePod(namespace: string, name: string, options: DeleteOptions): Promise<void> {
    await this.#json('DELETE', named(PODS(namespace), name), {}, deleteBody(options));
  }

  async readPodLog(namespace: string, name: string, container: string): Promise<string> {
    const res = await this.#send('GET', `${named(PODS(namespace), name)}/log`, { container });
    return (await readBody(res)).toString('utf8');
  }

  // --- coordination.k8s.io/v1 Leases -----------------------------------------------------------

  getLease(namespace: string, name: string): Promise<ILease> {
    return this.#json('GET', named(LEASES(namespace), name));
  }

  createLease(namespace: string, lease: ILease): Promise<ILease> {
    return this.#json('POST', LEASES(namespace), {}, lease);
  }

  /** An optimistic update: refused with `conflict` unless `lease.metadata.resourceVersion` is current. */
  replaceLease(namespace: string, lease: ILease): Promise<ILease> {
    return this.#json('PUT', named(LEASES(namespace), lease.metadata?.name ?? ''), {}, lease);
  }

  // --- transport -------------------------------------------------------------------------------

  async #list<T>(path: string, labelSelector: string): Promise<ObjectList<T>> {
    const list = await this.#json<{ items?: T[]; metadata?: { resourceVersion?: string } }>(
      'GET',
      path,
      { labelSelector },
    );
    return { items: list.items ?? [], resourceVersion: list.metadata?.resourceVersion ?? '' };
  }

  async *#watch<T>(path: string, options: WatchOptions): AsyncGenerator<WatchEvent<T>> {
    const res = await this.#send(
      'GET',
      path,
      {
        watch: 1,
        labelSelector: options.labelSelector,
        resourceVersion: options.resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: options.timeoutSeconds,
      },
      undefined,
      // A silent connection past the server's own timeout is a dead one.
      { timeoutMs: (options.timeoutSeconds + 30) * 1000, signal: options.signal },
    );
    let pending = '';
    for await (const chunk of res as AsyncIterable<Buffer>) {
      pending += chunk.toString('utf8');
      let newline: number;
      while ((newline = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, newline).trim();
        pending = pending.slice(newline + 1);
        if (line !== '') yield parseWatchLine<T>(line);
      }
    }
  }

  async #json<T>(method: string, path: string, query: Query = {}, body?: unknown): Promise<T> {
    const res = await this.#send(method, path, query, body);
    return JSON.parse((await readBody(res)).toString('utf8')) as T;
  }

  /** Sends one request; resolves with a 2xx response, else rejects with a KubeApiError. */
  async #send(
    method: string,
    path: string,
    query: Query,
    body?: unknown,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<IncomingMessage> {
    const url = new URL(path, this.#base);
    for (const [k, v] of Object.entries(query))
      if (v !== undefined) url.searchParams.set(k, `${v}`);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { Accept: 'application/json' };
    const token = this.#bearer();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = String(Buffer.byteLength(payload));
    }
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(url, { method, headers, agent: this.#agent, signal: options.signal });
      req.setTimeout(options.timeoutMs ?? this.#timeoutMs, () =>
        req.destroy(new Error(`no answer in ${options.timeoutMs ?? this.#timeoutMs} ms`)),
      );
      req.on('response', resolve);
      req.on('error', (e) =>
        reject(
          options.signal?.aborted
            ? e
            : new KubeApiError(
                'runner_error',
                0,
                'Unreachable',
                `Kubernetes API ${method} ${url.pathname}: ${e.message}`,
                { cause: e },
              ),
        ),
      );
      req.end(payload);
    });
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) return res;
    throw statusError(
      method,
      url.pathname,
      status,
      await readBody(res).catch(() => Buffer.alloc(0)),
    );
  }

  #bearer(): string | undefined {
    const { token, tokenFile } = this.#connection;
    if (!tokenFile) return token;
    const now = Date.now();
    if (!this.#token || now - this.#token.readAt > TOKEN_REREAD_MS)
      this.#token = { value: readFileSync(tokenFile, 'utf8').trim(), readAt: now };
    return this.#token.value;
  }
}

function deleteBody(options: DeleteOptions): Record<string, unknown> {
  return { kind: 'DeleteOptions', apiVersion: 'v1', ...options };
}

async function readBody(res: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of res as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** One watch line; an ERROR event (a Status, e.g. 410 Expired) is thrown as a KubeApiError. */
function parseWatchLine<T>(line: string): WatchEvent<T> {
  const event = JSON.parse(line) as { type: string; object: unknown };
  if (event.type === 'ERROR') {
    const status = event.object as Status;
    throw statusError('WATCH', '', status.code ?? 500, Buffer.from(JSON.stringify(status)));
  }
  return event as WatchEvent<T>;
}

function statusError(method: string, path: string, code: number, body: Buffer): KubeApiError {
  let status: Status;
  try {
    status = JSON.parse(body.toString('utf8')) as Status;
  } catch {
    status = { message: body.toString('utf8').slice(0, 200) };
  }
  const reason = status.reason ?? String(code);
  const said = status.message ?? `HTTP ${code}`;
  const call = `Kubernetes API ${method} ${path}`.trim();
  switch (code) {
    case 404:
      return new KubeApiError('not_found', code, reason, `${call}: ${said}`);
    case 409:
      return new KubeApiError('conflict', code, reason, `${call}: ${said}`);
    case 410:
      return new KubeApiError('gone', code, reason, `${call}: ${said}`);
    case 422:
      return new KubeApiError('invalid', code, reason, `${call}: ${said}`);
    case 401:
      return new KubeApiError(
        'runner_error',
        code,
        reason,
        `${call}: the API server did not accept our credentials (401 ${said}): check the service account token or the kubeconfig user`,
      );
    case 403:
      return new KubeApiError(
        'runner_error',
        code,
        reason,
        `${call}: forbidden (403 ${said}): the Role in k8s/base/rbac.yaml must grant this call to the API's service account`,
      );
    default:
      return new KubeApiError('runner_error', code, reason, `${call}: ${code} ${said}`);
  }
}
