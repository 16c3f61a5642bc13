/**
 * Installs the native tfjs backend (`@tensorflow/tfjs-node`, or `-gpu`) without its download:
 * places a libtensorflow where the package looks for it, compiles the package's N-API binding
 * against it, and checks that the backend loads and computes.
 *
 *   npm run native:install                                   # libtensorflow from `pip download tensorflow-cpu`
 *   npm run native:install -- --from ./tensorflow_cpu-2.21.0-cp311-cp311-manylinux_2_27_x86_64.whl
 *   npm run native:install -- --from ./libtensorflow-cpu-linux-x86_64-2.9.1.tar.gz
 *   npm run native:install -- --from /opt/libtensorflow        # a directory with include/ and lib/
 *   npm run native:install -- --from pip:tensorflow==2.21.0 --package tfjs-node-gpu
 *   npm run native:install -- --check                        # only load and check what is installed
 *
 * Why: tfjs-node's install script downloads libtensorflow 2.9.1 and a prebuilt binding from
 * Google's storage. Air-gapped machines cannot, and GPUs newer than libtensorflow 2.9.1's
 * CUDA 11.2 want a newer TensorFlow. Any TensorFlow release whose shared library exports the C
 * API serves: the official libtensorflow tarballs, or a TensorFlow wheel, whose
 * `libtensorflow_cc.so.2` carries the C API and whose `include/` has its headers.
 *
 * Nothing here runs at `npm ci`: on a machine that can download, the package's own install works.
 * Needs g++, make and python3 (node-gyp), Node's headers (npm's `nodedir`, or the `include/node`
 * beside this Node), `unzip` for wheels and `tar` for tarballs.
 * Exit status: 0 installed and checked, 1 failed, 2 bad usage.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, link, mkdir, readFile, readdir, rm, symlink } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Command, CommanderError, Option } from 'commander';
import { writeJsonAtomic } from '../src/gim/store/atomic.js';
import { duration } from '../src/cli/progress.js';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '..');
const PACKAGES = ['tfjs-node', 'tfjs-node-gpu'] as const;
type NativePackage = (typeof PACKAGES)[number];

/**
 * TensorFlow releases whose C API this project has seen tfjs-node 4.22's binding build against,
 * load, and pass the parity suite with (`npm test` on the `tensorflow` backend). Others may work:
 * the check at the end decides, and the suite shows it.
 */
export const KNOWN_GOOD_TENSORFLOW = ['2.9.1', '2.21.0'] as const;

/** The file tfjs-node's install script tests for before it downloads (deps-constants.js). */
const LEGACY_LIB = 'libtensorflow.so.2.9.1';

interface Staged {
  /** Directory with include/ (headers) and lib/ (shared libraries), as libtensorflow tarballs. */
  include: string;
  lib: string;
  /** The library that exports the C API and the framework library it needs, as file names. */
  cApi: string;
  framework: string;
  version: string | null;
  source: string;
}

const started = performance.now();
function log(line: string): void {
  process.stderr.write(`[native ${duration((performance.now() - started) / 1000)}] ${line}\n`);
}

async function main(argv: string[]): Promise<void> {
  const program = new Command('native:install')
    .description('Build the native tfjs backend against a local libtensorflow (no download).')
    .addOption(
      new Option(
        '--from <source>',
        'a TensorFlow wheel, a libtensorflow tarball or directory, or pip:<requirement>',
      ).default(process.env.GIM_LIBTENSORFLOW ?? 'pip:tensorflow-cpu'),
    )
    .addOption(
      new Option('--package <name>', 'which tfjs native package to build')
        .choices(PACKAGES)
        .default('tfjs-node'),
    )
    .option('--check', 'only load and check the installed backend', false)
    .option('--cache <dir>', 'where pip downloads and extracted wheels are kept', '.tmp/native')
    .exitOverride();
  program.parse(argv, { from: 'user' });
  const opts = program.opts<{
    from: string;
    package: NativePackage;
    check: boolean;
    cache: string;
  }>();
  const pkgDir = join(ROOT, 'node_modules', '@tensorflow', opts.package);
  if (!opts.check) {
    await ensurePackage(opts.package);
    const cache = resolve(ROOT, opts.cache);
    const staged = await stage(opts.from, cache);
    reportVersion(staged);
    await placeLibrary(staged, pkgDir);
    await buildBinding(pkgDir);
    await writeJsonAtomic(join(pkgDir, 'deps', 'gim-native.json'), {
      source: staged.source,
      version: staged.version,
      cApi: staged.cApi,
      builtAt: new Date().toISOString(),
    });
  }
  await check(opts.package);
}

