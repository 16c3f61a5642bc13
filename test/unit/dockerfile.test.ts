import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { validate } from 'dockerfile-utils';

/**
 * The Dockerfile cannot be built in `npm test` (CI builds the cpu target in `npm run image:test`;
 * the gpu target needs a CUDA base image that cannot be had here), so it is checked statically:
 * dockerfile-utils' validator, then this project's rules. Each rule is shown to fail on a
 * purpose-made mistake.
 */

const ROOT = new URL('../..', import.meta.url).pathname;
const DOCKERFILE = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const RUNTIME_STAGES = ['cpu', 'gpu'];
const DIGEST_PIN = /^[a-z0-9./-]+(:[\w.-]+)@sha256:[0-9a-f]{64}$/;

interface Stage {
  name: string;
  from: string;
  instructions: Instruction[];
}

const content = (i: Instruction): string => i.getArgumentsContent() ?? '';

function stages(text: string): { stages: Stage[]; args: Map<string, string> } {
  const df = DockerfileParser.parse(text);
  const args = new Map<string, string>();
  const out: Stage[] = [];
  for (const instruction of df.getInstructions()) {
    if (instruction.getKeyword() === 'FROM') {
      const parts = (instruction.getArgumentsContent() ?? '').split(/\s+/);
      const as = parts.findIndex((p) => p.toUpperCase() === 'AS');
      out.push({
        name: as >= 0 ? (parts[as + 1] as string) : `stage-${out.length}`,
        from: parts[0] as string,
        instructions: [],
      });
    } else if (out.length === 0 && instruction.getKeyword() === 'ARG') {
      // Global ARGs (before the first FROM): the ones a FROM can use.
      const [name, ...value] = content(instruction).split('=');
      args.set(name as string, value.join('='));
    } else out.at(-1)?.instructions.push(instruction);
  }
  return { stages: out, args };
}

const of = (stage: Stage | undefined, keyword: string): Instruction[] =>
  stage?.instructions.filter((i) => i.getKeyword() === keyword) ?? [];

