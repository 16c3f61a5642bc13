import { Command, Option } from 'commander';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, hostname } from 'node:os';
import { dirname } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { BACKEND_NAMES, selectBackend, type BackendName } from '../../gim/backend/index.js';
import { GimError } from '../../gim/errors.js';
import { fmt, type GoldenComparison } from '../../gim/golden/golden.js';
import { runSmoke, type SmokeResult, type ThroughputRow } from '../../gim/smoke/smoke.js';
import { StackStore } from '../../gim/store/stack-store.js';
import type { WebGpuInfo } from '../../gim/backend/webgpu.js';
import { int, intList, positiveNumber } from '../shared.js';

export const SMOKE_BACKENDS = [...BACKEND_NAMES, 'webgpu'] as const;
export type SmokeBackendName = (typeof SMOKE_BACKENDS)[number];
const REFERENCES = ['cpu', 'wasm'] as const;

interface SmokeCliOptions {
  model: string;
  modelsDir: string;
  backend?: SmokeBackendName;
  reference: (typeof REFERENCES)[number];
  allowCpu?: boolean;
  batchSizes: number[];
  reps: number;
  maxSeconds: number;
  referenceThroughput?: boolean;
  json?: string;
}

export interface SmokeCommandDefaults {
  /** The command's name (the bundle runs it as its own program). */
  name?: string;
  /** A fixed default instead of MODELS_DIR / `models` (the bundle's own copy). */
  modelsDir?: string;
  /** Default backend instead of GIM_BACKEND / the best available. */
  backend?: SmokeBackendName;
}

/** What is known about whether the backend computes on a GPU, and how it is known. */
export interface GpuEvidence {
  onGpu: boolean;
  /** One line per fact, for the report. */
  facts: string[];
  /** Why it is not on a GPU (null when it is). */
  reason: string | null;
}

export interface SmokeReport {
  ok: boolean;
  failures: string[];
  model: { name: string; version: number; modality: string; layers: number } | null;
  backend: {
    name: SmokeBackendName;
    tfjsBackend: string;
    devices: string[];
    gpu: GpuEvidence;
    fallbackReasons?: string[];
    kernels?: string[];
    adapter?: WebGpuInfo['adapter'];
    software?: string | null;
    features?: string[];
    limits?: Record<string, number>;
  };
  allowCpu: boolean;
  reference: { name: string } | null;
  golden: SmokeResult['golden'] | null;
  throughput: ThroughputRow[];
  environment: {
    node: string;
    platform: string;
    arch: string;
    cpus: number;
    host: string;
    tfjs: string;
    createdAt: string;
  };
}

export function smokeGpuCommand(defaults: SmokeCommandDefaults = {}): Command {
  const modelsDir = new Option('--models-dir <dir>', 'directory of versioned stacks');
  if (defaults.modelsDir !== undefined) modelsDir.default(defaults.modelsDir);
  else modelsDir.env('MODELS_DIR').default('models');
  const backend = new Option(
    '--backend <name>',
    'backend under test (default: the best available; webgpu: Dawn over Vulkan)',
  ).choices([...SMOKE_BACKENDS]);
  if (defaults.backend !== undefined) backend.default(defaults.backend);
  else backend.env('GIM_BACKEND');
  return new Command(defaults.name ?? 'smoke-gpu')
    .description(
      'GPU smoke test: the backend and its devices, golden embeddings on it against a CPU ' +
        'reference, throughput over batch sizes; exits 1 when not on a GPU (unless --allow-cpu) ' +
        'or when the embeddings differ',
    )
    .option('--model <ref>', 'stack: name, name@version or name@label', 'fashion-gim')
    .addOption(modelsDir)
    .addOption(backend)
    .addOption(
      new Option('--reference <name>', 'CPU backend the golden embeddings are compared with')
        .choices([...REFERENCES])
        .default('cpu'),
    )
    .option('--allow-cpu', 'run the checks on a CPU backend or a software GPU adapter too')
    .option(
      '--batch-sizes <list>',
      'throughput sweep at the deepest layer',
      intList,
      [1, 8, 32, 128],
    )
    .option('--reps <n>', 'timed batches per batch size, at most', int(1, 10000), 10)
    .option('--max-seconds <s>', 'time budget per batch size', positiveNumber, 3)
    .option('--reference-throughput', 'sweep the reference backend too (slow on cpu)')
    .option('--json <path>', 'write the report as JSON')
    .action(async (o: SmokeCliOptions) => {
      const report = await smokeGpu(o);
      process.stdout.write(formatSmokeReport(report));
      if (o.json !== undefined) {
        await mkdir(dirname(o.json), { recursive: true });
        await writeFile(o.json, `${JSON.stringify(report, null, 2)}\n`);
      }
      if (!report.ok) {
        const gpu = report.backend.gpu;
        if (!gpu.onGpu && !o.allowCpu)
          throw new GimError(
            'backend_unavailable',
            `not on a GPU: ${gpu.reason} (--allow-cpu runs the checks anyway)`,
          );
        throw new GimError('golden_mismatch', report.failures.join('; '));
      }
    });
}

