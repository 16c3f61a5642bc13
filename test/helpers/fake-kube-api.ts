/**
 * A local HTTP server speaking the parts of the Kubernetes REST API the training runner and the
 * leader Lease use, for tests (no kube-apiserver can run here):
 *
 *   /apis/batch/v1/namespaces/{ns}/jobs[/{name}]                 create get list watch delete
 *   /api/v1/namespaces/{ns}/pods[/{name}[/log]]                  get list watch delete, log
 *   /apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}] create get list update
 *
 * As the real server: a bearer token (401 without), `Status` bodies on errors (404 NotFound,
 * 409 AlreadyExists / Conflict on a stale resourceVersion, 422 Invalid), list responses with the
 * collection's resourceVersion and items without kind/apiVersion, `?watch=1` as chunked JSON
 * lines replayed after `resourceVersion` (an ERROR event with a 410 Status below the compaction
 * point), deletes with propagationPolicy (Foreground keeps the Job until its pods are gone) and
 * gracePeriodSeconds. Created and updated Jobs and Leases are validated strictly against the
 * Kubernetes schemas (`validateStrict`), as server-side field validation would. `startTls` serves
 * HTTPS and also accepts a client certificate signed by its CA (the user is the CN).
 *
 * The test plays the cluster's controllers through `cluster` (fake-kube-cluster.ts) and reads
 * `calls` (method, path, query, verb, resource) to check the RBAC Role covers what was called.
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { KubernetesVerb } from '../../src/app/jobs/kubernetes-job.js';
import { FakeKubeCluster } from './fake-kube-cluster.js';
import {
  type Change,
  FakeKubeStore,
  type KubeObject,
  type Resource,
  parseSelector,
} from './fake-kube-store.js';
import { validateStrict } from './k8s-schema.js';

export interface RecordedCall {
  method: string;
  path: string;
  query: Record<string, string>;
  verb: KubernetesVerb | 'deletecollection';
  /** '' for the core group. */
  apiGroup: string;
  /** `jobs`, `pods`, `pods/log`, `leases`. */
  resource: string;
  name?: string;
  status: number;
  /** The request body (create, update, the DeleteOptions of a delete), parsed. */
  body?: unknown;
  /** The bearer token it came with (which client called). */
  token?: string;
}

export interface FakeTls {
  key: string;
  cert: string;
  /** The CA of the client certificates it accepts. */
  ca: string;
}

interface Route {
  apiGroup: string;
  version: string;
  resource: Resource;
  kind: string;
  namespace: string;
  name?: string;
  log: boolean;
}

const ROUTES: {
  re: RegExp;
  apiGroup: string;
  version: string;
  resource: Resource;
  kind: string;
}[] = [
  {
    re: /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs(?:\/([^/]+))?$/,
    apiGroup: 'batch',
    version: 'batch/v1',
    resource: 'jobs',
    kind: 'Job',
  },
  {
    re: /^\/api\/v1\/namespaces\/([^/]+)\/pods(?:\/([^/]+)(\/log)?)?$/,
    apiGroup: '',
    version: 'v1',
    resource: 'pods',
    kind: 'Pod',
  },
  {
    re: /^\/apis\/coordination\.k8s\.io\/v1\/namespaces\/([^/]+)\/leases(?:\/([^/]+))?$/,
    apiGroup: 'coordination.k8s.io',
    version: 'coordination.k8s.io/v1',
    resource: 'leases',
    kind: 'Lease',
  },
];