/** Every problem this project's rules find in a Dockerfile's text. */
function problems(text: string): string[] {
  const found: string[] = [];
  for (const d of validate(text))
    found.push(`dockerfile-utils: ${d.message} (line ${d.range.start.line + 1})`);
  const { stages: all, args } = stages(text);
  const names = new Set(all.map((s) => s.name));

  // Bases: a build argument (mirrors, air-gapped builds) whose default is tag + digest pinned.
  for (const stage of all) {
    if (names.has(stage.from)) continue;
    const arg = /^\$\{(\w+)\}$/.exec(stage.from)?.[1];
    if (!arg) {
      found.push(`stage ${stage.name}: base "${stage.from}" is not a build argument`);
      continue;
    }
    const value = args.get(arg);
    if (value === undefined) found.push(`stage ${stage.name}: ARG ${arg} has no default`);
    else if (!DIGEST_PIN.test(value))
      found.push(`ARG ${arg}: "${value}" is not pinned by tag and digest`);
  }
  if (all.at(-1)?.name !== 'gpu')
    found.push(`the default (last) target is ${all.at(-1)?.name}, not gpu`);

  for (const name of RUNTIME_STAGES) {
    const stage = all.find((s) => s.name === name);
    if (!stage) {
      found.push(`no ${name} target`);
      continue;
    }
    const user = of(stage, 'USER').at(-1);
    if (!user || /^(root|0)(:|$)/.test(content(user)))
      found.push(`${name}: the last USER is ${user ? content(user) : 'unset'} (root)`);
    const entrypoint = of(stage, 'ENTRYPOINT').at(-1);
    if (!entrypoint || !content(entrypoint).trim().startsWith('['))
      found.push(`${name}: ENTRYPOINT is not in JSON (exec) form: signals would go to a shell`);
    else if (/\bnpm\b/.test(content(entrypoint)))
      found.push(`${name}: ENTRYPOINT runs npm, which does not forward SIGTERM`);
    const health = of(stage, 'HEALTHCHECK').at(-1);
    if (!health || !content(health).includes('/health/ready'))
      found.push(`${name}: no HEALTHCHECK on /health/ready`);
    const env = of(stage, 'ENV').map(content).join(' ');
    if (!/NODE_ENV=production/.test(env)) found.push(`${name}: NODE_ENV=production is not set`);
    // No sources, no dev dependencies: from the build stage only dist/ is copied.
    for (const copy of of(stage, 'COPY')) {
      const text = copy.getTextContent().replace(/^COPY\s+/, '');
      if (/--from=build\b/.test(text) && !/\/app\/dist\b/.test(text))
        found.push(`${name}: copies "${text}" from the build stage (dev dependencies or sources)`);
      if (!/--from=/.test(text) && /(^|\s)(\.\/)?src\b/.test(text))
        found.push(`${name}: copies the sources`);
    }
  }
  const gpu = all.find((s) => s.name === 'gpu');
  const gpuEnv = of(gpu, 'ENV').map(content).join(' ');
  for (const needed of ['TF_FORCE_GPU_ALLOW_GROWTH=true', 'CUDA_CACHE_PATH='])
    if (!gpuEnv.includes(needed)) found.push(`gpu: ${needed} is not set`);

  // The optional native install can fail silently: each native stage must assert its binding.
  for (const [stageName, pkg] of [
    ['native-cpu', 'tfjs-node'],
    ['native-gpu', 'tfjs-node-gpu'],
  ] as const) {
    const runs = of(
      all.find((s) => s.name === stageName),
      'RUN',
    ).map(content);
    if (
      !runs.some((r) =>
        r.includes(`test -f node_modules/@tensorflow/${pkg}/lib/napi-v8/tfjs_binding.node`),
      )
    )
      found.push(`${stageName}: no check that the ${pkg} binding was built`);
  }

  for (const stage of all) {
    for (const run of of(stage, 'RUN').map(content)) {
      if (/apt-get install/.test(run) && !/--no-install-recommends/.test(run))
        found.push(`${stage.name}: apt-get install without --no-install-recommends`);
      if (/apt-get (update|install)/.test(run) && !/rm -rf \/var\/lib\/apt\/lists/.test(run))
        found.push(`${stage.name}: apt lists are left in the layer`);
      if (/npm ci[^&|;]*--omit=optional/.test(run))
        found.push(
          `${stage.name}: npm ci --omit=optional drops sharp's and swc's platform binaries`,
        );
    }
    const shell = of(stage, 'SHELL').at(-1);
    const usesPipes = of(stage, 'RUN').some(
      (r) => /\|/.test(content(r)) && !/\|\|/.test(content(r)),
    );
    if (usesPipes && !(shell && /-eu|pipefail/.test(content(shell))))
      found.push(`${stage.name}: RUN uses pipes without a failing shell (SHELL -eu / pipefail)`);
  }
  return found;
}

