import type { FastifyReply } from 'fastify';
import type { JobController } from '../../jobs/job-controller.js';
import { isTerminal, type JobEvent } from '../../jobs/job-record.js';
import type { JobStore } from '../../jobs/job-store.js';

/** How often the events file is read: another replica's controller may be the one writing it. */
const POLL_MS = 500;

/**
 * One Server-Sent Events stream of a job's events.ndjson: each event as `id: <seq>`,
 * `event: <type>`, `data: <json>`; a `: ping` comment every `pingMs`; after the job's final status
 * (the last event sent is a terminal `status` and the job is still terminal) an `end` event, and
 * the response ends. New events are picked up by polling the file, and at once when this
 * process's controller reports a change.
 */
export class JobEventStream {
  constructor(
    private readonly store: JobStore,
    private readonly controller: JobController,
    private readonly id: string,
    private after: number,
    private readonly pingMs: number,
  ) {}

  async pipe(reply: FastifyReply): Promise<void> {
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
        const events = await this.store.readEvents(this.id, this.after);
        for (const event of events) this.send(res, event);
        last = events.at(-1) ?? last;
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
