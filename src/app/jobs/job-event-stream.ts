import type { FastifyReply } from 'fastify';
import type { JobController } from '../../jobs/job-controller.js';
import { isTerminal, type JobEvent } from '../../jobs/job-record.js';
import { type JobStore, readNewLines } from '../../jobs/job-store.js';

/** How often the events file is read: another replica's controller may be the one writing it. */
const POLL_MS = 500;

/**
 * One Server-Sent Events stream of a job's events.ndjson: each event as `id: <seq>`,
 * `event: <type>`, `data: <json>`; a `: ping` comment every `pingMs`; after the job's final status
 * (the file's last event is a terminal `status` and the job is still terminal) an `end` event, and
 * the response ends. New events are picked up by polling the file, and at once when this
 * process's controller reports a change.
 *
 * The file is read from where the previous read ended (a byte offset), whole lines only: a line
 * still being written is sent once its newline is there. An event's seq is its line number, so
 * the lines up to `after` (Last-Event-ID) are counted on the first read and skipped unparsed.
 */
export class JobEventStream {
  /** Bytes of events.ndjson read so far (up to the end of the last whole line). */
  private offset = 0;
  /** Whole lines read so far: the line number of the last one. */
  private lines = 0;

  constructor(
    private readonly store: Pick<JobStore, 'paths' | 'read'>,
    private readonly controller: Pick<JobController, 'subscribe'>,
    private readonly id: string,
    private after: number,
    private readonly pingMs: number,
  ) {}

  async pipe(reply: Pick<FastifyReply, 'hijack' | 'raw'>): Promise<void> {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    let closed = false;
    let wake: (() => void) | undefined;
    const unsubscribe = this.controller.subscribe((job) => {
      if (job.id === this.id) wake?.();
    });
    res.once('close', () => {
      closed = true;
      wake?.();
    });
    let lastPing = Date.now();
    let last: JobEvent | undefined;
    try {
      while (!closed) {
        const read = await this.readNew();
        for (const event of read.events) this.send(res, event);
        last = read.last ?? last;
        if (last && isFinalStatus(last) && (await this.finished())) {
          res.write(`event: end\ndata: ${JSON.stringify({ status: last.status })}\n\n`);
          break;
        }
        if (Date.now() - lastPing >= this.pingMs) {
          res.write(': ping\n\n');
          lastPing = Date.now();
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(POLL_MS, this.pingMs));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
    } catch (e) {
      // The job was deleted, or its files are unreadable: end the stream, the client reconnects.
      if (!closed) res.write(`event: error\ndata: ${JSON.stringify({ error: String(e) })}\n\n`);
    } finally {
      unsubscribe();
      if (!closed) res.end();
    }
  }

  /**
   * The lines appended since the last read: the events among them after `after`, and the last
   * event of the file so far (sent or not: a client that resumes after the final status still
   * gets its `end`).
   */
  private async readNew(): Promise<{ events: JobEvent[]; last?: JobEvent }> {
    const read = await readNewLines(this.store.paths(this.id).events, this.offset);
    this.offset = read.offset;
    const events: JobEvent[] = [];
    let last: JobEvent | undefined;
    for (const [i, line] of read.lines.entries()) {
      this.lines += 1;
      const final = i === read.lines.length - 1;
      if ((this.lines <= this.after && !final) || line === '') continue;
      last = JSON.parse(line) as JobEvent;
      if (last.seq > this.after) events.push(last);
    }
    return { events, last };
  }

  private send(res: NodeJS.WritableStream, event: JobEvent): void {
    const { seq, type, ...data } = event;
    res.write(`id: ${seq}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
    this.after = seq;
  }

  private async finished(): Promise<boolean> {
    const job = await this.store.read(this.id);
    return job === null || isTerminal(job.status);
  }
}

function isFinalStatus(event: JobEvent): boolean {
  return (
    event.type === 'status' && typeof event.status === 'string' && isTerminal(event.status as never)
  );
}
