import { resolve } from 'node:path';
import type { LogLevel } from '@nestjs/common';
import { BACKEND_NAMES, type BackendName } from '../gim/backend/index.js';

/**
 * The service's settings, read from the environment once at start and passed explicitly from then
 * on. This file is the only reader of `process.env` in the service.
 */
export interface AppConfig {
  readonly port: number;
  readonly host: string;
  /** Absolute path of the versioned encoder stacks (`models/<name>/<version>/...`). */
  readonly modelsDir: string;
  /** Forces a tfjs backend; undefined picks the best available one. */
  readonly backend?: BackendName;
  readonly logLevel: LogLevelName;
}

/** Nest injection token of the `AppConfig`. */
export const APP_CONFIG = Symbol('APP_CONFIG');

/** From the most to the least severe: a level enables itself and every level before it. */
export const LOG_LEVEL_NAMES = ['error', 'warn', 'log', 'debug', 'verbose'] as const;
export type LogLevelName = (typeof LOG_LEVEL_NAMES)[number];

/** Thrown by `loadConfig`; its message lists every bad variable, one a line. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';

  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const problems: string[] = [];
  // Reads one variable: unset or blank gives the fallback, a value `parse` rejects is recorded.
  const setting = <T>(
    name: string,
    expected: string,
    fallback: T,
    parse: (text: string) => T | undefined,
  ): T => {
    const text = env[name]?.trim();
    if (!text) return fallback;
    const value = parse(text);
    if (value === undefined) problems.push(`${name}: expected ${expected}, got "${text}"`);
    return value ?? fallback;
  };

  const config: AppConfig = {
    port: setting('PORT', 'an integer from 1 to 65535', 8080, parsePort),
    host: setting('HOST', 'a host name or address', '0.0.0.0', (text) => text),
    modelsDir: resolve(
      process.cwd(),
      setting('MODELS_DIR', 'a directory path', 'models', (text) => text),
    ),
    backend: setting<BackendName | undefined>(
      'GIM_BACKEND',
      `one of ${BACKEND_NAMES.join(', ')}`,
      undefined,
      (text) => oneOf(BACKEND_NAMES, text),
    ),
    logLevel: setting('LOG_LEVEL', `one of ${LOG_LEVEL_NAMES.join(', ')}`, 'log', (text) =>
      oneOf(LOG_LEVEL_NAMES, text),
    ),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/** The Nest logger levels enabled by a `LOG_LEVEL` (`fatal` is always on). */
export function nestLogLevels(level: LogLevelName): LogLevel[] {
  return ['fatal', ...LOG_LEVEL_NAMES.slice(0, LOG_LEVEL_NAMES.indexOf(level) + 1)];
}

function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

function oneOf<T extends string>(values: readonly T[], text: string): T | undefined {
  return values.find((value) => value === text);
}
