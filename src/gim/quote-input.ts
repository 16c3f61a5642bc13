/** How many characters of a client's value an error message shows. */
export const QUOTE_MAX_CHARS = 40;

/**
 * A value a client sent (a name, a field, an option value), quoted for an error message: quotes,
 * backslashes and every character outside printable ASCII escaped (`\u00e2`), and cut after
 * `max` characters with the full length said. A message never carries a client's raw bytes
 * back (a binary body's field names, a URL's control characters), nor a megabyte of them.
 */
export function quoteInput(value: unknown, max = QUOTE_MAX_CHARS): string {
  const text = typeof value === 'string' ? value : (safeJson(value) ?? String(value));
  const shown = text.length > max ? text.slice(0, max) : text;
  const escaped = shown.replace(/["\\]|[^\x20-\x7e]/g, (c) =>
    c === '"' || c === '\\' ? `\\${c}` : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return text.length > max ? `"${escaped}..." (${text.length} characters)` : `"${escaped}"`;
}

function safeJson(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch {
    return undefined; // a cycle or a BigInt: String() it
  }
}
