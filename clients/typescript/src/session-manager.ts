/**
 * `BrokerSessionManager`: the method names of the in-process `SessionManager` classes Node gateways
 * use (create, register, touch, hasSession, cleanup, list, getActiveSessionCount, clearAll,
 * setExpirationHandler, getStatistics, shutdown), backed by the broker so every replica sees the same
 * sessions. The one change callers make: the methods return promises (add `await`).
 *
 * Differences that follow from sharing the table across a fleet:
 * - Expiry is the broker's: an expired session is gone for every call at once. The expiration handler
 *   is fed by the broker's event stream (`session.ended` with an expiry reason) and so runs on every
 *   replica that set one: make it idempotent, or set it on one replica.
 * - `cleanup()` has nothing to sweep locally; with an admin client it asks the broker to purge now.
 * - Sessions are scoped by `kind`: counts, lists and `clearAll` see only this manager's kind.
 */
import type { SessionBroker } from './client.js';
import { InvalidSessionId, SessionNotFound } from './errors.js';
import type { Session, SessionCreate } from './types.js';

export interface BrokerSessionManagerOptions {
  broker: SessionBroker;
  /** The kind of the sessions this manager creates and sees. Default 'mcp'. */
  kind?: string;
  /** Idle timeout of sessions it creates or registers; default: the broker's. */
  idleTimeoutSeconds?: number;
  maxLifetimeSeconds?: number;
  /** A client with an admin key: lets `cleanup()` run the broker's purge at once. */
  adminBroker?: SessionBroker;
  /** End reasons reported to the expiration handler. Default `expired_idle`, `expired_lifetime`. */
  expirationReasons?: readonly string[];
  /** Failures of the expiration handler and of the event stream. Default `console.error`. */
  onError?: (error: unknown) => void;
}

export interface CreateSessionOptions {
  principal?: string;
  metadata?: Record<string, unknown>;
}

/** A session as `list()` reports it. */
export interface ManagedSession {
  id: string;
  createdAt: Date;
  lastActivity: Date;
  expiresAt: Date;
  principal: string | null;
  metadata: Record<string, unknown>;
}

export interface SessionStatistics {
  activeSessions: number;
  /** The tenant's session cap (the broker's `max_sessions_per_tenant`). */
  maxSessions: number;
  /** Creation time of the oldest and newest live session of this kind. */
  oldestSession: Date | undefined;
  newestSession: Date | undefined;
  /** Tenant-wide totals since it began. */
  totalCreated: number;
  endedByReason: Record<string, number>;
}

export interface ExpirationDetails {
  reason: string;
  /** When the broker says the session expired. */
  endedAt: Date | undefined;
}

/** May return a promise (awaited before the next event is handled). */
export type ExpirationHandler = (sessionId: string, details: ExpirationDetails) => unknown;

const EXPIRY_REASONS = ['expired_idle', 'expired_lifetime'];

export class BrokerSessionManager {
  private readonly broker: SessionBroker;
  private readonly kind: string;
  private readonly expirationReasons: ReadonlySet<string>;
  private readonly onError: (error: unknown) => void;
  private handler: ExpirationHandler | undefined;
  private listening: { stop: AbortController; done: Promise<void> } | undefined;

  constructor(private readonly options: BrokerSessionManagerOptions) {
    if (!options.broker) throw new TypeError('BrokerSessionManager needs a SessionBroker (options.broker)');
    this.broker = options.broker;
    this.kind = options.kind ?? 'mcp';
    this.expirationReasons = new Set(options.expirationReasons ?? EXPIRY_REASONS);
    this.onError = options.onError ?? ((error) => console.error('BrokerSessionManager:', error));
  }

  /** Creates a session with an id the broker mints; returns the id. */
  async create(options: CreateSessionOptions = {}): Promise<string> {
    return (await this.broker.create(this.record(options))).id;
  }

  /** Registers an id minted elsewhere (an SDK's). Rejects with `SessionExists` if it is live already. */
  async register(sessionId: string, options: CreateSessionOptions = {}): Promise<void> {
    await this.broker.register(sessionId, this.record(options));
  }

  /** Extends the session's idle expiry. False if it is unknown, ended or expired (or another principal's). */
  async touch(sessionId: string, principal?: string): Promise<boolean> {
    return this.exists(() => this.broker.touch(sessionId, { principal }));
  }

  /** Whether the session is live (expiry included), without extending it. */
  async hasSession(sessionId: string, principal?: string): Promise<boolean> {
    return this.exists(() => this.broker.get(sessionId, { principal }));
  }

  /** Ends one session. False if there was no live session with this id. */
  async delete(sessionId: string, principal?: string): Promise<boolean> {
    return this.exists(() => this.broker.delete(sessionId, { principal }));
  }

