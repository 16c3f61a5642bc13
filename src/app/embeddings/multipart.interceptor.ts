import {
  type CallHandler,
  type ExecutionContext,
  Inject,
  Injectable,
  type NestInterceptor,
} from '@nestjs/common';
import type { Request, RequestHandler, Response } from 'express';
import multer, { MulterError } from 'multer';
import type { Observable } from 'rxjs';
import { GimError, type GimErrorCode } from '../../gim/errors.js';
import { APP_CONFIG, type AppConfig } from '../config.js';

/** Text fields (options) a multipart body may carry besides its files, and their size. */
const MAX_FIELDS = 16;
const MAX_FIELD_BYTES = 1024;

/**
 * Parses a multipart/form-data body into memory with multer: every file field is an item, text
 * fields are options. Limits come from the config (one file <= MAX_BODY_BYTES, at most MAX_ITEMS
 * files) and multer's errors become GimErrors, so an over-limit body is a 413 like any other.
 * Other bodies pass through untouched.
 */
@Injectable()
export class MultipartInterceptor implements NestInterceptor {
  private readonly upload: RequestHandler;

  constructor(@Inject(APP_CONFIG) private readonly config: AppConfig) {
    this.upload = multer({
      storage: multer.memoryStorage(),
      limits: {
        fileSize: config.maxBodyBytes,
        files: config.maxItems,
        fields: MAX_FIELDS,
        fieldSize: MAX_FIELD_BYTES,
        parts: config.maxItems + MAX_FIELDS,
      },
    }).any();
  }

  async intercept(context: ExecutionContext, next: CallHandler): Promise<Observable<unknown>> {
    const http = context.switchToHttp();
    const req = http.getRequest<Request>();
    if (req.is('multipart/form-data')) {
      await new Promise<void>((resolve, reject) =>
        this.upload(req, http.getResponse<Response>(), (error: unknown) =>
          error ? reject(this.toGimError(error)) : resolve(),
        ),
      );
    }
    return next.handle();
  }

  private toGimError(error: unknown): unknown {
    if (!(error instanceof MulterError)) {
      // busboy's complaints about a malformed body.
      return error instanceof Error
        ? new GimError('invalid_argument', `malformed multipart body: ${error.message}`, {
            cause: error,
          })
        : error;
    }
    const { maxBodyBytes, maxItems } = this.config;
    const tooLarge: Partial<Record<string, string>> = {
      LIMIT_FILE_SIZE: `file field "${error.field}" is larger than ${maxBodyBytes} bytes (MAX_BODY_BYTES)`,
      LIMIT_FILE_COUNT: `more than ${maxItems} files: at most ${maxItems} items per request (MAX_ITEMS)`,
      LIMIT_PART_COUNT: `more than ${maxItems + MAX_FIELDS} parts in the multipart body`,
    };
    const message = tooLarge[error.code];
    const code: GimErrorCode = message === undefined ? 'invalid_argument' : 'too_large';
    return new GimError(
      code,
      message ?? `bad multipart body: ${error.message}${error.field ? ` (${error.field})` : ''}`,
      { cause: error },
    );
  }
}
