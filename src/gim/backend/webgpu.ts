/**
 * tfjs on WebGPU in Node, through Dawn's Node bindings (the `webgpu` package: `dawn.node`, which
 * drives the GPU through Vulkan on Linux). Not one of `selectBackend`'s backends: the service runs
 * on libtensorflow, and this is for checking a GPU machine that has a Vulkan driver (the NVIDIA
 * driver ships one) but no CUDA, cuDNN or libtensorflow (see `gim smoke-gpu --backend webgpu` and
 * the smoke bundle). Both packages are development dependencies, so they are imported on demand.
 */
import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';

/** What Dawn says about the adapter (GPUAdapterInfo), as plain data. */
export interface WebGpuAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** WebGPU's own verdict: a software adapter (or one with big performance caveats). */
  isFallbackAdapter: boolean | null;
}

export interface WebGpuInfo {
  name: 'webgpu';
  /** `tf.getBackend()` after start: 'webgpu'. */
  tfjsBackend: string;
  devices: string[];
  adapter: WebGpuAdapterInfo;
  /** Why the adapter is a CPU (software) one, or null for a hardware GPU. */
  software: string | null;
  features: string[];
  limits: Record<string, number>;
  /** Frees the backend and destroys the device: Dawn keeps the process alive until then. */
  dispose(): void;
}

export interface StartWebGpuOptions {
  /** Dawn's options for `create`, e.g. `backend=vulkan` or `adapter=<name substring>`. */
  dawnFlags?: string[];
  powerPreference?: 'high-performance' | 'low-power';
  /**
   * tfjs-webgpu runs some small ops on the CPU when their inputs are still there
   * (`WEBGPU_CPU_FORWARD`); false (the default here) keeps every kernel on the GPU.
   */
  cpuForward?: boolean;
}

/** Names of software rasterisers / CPU Vulkan drivers, as adapters report them. */
const SOFTWARE_RE = /swiftshader|llvmpipe|lavapipe|softpipe|basic render|\bsoftware\b|\bcpu\b/i;

/** Why `info` is a software (CPU) adapter, or null when nothing says so. */
export function softwareAdapter(info: WebGpuAdapterInfo): string | null {
  if (info.isFallbackAdapter === true) return 'the adapter reports isFallbackAdapter';
  for (const field of ['device', 'description', 'architecture', 'vendor'] as const) {
    const m = SOFTWARE_RE.exec(info[field]);
    if (m) return `adapter ${field} '${info[field]}' names a software renderer (${m[0]})`;
  }
  return null;
}

// The few Dawn types this module touches (the package's own types pull in all of @webgpu/types).
interface DawnAdapterInfo {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}
interface DawnAdapter {
  info: DawnAdapterInfo;
  isFallbackAdapter?: boolean;
  features: Iterable<string> & { has(name: string): boolean };
  limits: Record<string, number>;
  requestDevice(descriptor?: unknown): Promise<DawnDevice>;
}
interface DawnDevice {
  destroy(): void;
  lost: Promise<{ message: string }>;
}
interface Dawn {
  create(flags: string[]): {
    requestAdapter(options?: unknown): Promise<DawnAdapter | null>;
  };
  globals: Record<string, unknown>;
}

let started: WebGpuInfo | null = null;

/**
 * Makes tfjs's current backend `webgpu` on the first adapter Dawn gives (a discrete GPU before an
 * integrated or software one with 'high-performance'). Throws `backend_unavailable` when Dawn or
 * tfjs-backend-webgpu is not installed or there is no adapter (no Vulkan loader or driver).
 * Idempotent: a second call switches back to the same device.
 */