/** The package's files, without its install script (which would download). */
async function ensurePackage(name: NativePackage): Promise<void> {
  const dir = join(ROOT, 'node_modules', '@tensorflow', name);
  if (existsSync(join(dir, 'package.json'))) {
    log(`@tensorflow/${name} is in node_modules`);
    return;
  }
  const manifest = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as {
    optionalDependencies?: Record<string, string>;
  };
  const version = manifest.optionalDependencies?.[`@tensorflow/${name}`];
  if (!version) throw new Error(`package.json has no optional dependency @tensorflow/${name}`);
  const others = PACKAGES.filter((p) => p !== name).filter(
    (p) => !existsSync(join(ROOT, 'node_modules', '@tensorflow', p, 'package.json')),
  );
  log(`npm install --no-save --ignore-scripts @tensorflow/${name}@${version}`);
  await run('npm', ['install', '--no-save', '--ignore-scripts', `@tensorflow/${name}@${version}`], {
    cwd: ROOT,
    maxBuffer: 16 << 20,
  });
  // npm also lays down the other optional native package from the lockfile; without a binding
  // it would only be a failed import on every start, so it goes unless it was there before.
  for (const p of others)
    await rm(join(ROOT, 'node_modules', '@tensorflow', p), { recursive: true, force: true });
}

/** Brings the source to a directory with include/ and lib/. */
async function stage(from: string, cache: string): Promise<Staged> {
  if (from.startsWith('pip:')) return stageWheel(await pipDownload(from.slice(4), cache), cache);
  const path = resolve(from);
  if (!existsSync(path)) throw new Error(`--from ${from}: no such file or directory`);
  if (path.endsWith('.whl')) return stageWheel(path, cache);
  if (/\.(tar\.gz|tgz)$/.test(path)) {
    const dir = join(cache, 'tarball', basename(path).replace(/\.(tar\.gz|tgz)$/, ''));
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    log(`extracting ${basename(path)}`);
    await run('tar', ['-xzf', path, '-C', dir]);
    return stageDirectory(dir, path);
  }
  return stageDirectory(path, path);
}

async function pipDownload(requirement: string, cache: string): Promise<string> {
  const dir = join(cache, 'wheels');
  await mkdir(dir, { recursive: true });
  log(`pip download --no-deps ${requirement}`);
  const { stdout } = await run(
    'python3',
    ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '-d', dir, requirement],
    { maxBuffer: 16 << 20 },
  ).catch((e: Error & { stderr?: string }) => {
    throw new Error(
      `pip download ${requirement} failed: ${(e.stderr ?? e.message).trim().split('\n').pop()}`,
    );
  });
  const saved = /(?:Saved|File was already downloaded) (\S+\.whl)/.exec(stdout)?.[1];
  if (!saved) throw new Error(`pip download ${requirement}: no wheel in its output:\n${stdout}`);
  return resolve(saved);
}

/** A TensorFlow wheel: `tensorflow/libtensorflow_cc.so.2` exports the C API. */
async function stageWheel(wheel: string, cache: string): Promise<Staged> {
  const name = basename(wheel);
  const version = /^tensorflow(?:_cpu|_gpu|_intel)?-(\d+\.\d+\.\d+)/.exec(name)?.[1] ?? null;
  const dir = join(cache, 'wheel', name.replace(/\.whl$/, ''));
  const lib = join(dir, 'tensorflow');
  if (!existsSync(join(lib, 'libtensorflow_cc.so.2')) || !existsSync(join(lib, 'include'))) {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    log(`extracting the C API library and headers from ${name}`);
    await run(
      'unzip',
      [
        '-q',
        '-o',
        wheel,
        'tensorflow/libtensorflow_cc.so.2',
        'tensorflow/libtensorflow_framework.so.2',
        'tensorflow/include/*',
        '-d',
        dir,
      ],
      { maxBuffer: 16 << 20 },
    ).catch((e: Error & { code?: unknown }) => {
      throw new Error(
        e.code === 'ENOENT'
          ? 'unzip is not installed (Debian: apt-get install unzip)'
          : `${name} has no tensorflow/libtensorflow_cc.so.2 (not a TensorFlow wheel with the C API?): ${e.message}`,
      );
    });
  } else log(`using ${relative(ROOT, dir)} (extracted before)`);
  return {
    include: join(lib, 'include'),
    lib,
    cApi: 'libtensorflow_cc.so.2',
    framework: 'libtensorflow_framework.so.2',
    version,
    source: wheel,
  };
}