/** Runs the smoke test and returns its report; throws only on bad input or a broken setup. */
export async function smokeGpu(o: SmokeCliOptions): Promise<SmokeReport> {
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const started = await startTarget(o.backend, log);
  const report: SmokeReport = {
    ok: false,
    failures: [],
    model: null,
    backend: started.backend,
    allowCpu: Boolean(o.allowCpu),
    reference: null,
    golden: null,
    throughput: [],
    environment: {
      node: process.version,
      platform: process.platform,
      arch: process.arch,
      cpus: cpus().length,
      host: hostname(),
      tfjs: tf.version.tfjs,
      createdAt: new Date().toISOString(),
    },
  };
  try {
    const gpu = report.backend.gpu;
    if (!gpu.onGpu) {
      if (!o.allowCpu) {
        report.failures.push(`not on a GPU: ${gpu.reason}`);
        return report;
      }
      log(`not on a GPU (${gpu.reason}); --allow-cpu: running the checks anyway`);
    }
    const { manifest, modules } = await new StackStore(o.modelsDir).load(o.model);
    report.model = {
      name: manifest.name,
      version: manifest.version,
      modality: manifest.modality,
      layers: manifest.modules.length,
    };
    report.reference = { name: o.reference };
    const result = await runSmoke({
      manifest,
      modules,
      target: {
        name: started.backend.name,
        tfjsBackend: started.backend.tfjsBackend,
        use: started.use,
      },
      reference: {
        name: o.reference,
        // Both are registered under their own names in tfjs.
        tfjsBackend: o.reference,
        use: async () => {
          await selectBackend({ force: o.reference });
        },
      },
      batchSizes: o.batchSizes,
      reps: o.reps,
      maxSecondsPerSize: o.maxSeconds,
      referenceThroughput: o.referenceThroughput,
      log,
    });
    report.golden = result.golden;
    report.throughput = result.throughput;
    if (!result.golden.vsReference.ok)
      report.failures.push(`against ${o.reference}: ${result.golden.vsReference.message}`);
    const stored = result.golden.vsManifest;
    if ('ok' in stored && !stored.ok)
      report.failures.push(`against the manifest: ${stored.message}`);
    report.ok = report.failures.length === 0;
    return report;
  } finally {
    started.dispose();
  }
}

interface StartedTarget {
  backend: SmokeReport['backend'];
  use: () => Promise<void>;
  dispose: () => void;
}

async function startTarget(
  name: SmokeBackendName | undefined,
  log: (line: string) => void,
): Promise<StartedTarget> {
  if (name === 'webgpu') {
    // Loaded only when asked for: Dawn and tfjs-backend-webgpu are development dependencies.
    const { startWebGpu } = await import('../../gim/backend/webgpu.js');
    const info = await startWebGpu();
    const a = info.adapter;
    log(`tfjs backend: webgpu (${info.devices.join(', ')})`);
    const facts = [
      `adapter: vendor '${a.vendor}', architecture '${a.architecture}', device '${a.device}'`,
      `description: '${a.description}'`,
      `isFallbackAdapter: ${a.isFallbackAdapter === null ? 'not reported' : a.isFallbackAdapter}`,
    ];
    return {
      backend: {
        name: 'webgpu',
        tfjsBackend: info.tfjsBackend,
        devices: info.devices,
        gpu: {
          onGpu: info.software === null,
          facts,
          reason: info.software === null ? null : `a software (CPU) adapter: ${info.software}`,
        },
        adapter: a,
        software: info.software,
        features: info.features,
        limits: info.limits,
      },
      use: async () => {
        await startWebGpu();
      },
      dispose: () => info.dispose(),
    };
  }
  const info = await selectBackend({ force: name as BackendName | undefined, log });
  return {
    backend: {
      name: info.name,
      tfjsBackend: info.tfjsBackend,
      devices: info.devices,
      gpu: await nativeGpuEvidence(info.name),
      fallbackReasons: info.fallbackReasons,
      kernels: info.kernels,
    },
    use: async () => {
      await selectBackend({ force: info.name });
    },
    dispose: () => {},
  };
}

/**
 * Whether libtensorflow computes on a GPU. tfjs-node lists no devices, but its binding records
 * whether TensorFlow's eager context has a GPU device: if so every tensor is copied to it and ops
 * run there (an op with no GPU kernel falls back to the CPU silently; per-op placement is not
 * visible through tfjs). TensorFlow also logs "Created device ... GPU:0 ... name: ..." on stderr
 * at load unless TF_CPP_MIN_LOG_LEVEL >= 1. `nvidia-smi -L` adds what the driver sees.
 */