describe('Dockerfile', () => {
  test('passes dockerfile-utils and the project rules', () => {
    assert.deepEqual(problems(DOCKERFILE), []);
  });

  const mistakes: [string, (text: string) => string, RegExp][] = [
    ['an unknown instruction', (t) => `${t}\nFOO bar\n`, /Unknown instruction: FOO/],
    [
      'an unpinned base',
      (t) => t.replace(/(ARG NODE_IMAGE=node:20-bookworm-slim)@sha256:[0-9a-f]+/, '$1'),
      /NODE_IMAGE.*not pinned/,
    ],
    [
      'a base that is not a build argument',
      (t) => t.replace('FROM ${CUDA_IMAGE} AS gpu', 'FROM ubuntu:22.04 AS gpu'),
      /gpu: base "ubuntu:22.04"/,
    ],
    [
      'root as the last user',
      (t) => t.replace(/(FROM \$\{CUDA_IMAGE\} AS gpu[\s\S]*)USER 10001:10001/, '$1USER root'),
      /gpu: the last USER is root/,
    ],
    [
      'a shell-form entrypoint',
      (t) =>
        t.replace(
          /ENTRYPOINT \[[^\n]*\]\nCMD \["serve"\]\n\n# -+\n# gpu/,
          'ENTRYPOINT node dist/src/main.js\n\n# ---\n# gpu',
        ),
      /cpu: ENTRYPOINT is not in JSON/,
    ],
    [
      'npm start as entrypoint',
      (t) =>
        t.replace(/ENTRYPOINT \[[^\n]*\]\nCMD \["serve"\]\s*$/, 'ENTRYPOINT ["npm", "start"]\n'),
      /gpu: ENTRYPOINT runs npm/,
    ],
    [
      'the binding check removed',
      (t) =>
        t.replace(
          'test -f node_modules/@tensorflow/tfjs-node-gpu/lib/napi-v8/tfjs_binding.node',
          'true',
        ),
      /native-gpu: no check that the tfjs-node-gpu binding/,
    ],
    [
      'dev dependencies in the runtime',
      (t) =>
        t.replace(
          'COPY --from=prod-deps /app/node_modules ./node_modules\nRUN rm -rf node_modules/@tensorflow/tfjs-node-gpu',
          'COPY --from=build /app/node_modules ./node_modules\nRUN rm -rf node_modules/@tensorflow/tfjs-node-gpu',
        ),
      /cpu: copies "--from=build \/app\/node_modules/,
    ],
    [
      'apt lists kept',
      (t) =>
        t.replace(' \\\n && rm -rf /var/lib/apt/lists/* \\\n && groupadd', ' \\\n && groupadd'),
      /apt lists are left/,
    ],
    [
      'no healthcheck',
      (t) =>
        t.replace(
          /HEALTHCHECK --interval=10s --timeout=3s --start-period=600s[^\n]*\n[^\n]*\n/,
          '',
        ),
      /gpu: no HEALTHCHECK/,
    ],
    [
      'GPU memory growth not set',
      (t) => t.replace('TF_FORCE_GPU_ALLOW_GROWTH=true', 'TF_FORCE_GPU_ALLOW_GROWTH=false'),
      /gpu: TF_FORCE_GPU_ALLOW_GROWTH=true is not set/,
    ],
    [
      'cpu as the default target',
      (t) => `${t}\nFROM \${NODE_IMAGE} AS extra\n`,
      /default \(last\) target is extra/,
    ],
  ];
  for (const [what, mutate, expected] of mistakes) {
    test(`catches ${what}`, () => {
      const mutated = mutate(DOCKERFILE);
      assert.notEqual(mutated, DOCKERFILE, 'the mutation did not apply: update the test');
      const found = problems(mutated);
      assert.ok(
        found.some((p) => expected.test(p)),
        `expected ${expected} in:\n${found.join('\n')}`,
      );
    });
  }

  test('the entrypoint is valid sh and execs node (signals reach it)', () => {
    const script = join(ROOT, 'docker/entrypoint.sh');
    execFileSync('sh', ['-n', script]);
    const text = readFileSync(script, 'utf8');
    assert.match(text, /exec node \/app\/dist\/src\/main\.js/);
    // The CPU count logic on this machine: cores - 1, from 1 to 16; an explicit value wins.
    const size = (env: Record<string, string>): number =>
      Number(
        execFileSync('sh', [script, 'threadpool-size'], {
          env: { ...process.env, ...env },
        }).toString(),
      );
    const auto = size({ UV_THREADPOOL_SIZE: '' });
    const cores = Number(execFileSync('nproc').toString());
    assert.equal(auto, Math.min(16, Math.max(1, cores - 1)));
    assert.equal(size({ UV_THREADPOOL_SIZE: '7' }), 7);
  });
});
