/**
 * Entry of the self-contained GPU smoke bundle (`npm run smoke:bundle`, scripts/build-smoke-bundle.ts):
 * `gim smoke-gpu` as its own program, on WebGPU (Dawn over Vulkan) by default, with the stack
 * copied beside it. esbuild bundles this file with tfjs, tfjs-backend-webgpu and Dawn's loader
 * into one smoke.mjs; dawn.node and the models sit next to it.
 */
import { CommanderError } from 'commander';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isGimError } from '../gim/errors.js';
import { smokeGpuCommand } from './commands/smoke-gpu.js';

const here = dirname(fileURLToPath(import.meta.url));
const program = smokeGpuCommand({
  name: 'gim-smoke-gpu',
  backend: 'webgpu',
  modelsDir: join(here, 'models'),
}).showHelpAfterError();

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode);
  if (isGimError(e)) {
    process.stderr.write(`gim-smoke-gpu: ${e.message} (${e.code})\n`);
    // As gim: 2 for bad usage or input, 1 for a failed check or a missing GPU.
    process.exit(['invalid_argument', 'not_found', 'invalid_data'].includes(e.code) ? 2 : 1);
  }
  throw e;
}
// Dawn's instance can keep the event loop alive after the device is gone.
process.exit(0);