/** A libtensorflow release layout: include/tensorflow/c/c_api.h, lib/libtensorflow.so.2.x.y. */
async function stageDirectory(dir: string, source: string): Promise<Staged> {
  const include = join(dir, 'include');
  if (!existsSync(join(include, 'tensorflow', 'c', 'c_api.h')))
    throw new Error(`${source}: no include/tensorflow/c/c_api.h (expected a libtensorflow layout)`);
  const lib = join(dir, 'lib');
  const files = existsSync(lib) ? await readdir(lib) : [];
  const pick = (stem: string) =>
    files
      .filter((f) => new RegExp(`^${stem}\\.so\\.\\d+\\.\\d+\\.\\d+$`).test(f))
      .sort()
      .pop() ?? files.find((f) => f === `${stem}.so.2`);
  const cApi = pick('libtensorflow');
  const framework = pick('libtensorflow_framework');
  if (!cApi || !framework)
    throw new Error(
      `${source}: lib/ needs libtensorflow.so.2.* and libtensorflow_framework.so.2.*`,
    );
  const version = /\.so\.(\d+\.\d+\.\d+)$/.exec(cApi)?.[1] ?? null;
  return { include, lib, cApi, framework, version, source };
}

function reportVersion(s: Staged): void {
  const known =
    s.version !== null && (KNOWN_GOOD_TENSORFLOW as readonly string[]).includes(s.version);
  log(
    `libtensorflow ${s.version ?? '(version unknown)'} from ${relative(ROOT, s.source) || s.source}` +
      (known
        ? ' (known to work with tfjs-node 4.22)'
        : `: not one of ${KNOWN_GOOD_TENSORFLOW.join(', ')}, known to work; the check below decides`),
  );
}

/**
 * deps/lib: the libraries (hard links where the file system allows, else copies, so the package
 * does not depend on the cache) and the names the binding links (-ltensorflow,
 * -ltensorflow_framework) and tfjs-node's install script tests; deps/include: the headers the
 * binding's sources include, found by the preprocessor.
 */
async function placeLibrary(s: Staged, pkgDir: string): Promise<void> {
  const deps = join(pkgDir, 'deps');
  await rm(deps, { recursive: true, force: true });
  const lib = join(deps, 'lib');
  await mkdir(lib, { recursive: true });
  for (const f of [s.cApi, s.framework]) {
    const from = join(s.lib, f);
    await link(from, join(lib, f)).catch(() => copyFile(from, join(lib, f)));
  }
  const aliases: [string, string][] = [
    ['libtensorflow.so', s.cApi],
    [LEGACY_LIB, s.cApi],
    ['libtensorflow_framework.so', s.framework],
  ];
  // The binding records the library's SONAME (e.g. libtensorflow.so.2): provide that name too.
  for (const [stem, target] of [
    ['libtensorflow', s.cApi],
    ['libtensorflow_framework', s.framework],
  ] as const) {
    const soname = await readSoname(join(s.lib, target));
    if (soname && soname !== target) aliases.push([soname, target]);
    if (!soname && !target.endsWith('.so.2')) aliases.push([`${stem}.so.2`, target]);
  }
  for (const [name, target] of aliases)
    if (name !== target && !existsSync(join(lib, name))) await symlink(target, join(lib, name));
  const headers = await headerClosure(pkgDir, s.include);
  for (const h of headers) {
    await mkdir(dirname(join(deps, 'include', h)), { recursive: true });
    await copyFile(join(s.include, h), join(deps, 'include', h));
  }
  log(`placed ${s.cApi} + ${s.framework} and ${headers.length} headers in ${relative(ROOT, deps)}`);
}

async function readSoname(file: string): Promise<string | null> {
  try {
    const { stdout } = await run('readelf', ['-d', file], { maxBuffer: 16 << 20 });
    return /\(SONAME\)\s+Library soname: \[([^\]]+)\]/.exec(stdout)?.[1] ?? null;
  } catch {
    return null;
  }
}

/** The headers under `include` that the binding's sources reach (g++ -MM; -MG skips Node's). */
async function headerClosure(pkgDir: string, include: string): Promise<string[]> {
  const sources = (await readdir(join(pkgDir, 'binding')))
    .filter((f) => f.endsWith('.cc'))
    .map((f) => join(pkgDir, 'binding', f));
  const { stdout } = await run(
    'g++',
    [
      '-std=c++17',
      '-MM',
      '-MG',
      '-DNAPI_VERSION=8',
      `-I${dirname(pkgDir)}`,
      `-I${include}`,
      ...sources,
    ],
    { maxBuffer: 64 << 20 },
  );
  const prefix = `${include}/`;
  const found = new Set<string>();
  for (const token of stdout.split(/[\s\\]+/))
    if (token.startsWith(prefix)) found.add(token.slice(prefix.length));
  if (!found.has('tensorflow/c/c_api.h'))
    throw new Error(`the binding's sources do not reach ${prefix}tensorflow/c/c_api.h`);
  return [...found].sort();
}

