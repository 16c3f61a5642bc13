import { applyDecorators } from '@nestjs/common';
import {
  ApiExtraModels,
  ApiProperty,
  ApiPropertyOptional,
  ApiResponse,
  getSchemaPath,
} from '@nestjs/swagger';

/** The body of every error response, for the OpenAPI document. */
export class ErrorBodyDto {
  @ApiProperty({ description: 'What went wrong and, where it helps, what to send instead' })
  error!: string;

  @ApiProperty({
    description: 'Machine-readable error class',
    example: 'invalid_argument',
    enum: [
      'invalid_argument',
      'bad_request',
      'unauthorized',
      'not_found',
      'method_not_allowed',
      'request_timeout',
      'conflict',
      'precondition_failed',
      'precondition_required',
      'too_large',
      'unsupported_media',
      'expectation_failed',
      'invalid_data',
      'overloaded',
      'cancelled',
      'not_ready',
      'backend_unavailable',
      'shutting_down',
      'golden_mismatch',
      'model_unavailable',
      'timeout',
      'internal',
    ],
  })
  error_type!: string;

  @ApiPropertyOptional({
    type: 'object',
    additionalProperties: true,
    description:
      'Machine-readable specifics of some errors: a 409 of a label move that would strand heads ' +
      'has `stranded_heads` [{head, version, layer, pooling, required_embedding_space_id, ' +
      'given_embedding_space_id}]',
  })
  details?: Record<string, unknown>;
}

/** What each status means on this API; a route lists the ones it can answer. */
const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'Bad option or input (`invalid_argument`), or a malformed request (`bad_request`)',
  401: 'Admin route without a valid `Authorization: Bearer <ADMIN_TOKEN>` (`unauthorized`)',
  404: 'Unknown model, version, label, layer or head (`not_found`); admin routes: ADMIN_TOKEN unset',
  409:
    'A conflict with the current state (`conflict`): a head that does not fit that stack ' +
    'version (another embedding space), a job in a state that does not allow it, a label with ' +
    'no earlier target',
  412: 'The labels changed since you read them: If-Match is stale (`precondition_failed`)',
  428: 'A label change without If-Match (`precondition_required`)',
  413: 'Body, file, item count, image pixels or audio duration over a limit (`too_large`)',
  415: 'Content-Type or file format not supported, or not of the stack’s modality (`unsupported_media`)',
  422: 'An item cannot be decoded or is out of range; the message names the item (`invalid_data`)',
  429: 'The batch queue is full (`overloaded`); retry after `Retry-After` seconds',
  499: 'The client closed the connection before the response (`cancelled`)',
  500: 'Internal error (`internal`); details are in the server log only',
  503:
    'Not ready: the inference worker is starting or warming up (`not_ready`, `backend_unavailable`), ' +
    'the stack version gives other embeddings on this backend than its golden record ' +
    '(`golden_mismatch`: not served here, see the log), ' +
    'the stack’s files on disk are damaged (`model_unavailable`: the message names the file), ' +
    'or the process is shutting down (`shutting_down`: retry on another replica)',
  504: 'The request timed out in the batch queue or the worker (`timeout`)',
};

/**
 * Documents the error responses of a route, each with the `{error, error_type}` body. Every
 * route can answer 400 (a malformed request: no Host header, say) and 500.
 */
export function ApiErrors(...statuses: number[]): MethodDecorator & ClassDecorator {
  const schema = { $ref: getSchemaPath(ErrorBodyDto) };
  return applyDecorators(
    ApiExtraModels(ErrorBodyDto),
    ...[...new Set([400, ...statuses, 500])]
      .sort((a, b) => a - b)
      .map((status) =>
        ApiResponse({
          status,
          description: ERROR_DESCRIPTIONS[status] ?? 'Error',
          content: { 'application/json': { schema } },
          ...(status === 429
            ? {
                headers: {
                  'Retry-After': {
                    description: 'Seconds to wait before retrying',
                    schema: { type: 'integer', minimum: 1 },
                  },
                },
              }
            : {}),
        }),
      ),
  );
}
