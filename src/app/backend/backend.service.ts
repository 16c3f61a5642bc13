import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { type BackendInfo, selectBackend } from '../../gim/backend/index.js';
import { isGimError } from '../../gim/errors.js';
import { APP_CONFIG, type AppConfig } from '../config.js';

export type BackendState =
  | { phase: 'selecting' }
  | { phase: 'ready'; info: BackendInfo }
  | { phase: 'failed'; reason: string };

/**
 * Selects the tfjs backend when the app starts and remembers the outcome. Selection is not awaited
 * by the bootstrap: the server listens (and answers liveness probes) while a slow backend such as
 * tfjs-node-gpu loads, and `/health/ready` tells when it is usable. The inference worker will own
 * the backend later; this service is the seam it takes over.
 */
@Injectable()
export class BackendService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(BackendService.name);
  private current: BackendState = { phase: 'selecting' };
  private selection: Promise<void> | undefined;

  constructor(@Inject(APP_CONFIG) private readonly config: AppConfig) {}

  get state(): BackendState {
    return this.current;
  }

  onApplicationBootstrap(): void {
    this.selection ??= this.select();
  }

  async onApplicationShutdown(): Promise<void> {
    // Let a selection still in flight settle rather than tear the app down under it.
    await this.selection;
  }

  private async select(): Promise<void> {
    const force = this.config.backend;
    this.logger.log(force ? `selecting tfjs backend ${force} (forced)` : 'selecting tfjs backend');
    try {
      const info = await selectBackend({ force, log: (line) => this.logger.log(line) });
      this.current = { phase: 'ready', info };
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      this.current = { phase: 'failed', reason };
      // A GimError's message says it all; anything else is a bug worth its stack.
      const stack = isGimError(error) || !(error instanceof Error) ? undefined : error.stack;
      this.logger.error(`the service stays unready: ${reason}`, stack);
    }
  }
}
