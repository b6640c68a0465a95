/**
 * The drop-in promise: one behaviour suite, written against the in-process SessionManager Node
 * gateways use (test/support/in-memory-session-manager.ts), run against it and against
 * BrokerSessionManager on the real broker.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it, type TestContext } from 'node:test';
import { BrokerSessionManager, SessionBroker, type BrokerEvent, type SessionEvent } from '../src/index.js';
import { ADMIN_KEY, OTHER_TENANT_KEY, TENANT_KEY, startBroker, type BrokerProcess } from './support/broker.js';
import { InMemorySessionManager } from './support/in-memory-session-manager.js';

/** What the suite drives: both implementations, every call awaited (a plain value awaits fine). */
interface ManagerUnderTest {
  create(): string | Promise<string>;
  register(sessionId: string): void | Promise<void>;
  touch(sessionId: string): boolean | Promise<boolean>;
  hasSession(sessionId: string): boolean | Promise<boolean>;
  delete(sessionId: string): boolean | Promise<boolean>;
  cleanup(): number | Promise<number>;
  list(): Array<{ id: string; createdAt: Date }> | Promise<Array<{ id: string; createdAt: Date }>>;
  getActiveSessionCount(): number | Promise<number>;
  clearAll(): unknown;
  setExpirationHandler(handler: (sessionId: string, details: { reason: string }) => void): void;
  getStatistics():
    | { activeSessions: number; maxSessions: number; oldestSession: Date | undefined; newestSession: Date | undefined }
    | Promise<{ activeSessions: number; maxSessions: number; oldestSession: Date | undefined; newestSession: Date | undefined }>;
  shutdown(): unknown;
}

interface FactoryOptions {
  idleTimeoutSeconds: number;
  maxSessions?: number;
}

/** With `PURGE_INTERVAL_SECONDS=1` the broker states expiry is recorded within 2 × 1 s, at most 5 s. */
const EXPIRY_LATENCY_MS = 5_000;
/** `EXPIRY_WARNING_SECONDS` of the broker below. */
const WARNING_SECONDS = 2;
/** The quota of tenant `other` below (the broker's cap is configuration, not a per-manager option). */
const TENANT_CAP = 3;

let broker: BrokerProcess;
let kinds = 0;

before(async () => {
  broker = await startBroker({
    SESSION_BROKER_PURGE_INTERVAL_SECONDS: '1',
    // `session.expiring` this close to expiry (the manager ignores these; the last test reads them).
    SESSION_BROKER_EXPIRY_WARNING_SECONDS: String(WARNING_SECONDS),
    SESSION_BROKER_TENANT_QUOTAS: JSON.stringify({ other: { max_sessions_per_tenant: TENANT_CAP } }),
  });
});
after(() => broker?.dispose());

const implementations: Array<[string, (options: FactoryOptions) => ManagerUnderTest]> = [
  [
    'in-process SessionManager (reference)',
    (options) => new InMemorySessionManager({ ...options, cleanupIntervalMs: 200 }),
  ],
  [
    'BrokerSessionManager on the broker',
    (options) => {
      if (options.maxSessions !== undefined) assert.equal(options.maxSessions, TENANT_CAP);
      const key = options.maxSessions === undefined ? TENANT_KEY : OTHER_TENANT_KEY;
      return new BrokerSessionManager({
        broker: new SessionBroker({ baseUrl: broker.url, apiKey: key }),
        adminBroker: new SessionBroker({ baseUrl: broker.url, apiKey: ADMIN_KEY }),
        kind: `suite-${process.pid}-${++kinds}`, // each test its own kind: counts and clearAll stay scoped
        idleTimeoutSeconds: options.idleTimeoutSeconds,
      });
    },
  ],
];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await sleep(50);
  return condition();
}

