#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { isGimError } from '../gim/errors.js';
import { errorOf, exitCodeOf } from './exit-codes.js';
import { ProgressEventWriter } from './progress-events.js';
import { trainCommand } from './commands/train.js';
import { probeCommand } from './commands/probe.js';
import { embedCommand } from './commands/embed.js';
import { modelsCommand } from './commands/models.js';
import { classifierCommand } from './commands/classifier.js';
import { classifyCommand } from './commands/classify.js';
import { smokeGpuCommand } from './commands/smoke-gpu.js';
import { goldenCommand } from './commands/golden.js';
import { promoteCommand } from './commands/promote.js';

const program = new Command('gim')
  .description('Greedy InfoMax: train encoder stacks module by module, probe and embed with them')
  .showHelpAfterError()
  .addCommand(trainCommand())
  .addCommand(probeCommand())
  .addCommand(promoteCommand())
  .addCommand(embedCommand())
  .addCommand(modelsCommand())
  .addCommand(classifierCommand())
  .addCommand(classifyCommand())
  .addCommand(goldenCommand())
  .addCommand(smokeGpuCommand());

/**
 * Exit status (see exit-codes.ts): 0 success; 1 runtime failure; 2 bad usage or input (including
 * an incompatible head); 3 stopped by SIGTERM/SIGINT (train: after writing a checkpoint at the
 * step it stopped; nothing published).
 */
const throwInsteadOfExit = (cmd: Command): void => {
  cmd.exitOverride();
  cmd.commands.forEach(throwInsteadOfExit);
};
throwInsteadOfExit(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  const status = exitCodeOf(e);
  if (e instanceof CommanderError) {
    // Rejected before the command ran (commander printed why): the event stream, if one was
    // asked for, still gets its `end`.
    const target = progressJsonTarget(process.argv);
    if (status !== 0 && target !== undefined) {
      const events = ProgressEventWriter.open(target, { intervalMs: 0 });
      events.emit({ type: 'end', status: 'failed', exitCode: status, error: errorOf(e) });
      events.close();
    }
    process.exit(status);
  }
  if (isGimError(e)) {
    process.stderr.write(`gim: ${e.message} (${e.code})\n`);
    process.exit(status);
  }
  throw e;
}

function progressJsonTarget(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--progress-json') return argv[i + 1];
    if (arg.startsWith('--progress-json=')) return arg.slice('--progress-json='.length);
  }
  return undefined;
}
