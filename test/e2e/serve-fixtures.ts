/**
 * Shared by the service's e2e tests: tiny real stacks (image, audio) on disk, PNGs of fixture images, the app
 * booted as main.ts boots it (createApp + AppModule) with a config from a test environment, an
 * inference client whose calls a test can hold, and a strict Prometheus text parser.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import sharp from 'sharp';
import request from 'supertest';
import { AppModule } from '../../src/app/app.module.js';
import { type AppConfig, loadConfig } from '../../src/app/config.js';
import { createApp } from '../../src/app/configure-app.js';
import type { StartInferenceClient } from '../../src/app/inference/inference.service.js';
import { loadFashionMnist } from '../../src/gim/data/idx.js';
import { audioModuleConfigs } from '../../src/gim/encoders/audio-modules.js';
import { AudioEncoderStack } from '../../src/gim/encoders/audio-stack.js';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { defaultAudioAdapter } from '../../src/gim/modality/audio.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import {
  type OpenApiDocument,
  OpenApiContract,
  type RecordedResponse,
} from '../helpers/openapi-contract.js';
import { untrainedDraft } from '../helpers/stack-draft.js';
import { InferenceClient } from '../../src/inference/inference-client.js';

export const ROOT = new URL('../..', import.meta.url).pathname;
export const FIXTURE = join(ROOT, 'test/fixtures/fashion-mnist-mini');
export const TINY_ADAPTER = defaultImageAdapter({ mean: [0.3], std: [0.3] });

/** A 3-layer stack (4, 8, 8 channels) with seeded random weights: tiny, but a real stack. */
export function tinyStack(seed: number): EncoderStack {
  return EncoderStack.create(TINY_ADAPTER, visionModuleConfigs(TINY_ADAPTER, [4, 8, 8]), seed);
}

/** A 6-layer audio stack (5 convs of 8 channels, a GRU of 8 units), 0.2 s training windows. */
export function tinyAudioStack(seed: number): AudioEncoderStack {
  return AudioEncoderStack.create(
    defaultAudioAdapter({ windowSamples: 3200 }),
    audioModuleConfigs(8, 8),
    seed,
  );
}

/** Publishes `stack` (image or audio) as the next version of `name`. Needs a tfjs backend. */
export async function publishStack(
  modelsDir: string,
  name: string,
  stack: EncoderStack | AudioEncoderStack,
  labels: string[],
): Promise<void> {
  await new StackStore(modelsDir).publish(name, await untrainedDraft(stack), { labels });
}

/**
 * PNGs of the first `count` test images of the fixture, 28x28 8-bit grey as the dataset is: the
 * server decodes them inline (`pngDecodesInline`); other tests' images go through sharp.
 */
export async function fixturePngs(count: number): Promise<Buffer[]> {
  const ds = await loadFashionMnist(FIXTURE, 'test');
  const batch = await ds.read(Int32Array.from({ length: count }, (_, i) => i));
  const size = 28 * 28;
  return Promise.all(
    Array.from({ length: count }, (_, i) =>
      sharp(
        Buffer.from(
          batch.images.subarray(i * size, (i + 1) * size).map((v) => Math.round(v * 255)),
        ),
        { raw: { width: 28, height: 28, channels: 1 } },
      )
        .toColourspace('b-w') // sharp writes RGB from 1-channel raw unless told
        .png()
        .toBuffer(),
    ),
  );
}

export { freePort } from '../../bench/server.js';

export interface TestApp {
  app: NestFastifyApplication;
  /** Every route Fastify registered, as `get /v1/models/{name}` (HEAD and /docs* left out). */
  routes: string[];
  server: Server;
  config: AppConfig;
}

/** Boots the service like main.ts does, without listening (supertest listens per request). */
export async function bootApp(
  env: Record<string, string>,
  startInferenceClient?: StartInferenceClient,
): Promise<TestApp> {
  const config = loadConfig({ GIM_BACKEND: 'wasm', ...env });
  const app = await createApp(AppModule.forRoot(config, { startInferenceClient }), config, {
    logger: ['fatal', 'error'],
    abortOnError: false,
  });
  const routes: string[] = [];
  app
    .getHttpAdapter()
    .getInstance()
    .addHook('onRoute', ({ method, url }) => {
      for (const m of [method].flat()) {
        if (m !== 'HEAD' && !url.startsWith('/docs')) {
          routes.push(`${m.toLowerCase()} ${url.replace(/:(\w+)/g, '{$1}')}`);
        }
      }
    });
  recordAnswers(app);
  await app.init();
  await app.getHttpAdapter().getInstance().ready();
  return { app, routes, server: app.getHttpServer() as Server, config };
}