  /**
   * The broker expires sessions itself (an expired one is invisible at once), so there is nothing to
   * sweep here. With `adminBroker`, runs the broker's purge now and returns how many expired sessions
   * it removed (their `session.ended` events then reach the expiration handler); otherwise 0.
   */
  async cleanup(): Promise<number> {
    if (!this.options.adminBroker) return 0;
    const run = await this.options.adminBroker.purge();
    return run.deleted['sessions'] ?? 0;
  }

  /** Every live session of this kind. */
  async list(): Promise<ManagedSession[]> {
    const sessions: ManagedSession[] = [];
    for await (const session of this.broker.list({ kind: this.kind })) sessions.push(managed(session));
    return sessions;
  }

  async getActiveSessionCount(): Promise<number> {
    const stats = await this.broker.stats();
    return stats.by_kind.find((entry) => entry.kind === this.kind)?.live ?? 0;
  }

  /**
   * Ends every live session of this kind, through the revocation API (`DELETE /v1/sessions?kind=`),
   * reason `revoked`; returns how many. Not reported to the expiration handler: nothing expired.
   */
  async clearAll(): Promise<number> {
    return this.broker.revoke({ kind: this.kind });
  }

  /**
   * Called when a session of this kind expires anywhere in the fleet, once the broker records the
   * expiry (its stated latency). Starts listening to the broker's event stream; `undefined` stops.
   */
  setExpirationHandler(handler: ExpirationHandler | undefined): void {
    this.handler = handler;
    if (handler && !this.listening) this.listen();
    if (!handler) void this.stopListening();
  }

  async getStatistics(): Promise<SessionStatistics> {
    const stats = await this.broker.stats();
    const mine = stats.by_kind.find((entry) => entry.kind === this.kind);
    return {
      activeSessions: mine?.live ?? 0,
      maxSessions: stats.limits.max_sessions_per_tenant,
      oldestSession: mine ? new Date(mine.oldest_created_at) : undefined,
      newestSession: mine ? new Date(mine.newest_created_at) : undefined,
      totalCreated: stats.created_total,
      endedByReason: { ...stats.ended_total },
    };
  }

  /** Stops the event stream. The sessions stay in the broker: they belong to the fleet, not this process. */
  async shutdown(): Promise<void> {
    this.handler = undefined;
    await this.stopListening();
  }

  private listen(): void {
    const stop = new AbortController();
    const done = (async () => {
      try {
        for await (const event of this.broker.events({ signal: stop.signal, onReconnect: this.onError })) {
          if (event.type === 'stream.gap') {
            this.onError(new Error(`BrokerSessionManager: expiry events may have been missed (${'detail' in event ? event.detail : ''})`));
            continue;
          }
          if (event.type !== 'session.ended' || !('data' in event)) continue;
          const reason = String(event.data['reason'] ?? '');
          if (event.data['kind'] !== this.kind || !this.expirationReasons.has(reason)) continue;
          const endedAt = typeof event.data['ended_at'] === 'string' ? new Date(event.data['ended_at']) : undefined;
          try {
            await this.handler?.(event.sessionId, { reason, endedAt });
          } catch (error) {
            this.onError(error);
          }
        }
      } catch (error) {
        if (!stop.signal.aborted) this.onError(error);
      }
    })();
    this.listening = { stop, done };
  }

  private async stopListening(): Promise<void> {
    const listening = this.listening;
    this.listening = undefined;
    if (!listening) return;
    listening.stop.abort();
    await listening.done;
  }

  private record(options: CreateSessionOptions): SessionCreate {
    return {
      kind: this.kind,
      ...(options.principal === undefined ? {} : { principal: options.principal }),
      ...(options.metadata === undefined ? {} : { metadata: options.metadata }),
      ...(this.options.idleTimeoutSeconds === undefined ? {} : { idle_timeout_seconds: this.options.idleTimeoutSeconds }),
      ...(this.options.maxLifetimeSeconds === undefined ? {} : { max_lifetime_seconds: this.options.maxLifetimeSeconds }),
    };
  }

  /** True when the call succeeds, false when no such session can exist; outages and other errors propagate. */
  private async exists(call: () => Promise<unknown>): Promise<boolean> {
    try {
      await call();
      return true;
    } catch (error) {
      if (error instanceof SessionNotFound || error instanceof InvalidSessionId) return false;
      throw error;
    }
  }
}

function managed(session: Session): ManagedSession {
  return {
    id: session.id,
    createdAt: new Date(session.created_at),
    lastActivity: new Date(session.last_seen_at),
    expiresAt: new Date(session.expires_at),
    principal: session.principal,
    metadata: session.metadata,
  };
}
