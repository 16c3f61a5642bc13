import { Injectable, ServiceUnavailableException } from '@nestjs/common';
import type { BackendInfo } from '../../gim/backend/index.js';
import { GimError } from '../../gim/errors.js';
import { InferenceService, type UnavailableStack } from '../inference/inference.service.js';
import { Lifecycle } from '../lifecycle/lifecycle.service.js';

export interface LiveStatus {
  status: 'ok';
}

export interface ReadyStatus {
  status: 'ready';
  backend: BackendInfo;
  /** Stacks loaded and warmed up, as `name@version`. */
  models: string[];
  /** PRELOAD stacks left out because their files are damaged (the replica is ready without them). */
  unavailable: UnavailableStack[];
}

@Injectable()
export class HealthService {
  constructor(
    private readonly inference: InferenceService,
    private readonly lifecycle: Lifecycle,
  ) {}

  live(): LiveStatus {
    return { status: 'ok' };
  }

  /**
   * Throws a 503 (error_type `not_ready`) until the inference worker is up and every PRELOAD stack
   * is loaded and warmed up or known to be damaged on disk (listed in `unavailable`: every replica
   * shares the models directory, so this one stays in the load balancer for the other stacks);
   * for good if the worker or a warm-up failed otherwise; again while a worker that died is
   * restarted and its stacks loaded again. From SIGTERM on: 503 `shutting_down`.
   */
  ready(): ReadyStatus {
    // First: a draining replica must leave the load balancer even if its worker is fine.
    if (this.lifecycle.draining) {
      throw new GimError(
        'shutting_down',
        'shutting down: finishing the requests it has, taking no new ones from the load balancer',
      );
    }
    const state = this.inference.state;
    const down = this.inference.workerDown;
    if (down !== null && state.phase !== 'failed') throw new ServiceUnavailableException(down);
    switch (state.phase) {
      case 'ready':
        return {
          status: 'ready',
          backend: state.backend,
          models: state.loaded,
          unavailable: state.unavailable,
        };
      case 'starting':
        throw new ServiceUnavailableException('the inference worker is starting');
      case 'warming':
        throw new ServiceUnavailableException(
          `warming up ${state.pending.join(', ')} (${state.loaded.length} of ` +
            `${state.loaded.length + state.pending.length} stacks ready)`,
        );
      case 'failed':
        throw new ServiceUnavailableException(state.reason);
    }
  }
}
