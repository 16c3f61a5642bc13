/**
 * Labels as a resource: an entity tag of a versioned directory's labels (for compare-and-set
 * moves) and the history of every move, `<dir>/labels.history.ndjson`, append-only, one JSON
 * object a line, written under the same lock as labels.json.
 */
import { createHash } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { isErrno } from './atomic.js';

export const LABELS_HISTORY = 'labels.history.ndjson';

/** One label move: who, when, from what to what (null: unset), why, and a gate's verdict. */
export interface LabelMove {
  at: string;
  by: string;
  label: string;
  from: number | null;
  to: number | null;
  reason?: string;
  /** A promotion gate's result, when one decided the move (or refused it: `to` unchanged). */
  gate?: Record<string, unknown>;
}

/** Who moves labels and why, recorded with each move. */
export interface LabelMoveMeta {
  by: string;
  reason?: string;
  gate?: Record<string, unknown>;
}

/** A strong entity tag of a label map: the same labels always give the same tag. */
export function labelsEtag(labels: Record<string, number>): string {
  const sorted = Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1));
  return `"${createHash('sha256').update(JSON.stringify(sorted)).digest('hex').slice(0, 20)}"`;
}

/** The moves from `before` to `after`, in label order. */
export function diffLabels(
  before: Record<string, number>,
  after: Record<string, number>,
  meta: LabelMoveMeta,
  at: string,
): LabelMove[] {
  const labels = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
  return labels
    .filter((label) => before[label] !== after[label])
    .map((label) => ({
      at,
      by: meta.by,
      label,
      from: before[label] ?? null,
      to: after[label] ?? null,
      ...(meta.reason !== undefined ? { reason: meta.reason } : {}),
      ...(meta.gate !== undefined ? { gate: meta.gate } : {}),
    }));
}

/** Appends moves (one write, fsynced): called under the labels lock. */
export async function appendLabelMoves(path: string, moves: LabelMove[]): Promise<void> {
  if (moves.length === 0) return;
  const handle = await open(path, 'a');
  try {
    await handle.write(moves.map((m) => `${JSON.stringify(m)}\n`).join(''));
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/** Every recorded move, oldest first; a line cut short by a crash is skipped. */
export async function readLabelMoves(path: string): Promise<LabelMove[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return [];
    throw e;
  }
  const moves: LabelMove[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    try {
      moves.push(JSON.parse(line) as LabelMove);
    } catch {
      // A partial last line of a crashed writer.
    }
  }
  return moves;
}

/**
 * The target `label` had before its current one: the `from` of the latest move that set it to
 * what it is now. Undefined when the history knows no earlier target.
 */
export function previousTarget(
  moves: LabelMove[],
  label: string,
  current: number | undefined,
): number | undefined {
  for (let i = moves.length - 1; i >= 0; i--) {
    const move = moves[i] as LabelMove;
    if (move.label !== label || move.from === move.to) continue; // a refusal moved nothing
    if (move.to !== (current ?? null)) return undefined; // history and labels.json disagree
    return move.from ?? undefined;
  }
  return undefined;
}
