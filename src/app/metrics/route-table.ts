/**
 * Maps a request to the pattern of the route that serves it (`/v1/models/{name}/embeddings`), so
 * that metric labels stay few however many models, versions and odd URLs clients send. Built from
 * the OpenAPI document, which lists every route.
 */
export class RouteTable {
  private readonly routes: { method: string; pattern: string; regex: RegExp }[];

  constructor(routes: Iterable<{ method: string; pattern: string }>) {
    this.routes = [...routes].map(({ method, pattern }) => ({
      method: method.toUpperCase(),
      pattern,
      regex: patternRegex(pattern),
    }));
    // A literal segment beats a parameter: `/v2/health/ready` before `/v2/models/{name}`.
    this.routes.sort((a, b) => literalLength(b.pattern) - literalLength(a.pattern));
  }

  /** Every operation of an OpenAPI document's `paths`. */
  static fromOpenApi(paths: Record<string, object>): RouteTable {
    const methods = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
    const routes = Object.entries(paths).flatMap(([pattern, item]) =>
      Object.keys(item)
        .filter((key) => methods.includes(key))
        .map((method) => ({ method, pattern })),
    );
    return new RouteTable(routes);
  }

  /** The route pattern of a method and path (no query string), or undefined. */
  match(method: string, path: string): string | undefined {
    const wanted = method.toUpperCase() === 'HEAD' ? 'GET' : method.toUpperCase();
    const trimmed = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
    return this.routes.find((r) => r.method === wanted && r.regex.test(trimmed))?.pattern;
  }

  /** The methods some route serves on a path (HEAD with GET), for a 405's `Allow`. */
  methodsAt(path: string): string[] {
    const trimmed = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
    const methods = new Set(this.routes.filter((r) => r.regex.test(trimmed)).map((r) => r.method));
    if (methods.has('GET')) methods.add('HEAD');
    return [...methods].sort();
  }
}

function patternRegex(pattern: string): RegExp {
  const source = pattern
    .split(/(\{[^}]+\})/)
    .map((part) =>
      part.startsWith('{') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, (c) => `\\${c}`),
    )
    .join('');
  return new RegExp(`^${source}$`);
}

function literalLength(pattern: string): number {
  return pattern.replace(/\{[^}]+\}/g, '').length;
}