async function nativeGpuEvidence(name: BackendName): Promise<GpuEvidence> {
  const facts: string[] = [];
  const smi = await nvidiaSmi();
  if (name !== 'tensorflow-gpu') {
    facts.push(`${name} computes on the CPU`);
    if (smi.gpus.length > 0) facts.push(`nvidia-smi sees ${smi.gpus.join('; ')}`);
    const reason =
      smi.gpus.length > 0
        ? `backend ${name} runs on the CPU although nvidia-smi lists a GPU ` +
          '(is @tensorflow/tfjs-node-gpu installed and built? see the skipped backends above)'
        : `backend ${name} runs on the CPU`;
    return { onGpu: false, facts, reason };
  }
  const b = tf.backend() as { isUsingGpuDevice?: unknown; isGPUPackage?: unknown };
  const usingGpu = b.isUsingGpuDevice === true;
  facts.push(
    `libtensorflow GPU device: ${usingGpu ? 'yes' : 'no'} (tfjs-node binding isUsingGpuDevice; ` +
      `package ${b.isGPUPackage === true ? 'tfjs-node-gpu' : 'not tfjs-node-gpu'})`,
  );
  facts.push(smi.gpus.length > 0 ? `nvidia-smi -L: ${smi.gpus.join('; ')}` : smi.note);
  if (usingGpu)
    facts.push(
      'per-op placement is not visible through tfjs-node: an op with no GPU kernel would run on ' +
        'the CPU unseen (TensorFlow\'s "Created device ... GPU:0" line on stderr names the GPU)',
    );
  return {
    onGpu: usingGpu,
    facts,
    reason: usingGpu
      ? null
      : 'tfjs-node-gpu loaded but TensorFlow created no GPU device (CUDA or cuDNN libraries ' +
        'missing or of the wrong version? TensorFlow says why on stderr at load when ' +
        'TF_CPP_MIN_LOG_LEVEL=0)',
  };
}

function nvidiaSmi(): Promise<{ gpus: string[]; note: string }> {
  return new Promise((resolve) => {
    execFile('nvidia-smi', ['-L'], { timeout: 10_000 }, (err, stdout) => {
      if (err) {
        const code = (err as { code?: unknown }).code;
        resolve({
          gpus: [],
          note:
            code === 'ENOENT' ? 'nvidia-smi: not on PATH' : `nvidia-smi -L failed: ${err.message}`,
        });
        return;
      }
      const gpus = stdout
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l.startsWith('GPU '));
      resolve({ gpus, note: gpus.length === 0 ? 'nvidia-smi -L lists no GPU' : '' });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The table

export function formatSmokeReport(r: SmokeReport): string {
  const lines: string[] = [];
  const b = r.backend;
  const m = r.model;
  lines.push(
    `gim smoke-gpu${m ? `: ${m.name}@${m.version} (${m.modality}, ${m.layers} layers)` : ''}`,
  );
  lines.push(`backend     ${b.name} (tfjs '${b.tfjsBackend}'): ${b.devices.join(', ')}`);
  if (b.fallbackReasons !== undefined && b.fallbackReasons.length > 0)
    lines.push(`skipped     ${b.fallbackReasons.join('; ')}`);
  lines.push(`on a GPU    ${b.gpu.onGpu ? 'yes' : `no: ${b.gpu.reason}`}`);
  for (const f of b.gpu.facts) lines.push(`            ${f}`);
  if (r.golden !== null && r.reference !== null) {
    const g = r.golden;
    lines.push(
      `golden      ${g.inputs} inputs, every layer; ${b.name} ${g.targetMs.toFixed(0)} ms, ` +
        `${r.reference.name} ${g.referenceMs.toFixed(0)} ms`,
    );
    lines.push(`  vs ${r.reference.name.padEnd(8)} ${describeComparison(g.vsReference)}`);
    const s = g.vsManifest;
    lines.push(
      `  vs stored  ${'skipped' in s ? `not checked: ${s.skipped}` : describeComparison(s)}`,
    );
  }
  if (r.throughput.length > 0) {
    lines.push(`throughput  layer ${r.throughput[0]?.layer} (median of the timed batches)`);
    const header = ['backend', 'batch', 'ms/batch', 'min ms', 'items/s', 'reps', 'warm-up ms'];
    const rows = r.throughput.map((t) => [
      t.backend,
      String(t.batchSize),
      t.msPerBatch.toFixed(2),
      t.msPerBatchMin.toFixed(2),
      t.itemsPerSecond.toFixed(0),
      String(t.reps),
      t.warmupMs.toFixed(0),
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
    const fmtRow = (row: string[]) =>
      `  ${row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')}`;
    lines.push(fmtRow(header));
    rows.forEach((row) => lines.push(fmtRow(row)));
  }
  lines.push(`result      ${r.ok ? 'ok' : `FAILED: ${r.failures.join('; ')}`}`);
  return `${lines.join('\n')}\n`;
}

function describeComparison(c: GoldenComparison): string {
  const where = c.worst ? ` (layer ${c.worst.layer}, input ${c.worst.input})` : '';
  const verdict = c.ok ? 'ok' : 'DIFFER';
  return (
    `${verdict}: max relative error ${fmt(c.maxRelError)}${where}, tolerance ${fmt(c.tolerance)}; ` +
    `recorded on ${c.expectedBackend}`
  );
}
