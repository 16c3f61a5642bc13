import { Injectable, ServiceUnavailableException } from '@nestjs/common';
import type { BackendInfo } from '../../gim/backend/index.js';
import { InferenceService } from '../inference/inference.service.js';

export interface LiveStatus {
  status: 'ok';
}

export interface ReadyStatus {
  status: 'ready';
  backend: BackendInfo;
  /** Stacks loaded and warmed up, as `name@version`. */
  models: string[];
}

@Injectable()
export class HealthService {
  constructor(private readonly inference: InferenceService) {}

  live(): LiveStatus {
    return { status: 'ok' };
  }

  /**
   * Throws a 503 (error_type `not_ready`) until the inference worker is up and every PRELOAD stack
   * is loaded and warmed up; for good if either failed.
   */
  ready(): ReadyStatus {
    const state = this.inference.state;
    switch (state.phase) {
      case 'ready':
        return { status: 'ready', backend: state.backend, models: state.loaded };
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