for (const [name, makeManager] of implementations) {
  describe(name, () => {
    const open = (t: TestContext, options: FactoryOptions) => {
      const manager = makeManager(options);
      t.after(async () => {
        await manager.clearAll();
        await manager.shutdown();
      });
      return manager;
    };

    it('create mints distinct live ids; the count and list see them', async (t) => {
      const manager = open(t, { idleTimeoutSeconds: 60 });
      const ids = [await manager.create(), await manager.create(), await manager.create()];
      assert.equal(new Set(ids).size, 3);
      for (const id of ids) assert.equal(await manager.hasSession(id), true);
      assert.equal(await manager.getActiveSessionCount(), 3);
      assert.deepEqual((await manager.list()).map((session) => session.id).sort(), [...ids].sort());
    });

    it('register makes an SDK-minted id live; registering it again is refused', async (t) => {
      const manager = open(t, { idleTimeoutSeconds: 60 });
      const id = randomUUID();
      assert.equal(await manager.hasSession(id), false);
      await manager.register(id);
      assert.equal(await manager.hasSession(id), true);
      await assert.rejects(async () => manager.register(id));
      assert.equal(await manager.getActiveSessionCount(), 1);
    });

    it('touch is true for a live session, false for an unknown or deleted one', async (t) => {
      const manager = open(t, { idleTimeoutSeconds: 60 });
      const id = await manager.create();
      assert.equal(await manager.touch(id), true);
      assert.equal(await manager.touch(randomUUID()), false);
      assert.equal(await manager.delete(id), true);
      assert.equal(await manager.touch(id), false);
      assert.equal(await manager.delete(id), false);
    });

    it('idle expiry: a touched session stays, an untouched one is gone for every call', async (t) => {
      const manager = open(t, { idleTimeoutSeconds: 2 });
      const kept = await manager.create();
      const idle = await manager.create();
      for (let i = 0; i < 5; i++) {
        await sleep(500);
        assert.equal(await manager.touch(kept), true);
      }
      // 2.5 s in: `idle` expired half a second ago; `kept` was touched just now (1.5 s of slack each time).
      assert.equal(await manager.hasSession(idle), false);
      assert.equal(await manager.touch(idle), false);
      assert.equal(await manager.hasSession(kept), true);
      assert.equal(await manager.getActiveSessionCount(), 1);
      assert.deepEqual((await manager.list()).map((session) => session.id), [kept]);
    });

    it('the expiration handler is called with the id within the stated latency after expiry', async (t) => {
      const manager = open(t, { idleTimeoutSeconds: 1 });
      const expired: Array<{ id: string; reason: string; at: number }> = [];
      manager.setExpirationHandler((id, details) => expired.push({ id, reason: details.reason, at: Date.now() }));
      await sleep(300); // the broker-backed manager opens its event stream
      const id = await manager.create();
      const expiresAt = Date.now() + 1_000;
      await sleep(1_200);
      assert.equal(await manager.hasSession(id), false, 'expired for every call at once');
      await manager.cleanup(); // the in-process one sweeps here (or on its timer); the broker purges
      const called = await until(() => expired.some((entry) => entry.id === id), expiresAt + EXPIRY_LATENCY_MS - Date.now());
      assert.ok(called, `expiration handler not called within ${EXPIRY_LATENCY_MS} ms of expiry (got ${JSON.stringify(expired)})`);
      assert.equal(expired.filter((entry) => entry.id === id).length, 1);
      assert.equal(expired.find((entry) => entry.id === id)!.reason, 'expired_idle');
    });

    it('clearAll ends every session without calling the expiration handler; new sessions still work', async (t) => {
      const manager = open(t, { idleTimeoutSeconds: 60 });
      const expired: string[] = [];
      manager.setExpirationHandler((id) => expired.push(id));
      const ids = [await manager.create(), await manager.create()];
      await manager.clearAll();
      assert.equal(await manager.getActiveSessionCount(), 0);
      for (const id of ids) assert.equal(await manager.hasSession(id), false);
      await sleep(1_200); // long enough for the broker's revocation events to arrive
      assert.deepEqual(expired, []);
      assert.equal(await manager.hasSession(await manager.create()), true);
    });

    it('at maxSessions a create is refused until a session ends', async (t) => {
      const manager = open(t, { idleTimeoutSeconds: 60, maxSessions: TENANT_CAP });
      const ids: string[] = [];
      for (let i = 0; i < TENANT_CAP; i++) ids.push(await manager.create());
      await assert.rejects(async () => manager.create());
      assert.equal(await manager.getActiveSessionCount(), TENANT_CAP);
      await manager.delete(ids[0]!);
      assert.equal(await manager.hasSession(await manager.create()), true);
    });

    it('getStatistics reports the count, the cap and the oldest and newest session', async (t) => {
      const manager = open(t, { idleTimeoutSeconds: 60, maxSessions: TENANT_CAP });
      const empty = await manager.getStatistics();
      assert.equal(empty.activeSessions, 0);
      assert.equal(empty.oldestSession, undefined);
      const first = Date.now();
      await manager.create();
      await sleep(50);
      await manager.create();
      const stats = await manager.getStatistics();
      assert.equal(stats.activeSessions, 2);
      assert.equal(stats.maxSessions, TENANT_CAP);
      assert.ok(stats.oldestSession && stats.newestSession);
      assert.ok(stats.oldestSession.getTime() < stats.newestSession.getTime());
      assert.ok(Math.abs(stats.oldestSession.getTime() - first) < 2_000, 'oldest is the first one created');
    });
  });
}

