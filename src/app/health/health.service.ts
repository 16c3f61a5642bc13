import { Injectable, ServiceUnavailableException } from '@nestjs/common';
import type { BackendInfo } from '../../gim/backend/index.js';
import { BackendService } from '../backend/backend.service.js';

export interface LiveStatus {
  status: 'ok';
}

export interface ReadyStatus {
  status: 'ready';
  backend: BackendInfo;
}

@Injectable()
export class HealthService {
  constructor(private readonly backend: BackendService) {}

  live(): LiveStatus {
    return { status: 'ok' };
  }

  /** Throws a 503 (error_type `not_ready`) until the tfjs backend is selected. */
  ready(): ReadyStatus {
    const state = this.backend.state;
    switch (state.phase) {
      case 'ready':
        return { status: 'ready', backend: state.info };
      case 'selecting':
        throw new ServiceUnavailableException('the tfjs backend is still being selected');
      case 'failed':
        throw new ServiceUnavailableException(state.reason);
    }
  }
}
