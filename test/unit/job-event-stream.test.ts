/**
 * The Server-Sent Events stream of a job (src/app/jobs/job-event-stream.ts) over a real HTTP
 * connection and a real events.ndjson: it reads the file from a byte offset, resumes after
 * Last-Event-ID with exactly the later events (seq = line number), and sends a line only once it
 * is complete (a writer, or another replica's, may be in the middle of it).
 */
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer, get, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyReply } from 'fastify';
import { JobEventStream } from '../../src/app/jobs/job-event-stream.js';
import type { JobRecord } from '../../src/jobs/job-record.js';
import { JobStore } from '../../src/jobs/job-store.js';
import { sseFields } from '../helpers/sse.js';

const ID = '20261207-031502-3fa9c1';
const T = '2026-12-07T03:15:02.000Z';

interface Received {
  ids: string[];
  events: { id: string; event: string; data: Record<string, unknown> }[];
  pings: number;
  ended: Promise<void>;
  close(): void;
}

/** Opens the stream and collects what arrives (ids, events, pings) until it ends. */
function open(url: string, lastEventId?: number): Promise<Received> {
  return new Promise((resolve, reject) => {
    const headers = lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) };
    const req = get(url, { headers }, (res: IncomingMessage) => {
      res.setEncoding('utf8');
      let buffer = '';
      let done: () => void = () => undefined;
      const got: Received = {
        ids: [],
        events: [],
        pings: 0,
        ended: new Promise<void>((r) => (done = r)),
        close: () => req.destroy(),
      };
      res.on('data', (chunk: string) => {
        buffer += chunk;
        for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          if (block === ': ping') got.pings++;
          const fields = sseFields(block);
          if (fields.event === undefined) continue;
          const id = fields.id ?? fields.event;
          got.ids.push(id);
          got.events.push({ id, event: fields.event, data: JSON.parse(fields.data ?? '{}') });
        }
      });
      res.on('end', done);
      res.on('close', done);
      resolve(got);
    });
    req.on('error', reject);
  });
}

async function until(what: string, ok: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('JobEventStream', () => {
  let dir: string;
  let store: JobStore;
  let server: Server;
  let url: string;
  let events: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-sse-'));
    store = new JobStore(dir);
    await store.create({ id: ID } as JobRecord);
    events = store.paths(ID).events;
    // The job's record says "succeeded" once the test has written the final status.
    let final = false;
    const jobs = {
      paths: (id: string) => store.paths(id),
      read: async () => {
        final = final || (await store.readEvents(ID)).some((e) => e.status === 'succeeded');
        return { status: final ? 'succeeded' : 'running' } as JobRecord;
      },
    };
    const controller = { subscribe: () => () => undefined };
    server = createServer((req, res) => {
      const after = Number(req.headers['last-event-id'] ?? 0);
      const reply = { hijack: () => undefined, raw: res } as unknown as FastifyReply;
      // Pings (and so polls) every 50 ms: a poll has happened once two pings came after a write.
      void new JobEventStream(jobs, controller, ID, after, 50).pipe(reply);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    for (const status of ['queued', 'starting', 'running'])
      await store.appendEvent(ID, 'status', T, { status });
    for (let step = 1; step <= 3; step++) await store.appendEvent(ID, 'progress', T, { step });
  });

  after(async () => {
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  test(
    'resumes mid-file after Last-Event-ID; a partial last line waits for its newline',
    { timeout: 60_000 },
    async () => {
      const full = await open(url);
      const tail = await open(url, 4);
      const past = await open(url, 9);
      await until('the six events', () => full.ids.length === 6 && tail.ids.length === 2);
      assert.deepEqual(full.ids, ['1', '2', '3', '4', '5', '6']);
      assert.deepEqual(tail.ids, ['5', '6'], 'exactly the events after Last-Event-ID 4');
      assert.deepEqual(
        tail.events.map((e) => e.data.step),
        [2, 3],
      );

      // Line 7 written in two parts, as a slow writer (or a network volume) may show it.
      const line7 = `${JSON.stringify({ step: 4, seq: 7, t: T, type: 'progress' })}\n`;
      await appendFile(events, line7.slice(0, 20));
      const pings = [full.pings, tail.pings, past.pings];
      await until(
        'two polls of every stream after the partial write',
        () =>
          full.pings >= pings[0]! + 2 && tail.pings >= pings[1]! + 2 && past.pings >= pings[2]! + 2,
      );
      assert.deepEqual([full.ids.length, tail.ids.length, past.ids.length], [6, 2, 0]);
      await appendFile(events, line7.slice(20));
      await until('event 7', () => full.ids.length === 7 && tail.ids.length === 3);
      assert.deepEqual(full.events.at(-1), {
        id: '7',
        event: 'progress',
        data: { step: 4, t: T },
      });
      assert.deepEqual(past.ids, [], 'nothing up to Last-Event-ID 9');

      // A new store counts the lines again (this one counted its own appends only).
      const writer = new JobStore(dir);
      for (const status of ['publishing', 'succeeded'])
        await writer.appendEvent(ID, 'status', T, { status });
      await until('the end of every stream', () =>
        [full, tail, past].every((r) => r.ids.at(-1) === 'end'),
      );
      await Promise.all([full.ended, tail.ended, past.ended]);
      assert.deepEqual(full.ids, ['1', '2', '3', '4', '5', '6', '7', '8', '9', 'end']);
      assert.deepEqual(tail.ids, ['5', '6', '7', '8', '9', 'end']);
      assert.deepEqual(past.ids, ['end'], 'resumed after the last event: only the end');
    },
  );
});
