/**
 * What a label move looked like to the clients of `bench:jobs`: from the answers every client got
 * (when it sent, when the answer came, status, the version it names) and the PUT's own times,
 * how long until every client was served by the new version, what failed, and the latency of the
 * requests during the switch against those just before it. Pure: times are milliseconds on one
 * clock (performance.now()).
 */

/** One answer a closed-loop client got. */
export interface Answer {
  client: number;
  /** When the request was sent, and when its answer had arrived in full. */
  start: number;
  end: number;
  /** HTTP status; 0 for a connection error. */
  status: number;
  /** The version the answer names (200s only). */
  version: number | null;
}

export interface Move {
  from: number;
  to: number;
  /** When the PUT was sent, and when its answer arrived. */
  putStart: number;
  putEnd: number;
}

export interface MoveAnalysis {
  from: number;
  to: number;
  putMs: number;
  /**
   * From the PUT's answer to the moment the last client got its first answer from `to` (negative:
   * every client had it before the admin had the PUT's answer); null when a client never got one.
   */
  switchMs: number | null;
  /** Answers that were not 200, of requests in flight from the PUT until `settleMs` after the switch. */
  failed: number;
  /** Answers from `from` to requests sent after the PUT had answered (the resolve cache's doing). */
  staleAfterPut: number;
  /** Answers from `from` after the same client had had one from `to`: should be 0. */
  flipBacks: number;
  /** 200s of requests sent in the `beforeMs` before the PUT. */
  before: { requests: number; p50Ms: number | null; p99Ms: number | null };
  /** 200s of requests sent from the PUT until every client had switched. */
  during: { requests: number; p50Ms: number | null; p99Ms: number | null };
}

/** Nearest-rank percentile (p in 0..100); null for no values. */
export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

/** The middle value, or the mean of the two middle ones; null for no values. */
export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

function latencies(answers: readonly Answer[]) {
  const ms = answers.filter((a) => a.status === 200).map((a) => a.end - a.start);
  return { requests: ms.length, p50Ms: percentile(ms, 50), p99Ms: percentile(ms, 99) };
}

/**
 * `answers`: every answer of every client (any order); `clients`: how many clients ran.
 * `beforeMs`: the baseline window before the PUT; `settleMs`: how long after the switch failures
 * still count.
 */
export function analyseMove(
  answers: readonly Answer[],
  clients: number,
  move: Move,
  opts: { beforeMs: number; settleMs: number },
): MoveAnalysis {
  const byClient = new Map<number, Answer[]>();
  for (const a of answers) {
    if (a.end < move.putStart) continue;
    const list = byClient.get(a.client) ?? [];
    list.push(a);
    byClient.set(a.client, list);
  }
  let switchedAt: number | null = -Infinity;
  let flipBacks = 0;
  for (let c = 0; c < clients; c++) {
    const list = (byClient.get(c) ?? []).sort((a, b) => a.end - b.end);
    const first = list.find((a) => a.status === 200 && a.version === move.to);
    if (first === undefined) {
      switchedAt = null;
      continue;
    }
    if (switchedAt !== null) switchedAt = Math.max(switchedAt, first.end);
    flipBacks += list.filter(
      (a) => a.end > first.end && a.status === 200 && a.version === move.from,
    ).length;
  }
  // Never switched: the window runs to the last answer.
  const windowEnd = switchedAt ?? answers.reduce((t, a) => Math.max(t, a.end), move.putEnd);
  const failed = answers.filter(
    (a) => a.status !== 200 && a.end >= move.putStart && a.start <= windowEnd + opts.settleMs,
  ).length;
  const staleAfterPut = answers.filter(
    (a) => a.start >= move.putEnd && a.status === 200 && a.version === move.from,
  ).length;
  const before = answers.filter(
    (a) => a.start >= move.putStart - opts.beforeMs && a.start < move.putStart,
  );
  const during = answers.filter((a) => a.start >= move.putStart && a.start <= windowEnd);
  return {
    from: move.from,
    to: move.to,
    putMs: move.putEnd - move.putStart,
    switchMs: switchedAt === null ? null : switchedAt - move.putEnd,
    failed,
    staleAfterPut,
    flipBacks,
    before: latencies(before),
    during: latencies(during),
  };
}