export async function startWebGpu(opts: StartWebGpuOptions = {}): Promise<WebGpuInfo> {
  if (started !== null) {
    await tf.setBackend('webgpu');
    return started;
  }
  const dawn = (await importOrExplain('webgpu', () => import('webgpu'))) as unknown as Dawn;
  // Import before navigator.gpu exists: the package then registers its kernels but not its own
  // backend factory, which would pick an adapter of its own.
  const { WebGPUBackend } = await importOrExplain(
    '@tensorflow/tfjs-backend-webgpu',
    () => import('@tensorflow/tfjs-backend-webgpu'),
  );
  // tfjs-webgpu reads GPUTextureUsage and friends as globals, as in a browser.
  for (const [name, value] of Object.entries(dawn.globals))
    if (!(name in globalThis))
      Object.defineProperty(globalThis, name, { value, configurable: true });
  const gpu = dawn.create(opts.dawnFlags ?? []);
  const adapter = await gpu.requestAdapter({
    powerPreference: opts.powerPreference ?? 'high-performance',
  });
  if (adapter === null)
    throw new GimError(
      'backend_unavailable',
      'no WebGPU adapter: Dawn found no usable Vulkan driver (it needs libvulkan.so.1 and an ICD, ' +
        'which the NVIDIA driver installs; see its warnings above)',
    );
  const info = adapterInfo(adapter);
  // tfjs's own factory asks for these (bigger buffers and workgroups than WebGPU's defaults).
  const wanted = [
    'maxComputeWorkgroupStorageSize',
    'maxComputeWorkgroupsPerDimension',
    'maxStorageBufferBindingSize',
    'maxBufferSize',
    'maxComputeWorkgroupSizeX',
    'maxComputeInvocationsPerWorkgroup',
  ];
  const limits: Record<string, number> = {};
  for (const name of wanted) {
    const v = adapter.limits[name];
    if (typeof v === 'number') limits[name] = v;
  }
  const features = [...adapter.features].sort();
  const device = await adapter.requestDevice({
    requiredFeatures: ['timestamp-query'].filter((f) => adapter.features.has(f)),
    requiredLimits: limits,
  });
  installNavigatorGpu(gpu);
  tf.env().set('WEBGPU_CPU_FORWARD', opts.cpuForward ?? false);
  if (tf.findBackendFactory('webgpu') !== null) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(device as never, adapter.info as never));
  if (!(await tf.setBackend('webgpu'))) {
    device.destroy();
    throw new GimError('backend_unavailable', 'the tfjs webgpu backend failed to initialize');
  }
  const label = [info.vendor, info.architecture, info.device].filter((s) => s !== '').join(' ');
  started = {
    name: 'webgpu',
    tfjsBackend: tf.getBackend(),
    devices: [`WebGPU (Dawn): ${label}${info.description ? ` — ${info.description}` : ''}`],
    adapter: info,
    software: softwareAdapter(info),
    features,
    limits,
    dispose: () => {
      if (tf.findBackend('webgpu') !== null) tf.removeBackend('webgpu');
      device.destroy();
      started = null;
    },
  };
  return started;
}

function adapterInfo(adapter: DawnAdapter): WebGpuAdapterInfo {
  const i = adapter.info;
  const fallback = i.isFallbackAdapter ?? adapter.isFallbackAdapter;
  return {
    vendor: i.vendor ?? '',
    architecture: i.architecture ?? '',
    device: i.device ?? '',
    description: i.description ?? '',
    isFallbackAdapter: typeof fallback === 'boolean' ? fallback : null,
  };
}

/** tfjs-webgpu checks `navigator.gpu`; Node 20 has no navigator, Node >= 21 one without gpu. */
function installNavigatorGpu(gpu: unknown): void {
  const g = globalThis as { navigator?: object };
  if (typeof g.navigator === 'object' && g.navigator !== null) {
    try {
      Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
      return;
    } catch {
      // a frozen navigator: replace it below
    }
  }
  Object.defineProperty(globalThis, 'navigator', {
    value: { ...(g.navigator ?? {}), gpu },
    configurable: true,
    writable: true,
  });
}

async function importOrExplain<T>(pkg: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new GimError(
      'backend_unavailable',
      `WebGPU needs the package ${pkg}, which does not load here: ${message.split('\n')[0]}`,
      { cause: e },
    );
  }
}
