/**
 * The in-process session manager Node gateways run today, as the issue describes it: random UUIDs,
 * `register` for SDK-minted ids, sliding idle expiry with a TTL sweep and an expiration handler,
 * `maxSessions` refusal, statistics with the oldest and newest session, `shutdown`. It is the
 * reference the drop-in `BrokerSessionManager` is tested against (same suite, both implementations).
 */
import { randomUUID } from 'node:crypto';

export interface InMemorySessionManagerOptions {
  idleTimeoutSeconds: number;
  maxSessions?: number;
  cleanupIntervalMs?: number;
}

interface Entry {
  createdAt: Date;
  lastActivity: Date;
}

export class InMemorySessionManager {
  private readonly sessions = new Map<string, Entry>();
  private handler: ((sessionId: string, details: { reason: string }) => void) | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly options: InMemorySessionManagerOptions) {
    this.timer = setInterval(() => this.cleanup(), options.cleanupIntervalMs ?? 60_000);
  }

  create(): string {
    const id = randomUUID();
    this.register(id);
    return id;
  }

  register(sessionId: string): void {
    if (this.hasSession(sessionId)) throw new Error(`session ${sessionId} exists`);
    if (this.getActiveSessionCount() >= (this.options.maxSessions ?? Infinity)) throw new Error('maximum sessions reached');
    const now = new Date();
    this.sessions.set(sessionId, { createdAt: now, lastActivity: now });
  }

  touch(sessionId: string): boolean {
    if (!this.hasSession(sessionId)) return false;
    this.sessions.get(sessionId)!.lastActivity = new Date();
    return true;
  }

  hasSession(sessionId: string): boolean {
    const entry = this.sessions.get(sessionId);
    return entry !== undefined && !this.expired(entry);
  }

  delete(sessionId: string): boolean {
    const live = this.hasSession(sessionId);
    this.sessions.delete(sessionId);
    return live;
  }

  /** Removes expired sessions, telling the expiration handler about each; returns how many. */
  cleanup(): number {
    let removed = 0;
    for (const [id, entry] of this.sessions) {
      if (!this.expired(entry)) continue;
      this.sessions.delete(id);
      removed++;
      this.handler?.(id, { reason: 'expired_idle' });
    }
    return removed;
  }

  list(): Array<{ id: string; createdAt: Date; lastActivity: Date }> {
    return [...this.sessions].filter(([, entry]) => !this.expired(entry)).map(([id, entry]) => ({ id, ...entry }));
  }

  getActiveSessionCount(): number {
    return this.list().length;
  }

  clearAll(): void {
    this.sessions.clear();
  }

  setExpirationHandler(handler: (sessionId: string, details: { reason: string }) => void): void {
    this.handler = handler;
  }

  getStatistics() {
    const live = this.list();
    const times = live.map((session) => session.createdAt.getTime());
    return {
      activeSessions: live.length,
      maxSessions: this.options.maxSessions ?? Infinity,
      oldestSession: times.length ? new Date(Math.min(...times)) : undefined,
      newestSession: times.length ? new Date(Math.max(...times)) : undefined,
    };
  }

  shutdown(): void {
    clearInterval(this.timer);
    this.sessions.clear();
  }

  private expired(entry: Entry): boolean {
    return Date.now() - entry.lastActivity.getTime() >= this.options.idleTimeoutSeconds * 1000;
  }
}
