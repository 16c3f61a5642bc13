/**
 * The execArgv of this process's worker threads (the inference worker, the audio decode pool).
 */
import { Worker } from 'node:worker_threads';

/** Run from TypeScript (swc-node: tests, `npm run gim`) this file is `.ts`; compiled, `.js`. */
export const OWN_EXTENSION = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const SWC_REGISTER = '@swc-node/register/esm-register';

export interface WorkerArgv {
  execArgv: string[];
  /** Flags of this process that Node refuses in a worker (`--trace-gc`, ...), left out. */
  dropped: string[];
}

let memo: WorkerArgv | undefined;

/**
 * The parent's `process.execArgv` (Node's default too), so under
 * `node --import @swc-node/register/esm-register` a worker runs that `--import` again and can load
 * `.ts`. Loader hooks registered with `module.register()` are not inherited by workers in Node 20:
 * a `.ts` build of a process without the flag gets it added. Code given to `-e`/`-p` and
 * `--input-type` are dropped (a worker refuses `--input-type` without `-e`), and so are the flags
 * Node refuses in workers (it names them when an empty worker is created with them): a process
 * started with `--trace-gc` would otherwise get no worker at all.
 */
export function workerExecArgv(): WorkerArgv {
  if (memo !== undefined) return memo;
  const argv: string[] = [];
  for (let i = 0; i < process.execArgv.length; i++) {
    const arg = process.execArgv[i] as string;
    if (['-e', '--eval', '-p', '--print', '--input-type'].includes(arg)) i++;
    else if (!/^--(eval|print|input-type)=/.test(arg)) argv.push(arg);
  }
  if (OWN_EXTENSION === '.ts' && !argv.some((a) => a.includes('@swc-node/register'))) {
    argv.push('--import', import.meta.resolve(SWC_REGISTER));
  }
  const refused = refusedFlags(argv);
  memo = {
    execArgv: argv.filter((arg) => !refused.has(arg.split('=')[0] as string)),
    dropped: [...refused],
  };
  return memo;
}

/** The flags of `execArgv` that Node refuses in a worker (checked synchronously, nothing runs). */
function refusedFlags(execArgv: string[]): Set<string> {
  try {
    void new Worker('', { eval: true, execArgv }).terminate();
    return new Set();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw e;
    const message = (e as Error).message;
    const listed = message.slice(message.lastIndexOf(':') + 1).split(',');
    return new Set(listed.map((f) => f.trim().split('=')[0] as string).filter(Boolean));
  }
}
