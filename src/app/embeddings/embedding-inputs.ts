import type { FastifyRequest } from 'fastify';
import { GimError } from '../../gim/errors.js';
import { mediaTypeOf } from '../http/media-type.js';
import { RAW_MEDIA_TYPES } from './input-decoders.js';
import { multipartBody } from './multipart.interceptor.js';
import { quoteInput } from '../../gim/quote-input.js';

/** The encoded items of an embedding request and the options its body carries. */
export interface EncodedInputs {
  /** How the items came: a raw body (with its media type), multipart files, or JSON base64. */
  kind: 'raw' | 'multipart' | 'json';
  mediaType?: string;
  items: Buffer[];
  /** Options given in the body (JSON fields, multipart text fields). */
  bodyOptions: Record<string, unknown>;
}

const ACCEPTED = `${RAW_MEDIA_TYPES.join(', ')} (one item), multipart/form-data or application/json`;

/**
 * Reads the items of a request whose body the parsers have seen: a raw Buffer for the media types
 * of `RAW_MEDIA_TYPES`, MultipartInterceptor's files for multipart, Fastify's JSON parser for JSON.
 */
export function readEncodedInputs(req: FastifyRequest, maxItems: number): EncodedInputs {
  const mediaType = mediaTypeOf(req);
  if (mediaType === 'multipart/form-data') {
    const multipart = multipartBody(req) ?? { files: [], fields: {} };
    if (multipart.files.length === 0) {
      throw new GimError(
        'invalid_argument',
        'the multipart body has no file: send one file per item',
      );
    }
    return { kind: 'multipart', items: multipart.files, bodyOptions: { ...multipart.fields } };
  }
  if (mediaType === 'application/json') return readJsonInputs(req.body, maxItems);
  if (RAW_MEDIA_TYPES.includes(mediaType)) {
    const body: unknown = req.body;
    if (!Buffer.isBuffer(body) || body.length === 0) {
      throw new GimError(
        'invalid_argument',
        `the request has no body: send the ${mediaType} bytes`,
      );
    }
    return { kind: 'raw', mediaType, items: [body], bodyOptions: {} };
  }
  const given = req.headers['content-type'];
  throw new GimError(
    'unsupported_media',
    `${given ? `Content-Type ${quoteInput(given)} is not supported` : 'no Content-Type'}: send ${ACCEPTED}`,
  );
}

/** `{"inputs": [{"b64": "..."}, ...], ...options}` */
export function readJsonInputs(body: unknown, maxItems: number): EncodedInputs {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new GimError('invalid_argument', 'the JSON body must be an object {"inputs": [...]}');
  }
  const { inputs, ...bodyOptions } = body as Record<string, unknown>;
  if (!Array.isArray(inputs) || inputs.length === 0) {
    throw new GimError(
      'invalid_argument',
      '"inputs" must be a non-empty array of {"b64": "<base64 of an encoded file>"}',
    );
  }
  if (inputs.length > maxItems) {
    throw new GimError(
      'too_large',
      `${inputs.length} inputs: at most ${maxItems} items per request (MAX_ITEMS)`,
    );
  }
  const items = inputs.map((input: unknown, i) => {
    const b64 = (input as { b64?: unknown } | null)?.b64;
    const keys = typeof input === 'object' && input !== null ? Object.keys(input) : [];
    if (typeof b64 !== 'string' || keys.length !== 1) {
      throw new GimError('invalid_argument', `inputs[${i}] must be {"b64": "<base64>"}`);
    }
    return decodeBase64(b64, i);
  });
  return { kind: 'json', items, bodyOptions };
}

const BASE64_RE = /^[A-Za-z0-9+/_-]+={0,2}$/;

/** Standard or URL-safe base64, padded or not, optionally a `data:...;base64,` URL. */
function decodeBase64(text: string, index: number): Buffer {
  const payload = text.replace(/^data:[^,]*;base64,/, '').replace(/\s+/g, '');
  const padded = payload.includes('=');
  if (
    payload.length === 0 ||
    !BASE64_RE.test(payload) ||
    (padded ? payload.length % 4 !== 0 : payload.length % 4 === 1)
  ) {
    throw new GimError('invalid_argument', `inputs[${index}].b64 is not valid base64`);
  }
  return Buffer.from(payload.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}
