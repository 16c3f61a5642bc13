import { Injectable, Logger } from '@nestjs/common';
import { GimError } from '../../gim/errors.js';

/** Who did an admin action: `token:<8 hex of the token's SHA-256>`, never the token itself. */
export interface Actor {
  id: string;
}

/**
 * One structured line per admin action (logger context `Audit`): who, what, on what, and how it
 * ended (`ok` or the error_type).
 */
@Injectable()
export class AuditLog {
  private readonly logger = new Logger('Audit');

  async record<T>(
    actor: Actor,
    action: string,
    target: string,
    f: () => Promise<T>,
    targetOf?: (result: T) => string,
  ): Promise<T> {
    try {
      const result = await f();
      this.write(actor, action, targetOf ? targetOf(result) : target, 'ok');
      return result;
    } catch (e) {
      this.write(actor, action, target, e instanceof GimError ? e.code : 'internal');
      throw e;
    }
  }

  private write(actor: Actor, action: string, target: string, result: string): void {
    this.logger.log(
      JSON.stringify({ who: actor.id, action, target: target.slice(0, 200), result }),
    );
  }
}