describe('BrokerSessionManager: the expiration handler path, through the broker\'s own prompt expiry', () => {
  it('a session.ended expired_idle event reaches the handler within the stated bound, for this kind only, with the real expiry as endedAt', async (t) => {
    const kind = `expiring-${process.pid}`;
    const tenant = new SessionBroker({ baseUrl: broker.url, apiKey: TENANT_KEY });
    const bound = (await tenant.stats()).limits.expiry_notice_bound_seconds;
    assert.equal(bound, 2, 'twice PURGE_INTERVAL_SECONDS=1');
    // No adminBroker: cleanup() cannot run a purge, so only the broker's own purge timer can end it.
    const manager = new BrokerSessionManager({ broker: tenant, kind, idleTimeoutSeconds: 1 });
    t.after(() => manager.shutdown());
    const expired: Array<{ id: string; reason: string; endedAt: Date | undefined; at: number }> = [];
    manager.setExpirationHandler((id, details) => expired.push({ id, ...details, at: Date.now() }));
    await sleep(300); // the manager opens its event stream
    const id = await manager.create();
    const expiresAt = Date.parse((await tenant.get(id)).expires_at);
    const other = await tenant.create({ kind: 'not-mine', idle_timeout_seconds: 1 });
    const called = await until(() => expired.length > 0, expiresAt + bound * 1_000 + 3_000 - Date.now());
    assert.ok(called, `handler not called within ${bound} s (+3 s of slack) of the expiry`);
    assert.ok(expired[0]!.at - expiresAt <= bound * 1_000 + 3_000, `called ${expired[0]!.at - expiresAt} ms after expiry`);
    await sleep(1_500); // the other kind's session has ended by now too
    await assert.rejects(tenant.get(other.id), /expired_idle/);
    assert.deepEqual(expired.map((entry) => [entry.id, entry.reason]), [[id, 'expired_idle']], 'only this kind, once');
    const endedAt = expired[0]!.endedAt;
    assert.ok(endedAt instanceof Date);
    assert.ok(Math.abs(endedAt.getTime() - expiresAt) < 1_000, `endedAt ${endedAt.toISOString()} is the expiry ${new Date(expiresAt).toISOString()}`);
  });

  it('session.expiring arrives before the expiry (EXPIRY_WARNING_SECONDS), then session.ended', async () => {
    const tenant = new SessionBroker({ baseUrl: broker.url, apiKey: TENANT_KEY });
    assert.equal((await tenant.stats()).limits.expiry_warning_seconds, WARNING_SECONDS);
    const stop = new AbortController();
    const seen: BrokerEvent[] = [];
    const reading = (async () => {
      for await (const event of tenant.events({ signal: stop.signal })) seen.push(event);
    })();
    try {
      await sleep(300);
      const session = await tenant.create({ kind: `warned-${process.pid}`, idle_timeout_seconds: 4 });
      const ours = () => seen.filter((event): event is SessionEvent => 'sessionId' in event && event.sessionId === session.id);
      assert.ok(await until(() => ours().some((event) => event.type === 'session.ended'), 12_000), `no session.ended: ${JSON.stringify(ours())}`);
      const types = ours().map((event) => event.type);
      assert.deepEqual(types, ['session.created', 'session.expiring', 'session.ended']);
      const warning = ours()[1]!;
      const warnedAt = Date.parse(warning.occurredAt);
      const expiresAt = Date.parse(session.expires_at);
      assert.equal(warning.data['expires_at'] !== undefined && Date.parse(String(warning.data['expires_at'])), expiresAt);
      assert.ok(warnedAt < expiresAt, 'warned before the expiry');
      assert.ok(expiresAt - warnedAt <= WARNING_SECONDS * 1_000 + 100, `warned ${expiresAt - warnedAt} ms before, not earlier than the window`);
      const left = Number(warning.data['expires_in_seconds']);
      assert.ok(left > 0 && left <= WARNING_SECONDS, `expires_in_seconds ${left}`);
    } finally {
      stop.abort();
      await reading;
    }
  });
});
