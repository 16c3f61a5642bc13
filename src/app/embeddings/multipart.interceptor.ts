import {
  type CallHandler,
  type ExecutionContext,
  Inject,
  Injectable,
  type NestInterceptor,
} from '@nestjs/common';
import type { FastifyRequest } from 'fastify';
import type { Observable } from 'rxjs';
import { GimError } from '../../gim/errors.js';
import { APP_CONFIG, type AppConfig } from '../config.js';
import { quoteInput } from '../../gim/quote-input.js';

/** Text fields (options) a multipart body may carry besides its files, and their size. */
export const MULTIPART_LIMITS = { fields: 16, fieldBytes: 1024 } as const;

/** A parsed multipart body: every file field is an item, in order; text fields are options. */
export interface MultipartBody {
  files: Buffer[];
  fields: Record<string, string>;
}

/** Bodies parsed by MultipartInterceptor, by request. */
const parsed = new WeakMap<FastifyRequest, MultipartBody>();

/** The multipart body MultipartInterceptor read from `req`, if it read one. */
export function multipartBody(req: FastifyRequest): MultipartBody | undefined {
  return parsed.get(req);
}

/**
 * Reads a multipart/form-data body into memory with @fastify/multipart (registered by
 * `createApp` with the config's limits: at most MAX_ITEMS files, all of them together at most
 * MAX_BODY_BYTES).
 * Its errors become GimErrors, so an over-limit body is a 413 like any other. Other bodies pass
 * through untouched.
 */
@Injectable()
export class MultipartInterceptor implements NestInterceptor {
  constructor(@Inject(APP_CONFIG) private readonly config: AppConfig) {}

  async intercept(context: ExecutionContext, next: CallHandler): Promise<Observable<unknown>> {
    const req = context.switchToHttp().getRequest<FastifyRequest>();
    if (req.isMultipart()) {
      const body: MultipartBody = { files: [], fields: {} };
      let total = 0;
      try {
        for await (const part of req.parts()) {
          if (part.type === 'file') {
            const file = await part.toBuffer();
            total += file.length;
            if (total > this.config.maxBodyBytes) {
              throw new GimError(
                'too_large',
                `the files of the multipart body add up to more than ` +
                  `${this.config.maxBodyBytes} bytes (MAX_BODY_BYTES)`,
              );
            }
            body.files.push(file);
          } else if (part.valueTruncated) {
            throw new GimError(
              'invalid_argument',
              `text field ${quoteInput(part.fieldname)} is longer than ${MULTIPART_LIMITS.fieldBytes} bytes`,
            );
          } else {
            body.fields[part.fieldname] = String(part.value);
          }
        }
      } catch (error) {
        throw this.toGimError(error);
      }
      parsed.set(req, body);
    }
    return next.handle();
  }

  private toGimError(error: unknown): unknown {
    if (!(error instanceof Error) || error instanceof GimError) return error;
    const { maxBodyBytes, maxItems } = this.config;
    const tooLarge: Partial<Record<string, string>> = {
      FST_REQ_FILE_TOO_LARGE: `a file field is larger than ${maxBodyBytes} bytes (MAX_BODY_BYTES)`,
      FST_FILES_LIMIT: `more than ${maxItems} files: at most ${maxItems} items per request (MAX_ITEMS)`,
      FST_PARTS_LIMIT: `more than ${maxItems + MULTIPART_LIMITS.fields} parts in the multipart body`,
      FST_FIELDS_LIMIT: `more than ${MULTIPART_LIMITS.fields} text fields in the multipart body`,
    };
    const code = (error as { code?: unknown }).code;
    const message = typeof code === 'string' ? tooLarge[code] : undefined;
    if (message !== undefined) return new GimError('too_large', message, { cause: error });
    // busboy's complaints about a malformed body, a field over its size, a premature close.
    return new GimError('invalid_argument', `malformed multipart body: ${error.message}`, {
      cause: error,
    });
  }
}