/** The API's error body. */
export function statusBody(code: number, reason: string, message: string, details?: object) {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

export class FakeKubeApi {
  readonly store = new FakeKubeStore();
  /** The cluster's side: conditions, pods, node drains (what controllers and kubelets do). */
  readonly cluster = new FakeKubeCluster(this.store);
  readonly calls: RecordedCall[] = [];
  /** Bearer tokens the server accepts. */
  readonly tokens: Set<string>;
  readonly #server: Server;
  /** Open watches, and how to end each. */
  readonly #watches = new Map<ServerResponse, () => void>();
  readonly #waiters = new Set<{
    match: (c: RecordedCall) => boolean;
    resolve: (c: RecordedCall) => void;
  }>();
  url = '';
  /**
   * Runs before each authenticated request is served: a test's way to act "at the same moment"
   * (another replica writes the Lease between a client's read and its update).
   */
  beforeRequest: ((method: string, path: string) => void) | undefined;

  private constructor(tokens: string[], tls: FakeTls | undefined) {
    this.tokens = new Set(tokens);
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.#handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) send(res, 500, statusBody(500, 'InternalError', String(error)));
      });
    };
    this.#server = tls
      ? createTlsServer({ ...tls, requestCert: true, rejectUnauthorized: false }, handler)
      : createServer(handler);
  }

  /** Plain HTTP, accepting these bearer tokens. */
  static start(...tokens: string[]): Promise<FakeKubeApi> {
    return FakeKubeApi.#listen(new FakeKubeApi(tokens, undefined), 'http');
  }

  /**
   * HTTPS with this certificate; as the real server, it also accepts a client certificate signed
   * by `ca` (the user is its CN).
   */
  static startTls(tls: FakeTls, ...tokens: string[]): Promise<FakeKubeApi> {
    return FakeKubeApi.#listen(new FakeKubeApi(tokens, tls), 'https');
  }

  static async #listen(api: FakeKubeApi, scheme: string): Promise<FakeKubeApi> {
    await new Promise<void>((resolve) => api.#server.listen(0, '127.0.0.1', resolve));
    api.url = `${scheme}://127.0.0.1:${(api.#server.address() as AddressInfo).port}`;
    return api;
  }

  async close(): Promise<void> {
    this.dropWatches();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Ends every open watch, as an API server does at its timeout or on a restart. */
  dropWatches(): void {
    for (const end of [...this.#watches.values()]) end();
  }

  /** The first call (recorded at or after index `from`) that `match`es, when it comes. */
  waitForCall(match: (c: RecordedCall) => boolean, from = 0): Promise<RecordedCall> {
    const seen = this.calls.slice(from).find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.#waiters.add({ match, resolve }));
  }

  #record(call: RecordedCall): void {
    this.calls.push(call);
    for (const w of this.#waiters) {
      if (!w.match(call)) continue;
      this.#waiters.delete(w);
      w.resolve(call);
    }
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query = Object.fromEntries(url.searchParams);
    const raw = await readAll(req);
    const body: unknown = raw ? JSON.parse(raw) : undefined;
    const method = req.method ?? 'GET';
    const found = ROUTES.map((r) => ({ r, m: r.re.exec(url.pathname) })).find((x) => x.m);
    const route: Route | undefined = found && {
      apiGroup: found.r.apiGroup,
      version: found.r.version,
      resource: found.r.resource,
      kind: found.r.kind,
      namespace: decodeURIComponent(found.m![1]!),
      ...(found.m![2] ? { name: decodeURIComponent(found.m![2]) } : {}),
      log: found.m![3] !== undefined,
    };
    const watch = query.watch === '1' || query.watch === 'true';
    const verb = verbOf(method, route?.name !== undefined, watch);
    const socket = req.socket as Partial<TLSSocket>;
    const peer = socket.authorized ? socket.getPeerCertificate?.() : undefined;
    const auth = peer?.subject?.CN
      ? ['', `cert:${peer.subject.CN}`]
      : /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    const record = (status: number) =>
      this.#record({
        method,
        path: url.pathname,
        query,
        verb,
        apiGroup: route?.apiGroup ?? '?',
        resource: route ? `${route.resource}${route.log ? '/log' : ''}` : url.pathname,
        ...(route?.name ? { name: route.name } : {}),
        status,
        ...(body !== undefined ? { body } : {}),
        ...(auth ? { token: auth[1]! } : {}),
      });
    const answer = (status: number, payload: unknown, contentType?: string) => {
      record(status);
      send(res, status, payload, contentType);
    };

    if (!auth || !this.tokens.has(auth[1]!))
      return answer(401, statusBody(401, 'Unauthorized', 'Unauthorized'));
    this.beforeRequest?.(method, url.pathname);
    if (!route)
      return answer(
        404,
        statusBody(404, 'NotFound', 'the server could not find the requested resource'),
      );
    const what = `${route.resource}.${route.apiGroup || 'core'}`.replace(/\.core$/, '');
    const notFound = () =>
      answer(
        404,
        statusBody(404, 'NotFound', `${what} "${route.name}" not found`, {
          name: route.name,
          group: route.apiGroup,
          kind: route.resource,
        }),
      );

    if (route.log) {
      const pod = this.store.get('pods', route.namespace, route.name!);
      if (!pod) return notFound();
      return answer(200, this.cluster.podLog(route.name!), 'text/plain');
    }
    switch (verb) {
      case 'list': {
        const items = this.store
          .list(route.resource, route.namespace, query.labelSelector)
          .map(({ apiVersion: _a, kind: _k, ...item }) => item);
        return answer(200, {
          kind: `${route.kind}List`,
          apiVersion: route.version,
          metadata: { resourceVersion: this.store.resourceVersion },
          items,
        });
      }
      case 'watch':
        // Recorded once the watch is registered, so a test that saw it knows events reach it.
        return record(this.#watch(res, route, query));
      case 'get': {
        const obj = this.store.get(route.resource, route.namespace, route.name!);
        return obj ? answer(200, obj) : notFound();
      }
      case 'create':
      case 'update': {
        const obj = body as KubeObject;
        const invalid = this.#invalid(route, obj, verb);
        if (invalid) return answer(invalid.code, invalid);
        const existing = this.store.get(route.resource, route.namespace, obj.metadata.name);
        if (verb === 'create') {
          if (existing)
            return answer(
              409,
              statusBody(409, 'AlreadyExists', `${what} "${obj.metadata.name}" already exists`, {
                name: obj.metadata.name,
                group: route.apiGroup,
                kind: route.resource,
              }),
            );
          return answer(
            201,
            this.store.create(route.resource, {
              ...obj,
              ...(route.resource === 'jobs' ? { status: {} } : {}),
            }),
          );
        }
        if (!existing) return notFound();
        const rv = obj.metadata.resourceVersion;
        if (rv !== undefined && rv !== existing.metadata.resourceVersion)
          return answer(
            409,
            statusBody(
              409,
              'Conflict',
              `Operation cannot be fulfilled on ${what} "${obj.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`,
              { name: obj.metadata.name, group: route.apiGroup, kind: route.resource },
            ),
          );
        return answer(200, this.store.update(route.resource, obj));
      }
      case 'delete': {
        const options = { ...(body as object | undefined), ...query } as {
          propagationPolicy?: string;
          gracePeriodSeconds?: string | number;
        };
        const grace =
          options.gracePeriodSeconds === undefined ? undefined : Number(options.gracePeriodSeconds);
        const result =
          route.resource === 'jobs'
            ? this.cluster.deleteJob(
                route.namespace,
                route.name!,
                options.propagationPolicy ?? 'Orphan',
              )
            : route.resource === 'pods'
              ? this.cluster.deletePod(route.namespace, route.name!, grace)
              : this.store.remove(route.resource, route.namespace, route.name!);
        if (!result) return notFound();
        return answer(200, result);
      }
      default:
        return answer(
          405,
          statusBody(405, 'MethodNotAllowed', `${method} is not supported by the fake`),
        );
    }
  }

  /** A 4xx Status when the object cannot be stored, else undefined. */
  #invalid(route: Route, obj: KubeObject | undefined, verb: 'create' | 'update') {
    const name = obj?.metadata?.name;
    if (!obj || obj.apiVersion !== route.version || obj.kind !== route.kind || !name)
      return statusBody(400, 'BadRequest', `expected a ${route.version} ${route.kind} with a name`);
    if (verb === 'update' && name !== route.name)
      return statusBody(
        400,
        'BadRequest',
        'the name of the object does not match the name on the URL',
      );
    if (obj.metadata.namespace !== undefined && obj.metadata.namespace !== route.namespace)
      return statusBody(
        400,
        'BadRequest',
        'the namespace of the provided object does not match the namespace sent on the request',
      );
    if (route.resource === 'pods')
      return statusBody(405, 'MethodNotAllowed', 'pods are made by the cluster here');
    const problems = validateStrict({
      ...obj,
      metadata: { ...obj.metadata, namespace: route.namespace },
    }).problems;
    if (problems.length > 0)
      return statusBody(
        422,
        'Invalid',
        `${route.kind} "${name}" is invalid: ${problems.join('; ')}`,
        { name, kind: route.kind, causes: problems.map((message) => ({ message })) },
      );
    return undefined;
  }

  /** Streams the watch; returns 200, or 410 for a version older than the history kept. */
  #watch(res: ServerResponse, route: Route, query: Record<string, string>): number {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    const write = (type: string, object: unknown) =>
      res.write(`${JSON.stringify({ type, object })}\n`);
    const from = query.resourceVersion;
    if (from !== undefined && from !== '0' && Number(from) < this.store.compactedBefore) {
      write(
        'ERROR',
        statusBody(
          410,
          'Expired',
          `too old resource version: ${from} (${this.store.compactedBefore})`,
        ),
      );
      res.end();
      return 410;
    }
    const matches = parseSelector(query.labelSelector);
    const relevant = (c: Change) =>
      c.resource === route.resource &&
      c.object.metadata.namespace === route.namespace &&
      matches(c.object.metadata.labels ?? {});
    const start = from === undefined || from === '0' ? undefined : Number(from);
    if (start === undefined) {
      for (const obj of this.store.list(route.resource, route.namespace, query.labelSelector))
        write('ADDED', obj);
    } else {
      for (const c of this.store.since(start)) if (relevant(c)) write(c.type, c.object);
    }
    const unsubscribe = this.store.subscribe((c) => relevant(c) && write(c.type, c.object));
    const end = () => {
      unsubscribe();
      clearTimeout(timeout);
      this.#watches.delete(res);
      res.end();
    };
    const timeout = query.timeoutSeconds
      ? setTimeout(end, Number(query.timeoutSeconds) * 1000)
      : undefined;
    this.#watches.set(res, end);
    res.on('close', end);
    return 200;
  }
}

function verbOf(method: string, named: boolean, watch: boolean): RecordedCall['verb'] {
  switch (method) {
    case 'GET':
      return named ? 'get' : watch ? 'watch' : 'list';
    case 'POST':
      return 'create';
    case 'PUT':
      return 'update';
    case 'PATCH':
      return 'patch';
    default:
      return named ? 'delete' : 'deletecollection';
  }
}

async function readAll(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function send(
  res: ServerResponse,
  status: number,
  payload: unknown,
  contentType = 'application/json',
): void {
  const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
