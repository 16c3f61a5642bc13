/**
 * Holds the service's answers against its own OpenAPI document: every response an e2e test
 * receives is recorded (bootApp adds the hook) and checked when the app closes. A status the
 * operation does not document, a content type it does not list, or a JSON body its schema refuses
 * fails the test that closed the app, so the document and the answers cannot drift apart.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';

// ajv-formats is CommonJS: its default export arrives as the module object under swc.
const addFormats = ((addFormatsModule as { default?: unknown }).default ??
  addFormatsModule) as typeof addFormatsModule.default;

/** One answer as the server sent it. */
export interface RecordedResponse {
  method: string;
  /** The route pattern in OpenAPI form (`/v1/models/{name}`), or undefined: no route matched. */
  route: string | undefined;
  /** The URL asked for, for messages (the test's own requests). */
  url: string;
  status: number;
  contentType: string | undefined;
  /** The serialized body, or undefined for a stream (a file, an event stream). */
  body: string | Buffer | undefined;
}

interface MediaTypeObject {
  schema?: object;
}
interface ResponseObject {
  content?: Record<string, MediaTypeObject>;
}
interface OperationObject {
  responses: Record<string, ResponseObject>;
}
export interface OpenApiDocument {
  openapi: string;
  paths: Record<string, Record<string, OperationObject>>;
  components?: { schemas?: Record<string, object> };
  [key: string]: unknown;
}

const DOC_ID = 'openapi.json';
/** What every error answers, whether a route documents it or no route matched. */
const ERROR_BODY = { $ref: `${DOC_ID}#/components/schemas/ErrorBodyDto` };

export class OpenApiContract {
  private readonly ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
  private readonly validators = new Map<string, ValidateFunction>();
  private readonly responses: RecordedResponse[] = [];

  constructor(private readonly document: OpenApiDocument) {
    addFormats(this.ajv);
    // OpenAPI 3.0 annotations that are not JSON Schema keywords (nullable is Ajv's own), and
    // the document's top-level fields: it is added whole, so that `#/components/...` resolves.
    this.ajv.addVocabulary(['example', 'xml', 'externalDocs', 'discriminator']);
    this.ajv.addVocabulary(Object.keys(document).filter((k) => k !== 'externalDocs'));
    this.ajv.addSchema({ ...closedObjects(document), $id: DOC_ID } as object);
  }

  record(response: RecordedResponse): void {
    this.responses.push(response);
  }

  /** Every recorded answer the document does not describe, one line each. */
  problems(): string[] {
    return this.responses.flatMap((r) => {
      const problem = this.check(r);
      return problem === undefined
        ? []
        : [`${r.method} ${r.url} -> ${r.status} ${r.contentType ?? ''}: ${problem}`];
    });
  }

  /** What is wrong with one answer, or undefined. */
  check(r: RecordedResponse): string | undefined {
    const mediaType = r.contentType?.split(';')[0]?.trim().toLowerCase();
    const method = r.method === 'HEAD' ? 'get' : r.method.toLowerCase();
    let schemaRef: object | undefined;
    if (r.route === undefined) {
      // No operation (404, 405, a URL the router refused): an error in the error shape.
      if (r.status < 400) return `no route matched, yet ${r.status}`;
      if (mediaType !== 'application/json') return 'an error without a JSON body';
      schemaRef = ERROR_BODY;
    } else {
      const operation = this.document.paths[r.route]?.[method];
      if (operation === undefined) return `the document has no operation ${method} ${r.route}`;
      const response = operation.responses[String(r.status)] ?? operation.responses.default;
      if (response === undefined) return `status ${r.status} is not documented for this operation`;
      // 204 and 304 have no content by definition (RFC 9110).
      if (r.status === 204 || r.status === 304) return undefined;
      const empty = r.body === undefined ? false : r.body.length === 0;
      if (empty || r.method === 'HEAD') return undefined;
      const content = response.content ?? {};
      if (mediaType === undefined || !(mediaType in content)) {
        return `content type ${mediaType ?? '(none)'} is not documented (${Object.keys(content).join(', ') || 'no body'})`;
      }
      if (mediaType !== 'application/json') return undefined; // binary, text, events: type only
      schemaRef = {
        $ref: `${DOC_ID}#/paths/${pointer(r.route)}/${method}/responses/${r.status in operation.responses ? r.status : 'default'}/content/${pointer(mediaType)}/schema`,
      };
    }
    if (r.body === undefined || r.method === 'HEAD') return undefined;
    let value: unknown;
    try {
      value = JSON.parse(r.body.toString());
    } catch {
      return 'the body is not JSON';
    }
    const validate = this.validator(schemaRef);
    if (validate(value)) return undefined;
    return this.ajv.errorsText(validate.errors, { dataVar: 'body' });
  }

  private validator(ref: object): ValidateFunction {
    const key = JSON.stringify(ref);
    let validate = this.validators.get(key);
    if (validate === undefined) {
      validate = this.ajv.compile(ref);
      this.validators.set(key, validate);
    }
    return validate;
  }
}

/**
 * The document with every object schema that lists its properties closed to others
 * (`additionalProperties: false` unless it says otherwise): a field the code sends and the
 * document does not describe is drift too.
 */
function closedObjects<T>(value: T): T {
  if (Array.isArray(value)) return value.map(closedObjects) as T;
  if (typeof value !== 'object' || value === null) return value;
  const copy = Object.fromEntries(
    Object.entries(value).map(([k, v]) => [k, closedObjects(v)]),
  ) as Record<string, unknown>;
  const isSchema = typeof copy.properties === 'object' && copy.properties !== null;
  if (isSchema && !('additionalProperties' in copy) && copy.type === 'object') {
    copy.additionalProperties = false;
  }
  return copy as T;
}

/** A JSON pointer segment. */
function pointer(segment: string): string {
  return encodeURIComponent(segment.replace(/~/g, '~0').replace(/\//g, '~1'));
}