/** Node's headers for node-gyp without a download: npm's nodedir, or the ones beside this Node. */
async function nodeHeaders(): Promise<string | null> {
  const configured = await run('npm', ['config', 'get', 'nodedir'])
    .then(({ stdout }) => stdout.trim())
    .catch(() => '');
  if (configured && configured !== 'undefined' && configured !== 'null') return configured;
  const beside = resolve(dirname(process.execPath), '..');
  return existsSync(join(beside, 'include', 'node', 'node_api.h')) ? beside : null;
}

/** node-pre-gyp --build-from-source: never the prebuilt addon, which was built for 2.9.1. */
async function buildBinding(pkgDir: string): Promise<void> {
  const nodedir = await nodeHeaders();
  if (!nodedir)
    log('warning: no Node headers found (npm config nodedir); node-gyp will try to download them');
  log(`compiling the binding (node-pre-gyp install --build-from-source)`);
  const t0 = performance.now();
  const output: string[] = [];
  const code = await new Promise<number>((resolveCode, reject) => {
    const child = spawn('npm', ['run', 'build-addon-from-source'], {
      cwd: pkgDir,
      env: { ...process.env, ...(nodedir ? { npm_config_nodedir: nodedir } : {}) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (b: Buffer) => output.push(b.toString());
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', reject);
    child.on('close', (c) => resolveCode(c ?? 1));
  });
  if (code !== 0) {
    const text = output.join('');
    const errors = text
      .split('\n')
      .filter((l) => /error|not found|No such file/i.test(l) && !l.startsWith('node-pre-gyp'))
      .slice(0, 12);
    throw new Error(
      `building the binding failed (exit ${code}):\n${errors.join('\n') || text.slice(-4000)}`,
    );
  }
  log(`binding compiled in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

/**
 * In a fresh process: the package imports, registers the `tensorflow` backend, reports its
 * libtensorflow version, and a conv2d forward and filter gradient match the pure-JS cpu backend.
 */
async function check(name: NativePackage): Promise<void> {
  const probe = `
    const tf = await import('@tensorflow/tfjs');
    await import('@tensorflow/${name}');
    if (tf.getBackend() !== 'tensorflow') throw new Error('backend is ' + tf.getBackend());
    const version = tf.backend().binding.TF_Version;
    const x = tf.randomNormal([2, 9, 9, 3], 0, 1, 'float32', 1);
    const w = tf.randomNormal([3, 3, 3, 4], 0, 1, 'float32', 2);
    const f = () => { const y = tf.conv2d(x, w, 2, 'same'); const g = tf.grad((k) => tf.conv2d(x, k, 2, 'same').square().sum())(w); return [y.dataSync(), g.dataSync()]; };
    const native = f();
    await tf.setBackend('cpu');
    const cpu = f();
    const rel = native.map((a, i) => { let d = 0, m = 0; a.forEach((v, j) => { d = Math.max(d, Math.abs(v - cpu[i][j])); m = Math.max(m, Math.abs(cpu[i][j])); }); return d / m; });
    console.log(JSON.stringify({ version, forward: rel[0], filterGradient: rel[1] }));
  `;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', probe], {
    cwd: ROOT,
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' },
    maxBuffer: 16 << 20,
  }).catch((e: Error & { stderr?: string }) => {
    throw new Error(
      `@tensorflow/${name} does not load: ${(e.stderr ?? e.message).trim().split('\n').slice(-6).join('\n')}`,
    );
  });
  const result = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
    version: string;
    forward: number;
    filterGradient: number;
  };
  const ok = result.forward < 1e-4 && result.filterGradient < 1e-4;
  log(
    `@tensorflow/${name}: backend 'tensorflow', libtensorflow ${result.version}; conv2d vs cpu: ` +
      `forward ${result.forward.toExponential(1)}, filter gradient ${result.filterGradient.toExponential(1)} ` +
      `(relative max error, limit 1e-4)${ok ? '' : ' — TOO LARGE'}`,
  );
  if (!ok)
    throw new Error('the native backend loads but its conv2d disagrees with the cpu backend');
  const binding = join(ROOT, 'node_modules', '@tensorflow', name, 'lib');
  const hash = createHash('sha256');
  for (const d of await readdir(binding))
    hash.update(await readFile(join(binding, d, 'tfjs_binding.node')));
  log(
    `ok (binding sha256 ${hash.digest('hex').slice(0, 12)}); select it with GIM_BACKEND=${name === 'tfjs-node' ? 'tensorflow' : 'tensorflow-gpu'} or let the service pick the best`,
  );
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (e: unknown) => {
    if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
    process.stderr.write(`native:install: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