/**
 * Records every answer of the app, and makes `app.close()` fail when one of them is not what
 * the served OpenAPI document says (status, content type, JSON body): every e2e test that boots
 * the app holds the document to the answers it saw, without asking.
 */
function recordAnswers(app: NestFastifyApplication): void {
  const recorded: RecordedResponse[] = [];
  const fastify = app.getHttpAdapter().getInstance();
  fastify.addHook('onSend', async (req, reply, payload) => {
    const url = req.routeOptions.url;
    if (url?.startsWith('/docs') || req.url.startsWith('/docs')) return payload; // the document itself
    recorded.push({
      method: req.method,
      route: req.is404 || url === undefined ? undefined : url.replace(/:(\w+)/g, '{$1}'),
      url: req.url.length > 120 ? `${req.url.slice(0, 120)}...` : req.url,
      status: reply.statusCode,
      contentType: reply.getHeader('content-type')?.toString(),
      body: typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : undefined,
    });
    return payload;
  });
  // Nest's application proxy drops assignments (so define the property), and its `close` looks
  // the method up at each call (so take the prototype's).
  const prototype = Object.getPrototypeOf(app) as { close: () => Promise<void> };
  const close = (): Promise<void> => prototype.close.call(app);
  let checked = false;
  Object.defineProperty(app, 'close', {
    configurable: true,
    value: async (): Promise<void> => {
      if (checked) return close();
      checked = true;
      // Asked for at the end, without a socket: no request of the test's is counted beside it.
      const document = (await fastify.inject({ url: '/docs-json' })).json<OpenApiDocument>();
      await close();
      const contract = new OpenApiContract(document);
      for (const r of recorded) contract.record(r);
      assert.deepEqual(contract.problems(), [], 'answers the OpenAPI document does not describe');
    },
  });
}

/** Polls /health/ready until 200 (and asserts it comes). */
export async function waitReady(server: Server, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await request(server).get('/health/ready');
    if (res.status === 200) return;
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.ok(Date.now() < deadline, `not ready after ${timeoutMs} ms: ${res.body.error}`);
    await sleep(50);
  }
}

export async function until(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A gate a wrapped call waits at until the test opens it. */
export class Gate {
  private open!: () => void;
  readonly opened = new Promise<void>((resolve) => (this.open = resolve));
  /** Calls that reached the gate. */
  arrivals = 0;

  async pass(): Promise<void> {
    this.arrivals++;
    await this.opened;
  }

  release(): void {
    this.open();
  }
}

/** Starts a real inference client whose `load` and `embed` calls wait at the given gates. */
export function gatedClient(gates: { load?: Gate; embed?: Gate }): StartInferenceClient {
  return async (opts) => {
    const client = await InferenceClient.start(opts);
    const load = client.load.bind(client);
    const embed = client.embed.bind(client);
    client.load = async (ref) => {
      await gates.load?.pass();
      return load(ref);
    };
    client.embed = async (...args) => {
      await gates.embed?.pass();
      return embed(...args);
    };
    return client;
  };
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = `[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\.)*"`;
// Go's ParseFloat, which Prometheus uses, takes Inf and NaN in any case (prom-client writes Nan).
const VALUE = '[-+]?(?:[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?|[iI][nN][fF]|[nN][aA][nN])';
const SAMPLE_RE = new RegExp(
  `^(${NAME})(?:\\{(${LABEL}(?:,${LABEL})*)?\\})? (${VALUE})(?: -?[0-9]+)?$`,
);
const HELP_RE = new RegExp(`^# HELP ${NAME} .*$`);
const TYPE_RE = new RegExp(`^# TYPE ${NAME} (counter|gauge|histogram|summary|untyped)$`);

/** Parses Prometheus text format 0.0.4 strictly: any other line fails the assertion. */
export function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || HELP_RE.test(line) || TYPE_RE.test(line)) continue;
    const m = SAMPLE_RE.exec(line);
    assert.ok(m, `not a Prometheus text line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1] as string] = pair[2] as string;
    }
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The sum of the samples of `name` whose labels include `labels`. */
export function metric(
  samples: Sample[],
  name: string,
  labels: Record<string, string> = {},
): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

export async function scrape(server: Server): Promise<Sample[]> {
  const res = await request(server).get('/metrics');
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'] ?? '', /^text\/plain; version=0\.0\.4/);
  return parsePrometheus(res.text);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'lengths differ');
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}
