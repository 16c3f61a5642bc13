import { Injectable } from '@nestjs/common';

/**
 * Where the process is in its life, for the parts that must behave differently while it shuts
 * down: readiness turns 503 as soon as draining starts (so load balancers stop sending), routes
 * keep serving until the listener closes, and work that cannot finish within the grace period
 * is handed back (training jobs, to the next process; a client waiting for one gets it as it is).
 */
@Injectable()
export class Lifecycle {
  private drainingSince?: number;
  private listenerClosing = false;
  private readonly drainListeners: Array<() => void> = [];

  /** True from the first SIGTERM/SIGINT on. */
  get draining(): boolean {
    return this.drainingSince !== undefined;
  }

  /** Milliseconds since draining started (0 when not draining). */
  get drainingForMs(): number {
    return this.drainingSince === undefined ? 0 : performance.now() - this.drainingSince;
  }

  /** Starts draining (idempotent) and tells the listeners, once. */
  beginDrain(): void {
    if (this.drainingSince !== undefined) return;
    this.drainingSince = performance.now();
    for (const listener of this.drainListeners.splice(0)) listener();
  }

  /**
   * True once the listener is closing: a request that still arrives on a connection opened
   * before is served, with `Connection: close` (the client's next one goes elsewhere).
   */
  get closing(): boolean {
    return this.listenerClosing;
  }

  beginClose(): void {
    this.beginDrain();
    this.listenerClosing = true;
  }

  /** Runs `listener` when draining starts (at once if it has). */
  onDrain(listener: () => void): void {
    if (this.draining) listener();
    else this.drainListeners.push(listener);
  }
}
