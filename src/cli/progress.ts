import cliProgress from 'cli-progress';
import type { TrainJobOptions } from '../gim/training/train-stack.js';

/** Formats seconds as h:mm:ss or m:ss. */
export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${r}` : `${m}:${r}`;
}

/**
 * Progress of long work: a bar on a terminal, otherwise a log line (with rate and ETA) at most
 * every `intervalMs`, on stderr so that stdout stays machine-readable.
 */
export class Progress {
  private bar: cliProgress.SingleBar | null = null;
  private lastLog = 0;

  constructor(
    private readonly label: string,
    private readonly intervalMs = 10_000,
    private readonly stream: NodeJS.WriteStream = process.stderr,
    /** Also gets every `log` line (e.g. the `log` events of --progress-json). */
    private readonly onLine?: (line: string) => void,
  ) {}

  start(total: number, payload: Record<string, string> = {}): void {
    if (this.stream.isTTY) {
      this.bar = new cliProgress.SingleBar(
        {
          stream: this.stream,
          format: `${this.label} {bar} {percentage}% | {value}/{total} | {status} | ETA {eta_formatted}`,
          hideCursor: true,
          etaBuffer: 50,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(total, 0, { status: '', ...payload });
    }
    this.lastLog = Date.now();
  }

  update(value: number, total: number, status: string, etaSeconds?: number): void {
    if (this.bar) {
      this.bar.setTotal(total);
      this.bar.update(value, { status });
      return;
    }
    const now = Date.now();
    if (now - this.lastLog < this.intervalMs && value < total) return;
    this.lastLog = now;
    const eta = etaSeconds === undefined ? '' : ` | ETA ${duration(etaSeconds)}`;
    this.stream.write(
      `${this.label} ${value}/${total} (${((100 * value) / total).toFixed(1)}%) | ${status}${eta}\n`,
    );
  }

  log(line: string): void {
    if (this.bar) this.stream.write('\n');
    this.stream.write(`${line}\n`);
    this.onLine?.(line);
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}

/** Progress bar/log lines of a training run. */
export function progressCallbacks(progress: Progress): NonNullable<TrainJobOptions['callbacks']> {
  let started = false;
  return {
    onLog: (line) => progress.log(line),
    onStep: (p) => {
      if (!started) {
        progress.start(p.totalSteps);
        started = true;
      }
      const losses = p.losses
        .map((l, i) => `m${i + 1} ${l === null ? '-' : l.toFixed(3)}`)
        .join(' ');
      const phase = p.module === null ? '' : `module ${p.module} `;
      progress.update(
        p.globalStep,
        p.totalSteps,
        `${phase}epoch ${p.epoch}/${p.epochs} | ${losses} | ${Math.round(p.unitsPerSecond)} ${p.unitName}/s`,
        p.etaSeconds,
      );
    },
    onEpochEnd: (e) =>
      progress.log(
        `epoch ${e.epoch}${e.module === null ? '' : ` (module ${e.module})`} done in ${duration(e.seconds)}: ` +
          e.losses.map((l, i) => `m${i + 1} ${l === null ? '-' : l.toFixed(4)}`).join(' '),
      ),
  };
}
