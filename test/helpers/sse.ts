/** The `id`, `event` and `data` fields of one Server-Sent Events block (comments left out). */
export function sseFields(block: string): Record<string, string> {
  return Object.fromEntries(
    block
      .split('\n')
      .filter((l) => /^(id|event|data): /.test(l))
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]),
  );
}
