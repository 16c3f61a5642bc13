#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { isGimError } from '../gim/errors.js';
import { trainCommand } from './commands/train.js';
import { probeCommand } from './commands/probe.js';
import { embedCommand } from './commands/embed.js';
import { modelsCommand } from './commands/models.js';
import { classifierCommand } from './commands/classifier.js';
import { classifyCommand } from './commands/classify.js';
import { smokeGpuCommand } from './commands/smoke-gpu.js';
import { goldenCommand } from './commands/golden.js';

/** Exit codes: 1 runtime failure, 2 bad usage or input (including an incompatible head). */
const EXIT_CODES: Record<string, number> = {
  invalid_argument: 2,
  not_found: 2,
  invalid_data: 2,
  unsupported_media: 2,
  conflict: 2,
};

const program = new Command('gim')
  .description('Greedy InfoMax: train encoder stacks module by module, probe and embed with them')
  .showHelpAfterError()
  .addCommand(trainCommand())
  .addCommand(probeCommand())
  .addCommand(embedCommand())
  .addCommand(modelsCommand())
  .addCommand(classifierCommand())
  .addCommand(classifyCommand())
  .addCommand(goldenCommand())
  .addCommand(smokeGpuCommand());

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode);
  if (isGimError(e)) {
    process.stderr.write(`gim: ${e.message} (${e.code})\n`);
    process.exit(EXIT_CODES[e.code] ?? 1);
  }
  throw e;
}
