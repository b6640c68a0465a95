/**
 * SessionBroker against the real broker: every operation's success and its error mapping.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  AdminRequired,
  BrokerUnavailable,
  IdempotencyKeyReused,
  InvalidSessionId,
  MetadataTooLarge,
  NotFound,
  PayloadTooLarge,
  PreconditionFailed,
  QuotaExceeded,
  SessionBroker,
  SessionExists,
  SessionIdRetired,
  SessionNotFound,
  SessionRateLimited,
  SessionRequestLimit,
  TenantKeyRequired,
  Unauthorized,
  ValidationFailed,
  type BrokerEvent,
  type Stats,
} from '../src/index.js';
import { ADMIN_KEY, OTHER_TENANT_KEY, TENANT_KEY, freePort, startBroker, type BrokerProcess } from './support/broker.js';

/** Ids MCP allows and URLs mangle unless percent-encoded. */
const AWKWARD_IDS = ['a/b', 'q?x=1', 'frag#ment', '100%', 'p+l=us', 'Zm9vYmFy/+==', "!*'()~:@&$,;"];

let broker: BrokerProcess;
let client: SessionBroker;
let unique = 0;
const principal = () => `https://idp.test|user-${process.pid}-${++unique}`;

before(async () => {
  broker = await startBroker({
    SESSION_BROKER_MAX_METADATA_BYTES: '1024',
    SESSION_BROKER_TENANT_QUOTAS: JSON.stringify({ other: { max_sessions_per_principal: 1 } }),
  });
  client = new SessionBroker({ baseUrl: broker.url, apiKey: TENANT_KEY });
});
after(() => broker?.dispose());

describe('sessions', () => {
  it('create mints an id and returns the session with its ETag', async () => {
    const who = principal();
    const session = await client.create({ principal: who, protocol_version: '2025-11-25', metadata: { mcp: { clientInfo: { name: 'x' } } } });
    assert.match(session.id, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(session.kind, 'mcp');
    assert.equal(session.principal, who);
    assert.equal(session.version, 1);
    assert.equal(session.etag, '"1"');
    assert.deepEqual(session.metadata, { mcp: { clientInfo: { name: 'x' } } });
  });

  it('register round-trips ids with / ? # % + = and other URL characters', async () => {
    for (const base of AWKWARD_IDS) {
      const id = `${base}-${++unique}`;
      const registered = await client.register(id, { principal: 'p' });
      assert.equal(registered.id, id);
      assert.equal((await client.get(id)).id, id);
      assert.equal((await client.touch(id, { principal: 'p' })).id, id);
      await client.delete(id);
    }
  });

  it('register of a live id is SessionExists; of a deleted one SessionIdRetired with the reason', async () => {
    const id = `sdk-minted-${++unique}`;
    await client.register(id);
    await assert.rejects(client.register(id), SessionExists);
    await client.delete(id);
    const error = await client.register(id).catch((thrown: unknown) => thrown);
    assert.ok(error instanceof SessionIdRetired, String(error));
    assert.equal(error.reason, 'deleted');
    assert.equal(error.status, 409);
  });

  it('get and touch are bound to the principal: another one gets SessionNotFound and changes nothing', async () => {
    const owner = principal();
    const session = await client.create({ principal: owner });
    await assert.rejects(client.get(session.id, { principal: 'someone-else' }), SessionNotFound);
    await assert.rejects(client.touch(session.id, { principal: 'someone-else' }), SessionNotFound);
    await assert.rejects(client.delete(session.id, { principal: 'someone-else' }), SessionNotFound);
    const touched = await client.touch(session.id, { principal: owner });
    assert.equal(touched.id, session.id);
    assert.ok(Date.parse(touched.expires_at) >= Date.parse(session.expires_at));
    assert.equal((await client.get(session.id, { principal: owner })).version, 1);
  });

  it('an unknown id is SessionNotFound without a reason; an ended one carries it', async () => {
    const unknown = await client.get('never-existed').catch((thrown: unknown) => thrown);
    assert.ok(unknown instanceof SessionNotFound);
    assert.equal(unknown.reason, undefined);
    assert.equal(unknown.slug, 'session-not-found');
    const session = await client.create();
    await client.delete(session.id);
    const ended = await client.touch(session.id).catch((thrown: unknown) => thrown);
    assert.ok(ended instanceof SessionNotFound);
    assert.equal(ended.reason, 'deleted');
  });

  it('patch merges with If-Match; a stale ETag is PreconditionFailed', async () => {
    const session = await client.create({ metadata: { a: 1, keep: true } });
    const patched = await client.patch(session.id, { owner: 'gw-7', metadata: { a: null, b: 2 } }, { ifMatch: session.etag });
    assert.equal(patched.version, 2);
    assert.equal(patched.etag, '"2"');
    assert.equal(patched.owner, 'gw-7');
    assert.deepEqual(patched.metadata, { keep: true, b: 2 });
    await assert.rejects(client.patch(session.id, { owner: 'gw-8' }, { ifMatch: session.etag }), PreconditionFailed);
  });

  it('list follows cursors across pages, each session once', async () => {
    const who = principal();
    const created = new Set<string>();
    for (let i = 0; i < 5; i++) created.add((await client.create({ principal: who })).id);
    const seen: string[] = [];
    for await (const session of client.list({ principal: who, limit: 2 })) seen.push(session.id);
    assert.deepEqual([...seen].sort(), [...created].sort());
    assert.equal(new Set(seen).size, 5);
  });

  it('revoke ends every match and reports how many; a repeat reports 0', async () => {
    const who = principal();
    const a = await client.create({ principal: who });
    await client.create({ principal: who });
    assert.equal(await client.revoke({ principal: who }), 2);
    assert.equal(await client.revoke({ principal: who }), 0);
    const error = await client.get(a.id).catch((thrown: unknown) => thrown);
    assert.ok(error instanceof SessionNotFound);
    assert.equal(error.reason, 'revoked');
    await assert.rejects(client.revoke({}), TypeError);
  });

  it('rotate moves the session to a new id and ends the old one as rotated', async () => {
    const who = principal();
    const session = await client.create({ principal: who, metadata: { k: 'v' } });
    const rotated = await client.rotate(session.id, { principal: who });
    assert.notEqual(rotated.id, session.id);
    assert.deepEqual(rotated.metadata, { k: 'v' });
    const old = await client.get(session.id).catch((thrown: unknown) => thrown);
    assert.ok(old instanceof SessionNotFound);
    assert.equal(old.reason, 'rotated');
  });

  it('create with an Idempotency-Key: the same request again is replayed (same session), another one IdempotencyKeyReused', async () => {
    const key = `create-${process.pid}-${++unique}`;
    const who = principal();
    const first = await client.create({ principal: who, metadata: { n: 1 } }, { idempotencyKey: key });
    assert.equal(first.replayed, false);
    const again = await client.create({ principal: who, metadata: { n: 1 } }, { idempotencyKey: key });
    assert.equal(again.replayed, true);
    assert.equal(again.id, first.id);
    assert.equal(again.etag, first.etag);
    let live = 0;
    for await (const session of client.list({ principal: who })) live += session.id === first.id ? 1 : 100;
    assert.equal(live, 1, 'one session, not two');
    const reused = await client.create({ principal: who, metadata: { n: 2 } }, { idempotencyKey: key }).catch((thrown: unknown) => thrown);
    assert.ok(reused instanceof IdempotencyKeyReused, String(reused));
    assert.equal(reused.status, 422);
    const unkeyed = await client.create({ principal: who });
    assert.equal(unkeyed.replayed, false);
    assert.notEqual(unkeyed.id, first.id);
  });

  it('max_requests: touches past the lifetime limit are SessionRequestLimit; the session stays readable; patch raises it', async () => {
    const session = await client.create({ max_requests: 2 });
    assert.equal(session.max_requests, 2);
    assert.equal(session.max_requests_per_minute, 0);
    await client.touch(session.id);
    await client.touch(session.id);
    const error = await client.touch(session.id).catch((thrown: unknown) => thrown);
    assert.ok(error instanceof SessionRequestLimit, String(error));
    assert.equal(error.status, 429);
    assert.equal(error.limit, 2);
    assert.equal((await client.get(session.id)).id, session.id);
    assert.equal((await client.patch(session.id, { max_requests: 4 })).max_requests, 4);
    await client.touch(session.id); // the third touch, within the raised limit
    const unlimited = await client.create();
    assert.equal(unlimited.max_requests, 0, 'the tenant default here: unlimited');
    for (let i = 0; i < 3; i++) await client.touch(unlimited.id);
  });

  it('max_requests_per_minute: a touch over it is SessionRateLimited with retryAfter from Retry-After', async () => {
    const session = await client.create({ max_requests_per_minute: 1 });
    assert.equal(session.max_requests_per_minute, 1);
    await client.touch(session.id);
    const error = await client.touch(session.id).catch((thrown: unknown) => thrown);
    assert.ok(error instanceof SessionRateLimited, String(error));
    assert.equal(error.status, 429);
    assert.equal(error.limit, 1);
    assert.ok(error.retryAfter !== undefined && error.retryAfter >= 1 && error.retryAfter <= 60, `retryAfter ${error.retryAfter}`);
  });

  it('revoke with all: true ends every live session of the tenant, and only that tenant', async () => {
    const other = new SessionBroker({ baseUrl: broker.url, apiKey: OTHER_TENANT_KEY });
    await other.revoke({}, { all: true }); // whatever earlier tests left in tenant `other`
    const mine = await client.create();
    const a = await other.create({ principal: principal() });
    const b = await other.create({ principal: principal(), kind: 'another-kind' });
    assert.equal(await other.revoke({}, { all: true }), 2);
    assert.equal(await other.revoke({}, { all: true }), 0);
    for (const id of [a.id, b.id]) {
      const error = await other.get(id).catch((thrown: unknown) => thrown);
      assert.ok(error instanceof SessionNotFound, String(error));
      assert.equal(error.reason, 'revoked');
    }
    assert.equal((await client.get(mine.id)).id, mine.id, "another tenant's session is untouched");
    await assert.rejects(other.revoke({ kind: 'mcp' }, { all: true }), TypeError);
  });

  it('stats with windowSeconds adds the window: sessions created and ended in it, by reason', async () => {
    assert.equal((await client.stats()).window ?? undefined, undefined, 'no window unless asked');
    let before: Stats | undefined;
    let after: Stats | undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      // A stats snapshot taken in between moves `since` (the interval covered): then measure again.
      before = await client.stats({ windowSeconds: 3600 });
      const a = await client.create();
      await client.create();
      await client.delete(a.id);
      after = await client.stats({ windowSeconds: 3600 });
      if (after.window?.since === before.window?.since) break;
    }
    assert.ok(before?.window && after?.window, 'window present');
    assert.equal(after.window.since, before.window.since, 'the same interval');
    assert.equal(after.window.seconds, 3600);
    assert.equal(after.window.created, before.window.created + 2);
    assert.equal(after.window.ended['deleted'] ?? 0, (before.window.ended['deleted'] ?? 0) + 1);
    assert.ok(after.window.peak_live >= after.live);
    await assert.rejects(client.stats({ windowSeconds: 0 }), ValidationFailed);
  });

  it('stats counts the tenant and reports limits', async () => {
    const stats = await client.stats();
    assert.equal(stats.tenant, 'acme');
    assert.ok(stats.live >= 1);
    assert.equal(stats.limits.max_metadata_bytes, 1024);
    assert.ok(stats.by_kind.some((kind) => kind.kind === 'mcp'));
  });
});

describe('request analytics', () => {
  it('reportRequests records the outcomes; they show up in stats().requests, by method', async () => {
    const method = 'completion/complete'; // a method no other test in this file reports
    const ofMethod = (stats: Stats) => stats.requests.busiest_methods.find((entry) => entry.method === method);
    const before = await client.stats();
    assert.equal(ofMethod(before), undefined);
    const recorded = await client.reportRequests([
      { method, ok: true, duration_ms: 10 },
      { method, ok: false, duration_ms: 30 },
      { method, ok: true, duration_ms: 20 },
    ]);
    assert.equal(recorded, 3);
    const deadline = Date.now() + 10_000;
    let after = await client.stats();
    while (after.requests.requests_total < before.requests.requests_total + 3 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      after = await client.stats();
    }
    assert.equal(after.requests.requests_total, before.requests.requests_total + 3);
    assert.equal(after.requests.errors_total, before.requests.errors_total + 1);
    const ours = ofMethod(after);
    assert.ok(ours, `${method} in busiest_methods: ${JSON.stringify(after.requests.busiest_methods)}`);
    assert.equal(ours.requests, 3);
    assert.equal(ours.errors, 1);
    assert.equal(ours.mean_duration_ms, 20);
  });
});

describe('errors', () => {
  it('bad input is ValidationFailed naming the field', async () => {
    const error = await client.create({ idle_timeout_seconds: 0 }).catch((thrown: unknown) => thrown);
    assert.ok(error instanceof ValidationFailed, String(error));
    assert.equal(error.status, 422);
    assert.ok(error.errors.some((field) => field.field.includes('idle_timeout_seconds')), JSON.stringify(error.errors));
  });

  it('metadata over the limit is MetadataTooLarge with the limit; a huge body PayloadTooLarge', async () => {
    const error = await client.create({ metadata: { blob: 'x'.repeat(2_000) } }).catch((thrown: unknown) => thrown);
    assert.ok(error instanceof MetadataTooLarge, String(error));
    assert.equal(error.limit, 1024);
    await assert.rejects(client.create({ metadata: { blob: 'x'.repeat(80_000) } }), PayloadTooLarge);
  });

  it('a full quota is QuotaExceeded with scope, limit and Retry-After', async () => {
    const other = new SessionBroker({ baseUrl: broker.url, apiKey: OTHER_TENANT_KEY });
    await other.create({ principal: 'solo' });
    const error = await other.create({ principal: 'solo' }).catch((thrown: unknown) => thrown);
    assert.ok(error instanceof QuotaExceeded, String(error));
    assert.equal(error.status, 429);
    assert.equal(error.scope, 'principal');
    assert.equal(error.limit, 1);
    assert.equal(error.retryAfter, 30);
  });

  it('keys: a wrong key is Unauthorized, tenant keys are refused admin calls and admin keys tenant calls', async () => {
    await assert.rejects(new SessionBroker({ baseUrl: broker.url, apiKey: 'wrong-key-0123456789' }).stats(), Unauthorized);
    await assert.rejects(client.adminStats(), AdminRequired);
    const admin = new SessionBroker({ baseUrl: broker.url, apiKey: ADMIN_KEY });
    await assert.rejects(admin.stats(), TenantKeyRequired);
    assert.ok((await admin.adminStats()).tenants.some((tenant) => tenant.tenant === 'acme'));
    const run = await admin.purge();
    assert.equal(typeof run.batches, 'number');
  });

  it('ids the contract cannot carry are refused before any request', async () => {
    for (const id of ['', '.', '..', 'has space', 'é', 'x'.repeat(256)]) {
      await assert.rejects(client.get(id), InvalidSessionId, id);
    }
  });

  it('a principal the Session-Principal header cannot carry is refused at create', async () => {
    await assert.rejects(client.create({ principal: 'ユーザー' }), TypeError);
    await assert.rejects(client.create({ principal: 'line\nbreak' }), TypeError);
  });

  it('reportRequests under a base URL where the broker serves no POST /v1/analytics is NotFound', async () => {
    // The broker's own 404 for a path it does not serve (as an older broker answers for /v1/analytics).
    const elsewhere = new SessionBroker({ baseUrl: `${broker.url}/no-such-prefix`, apiKey: TENANT_KEY });
    const error = await elsewhere.reportRequests([{ method: 'tools/call', ok: true, duration_ms: 3 }]).catch((thrown: unknown) => thrown);
    assert.ok(error instanceof NotFound, String(error));
    assert.equal(error.slug, 'not-found');
    await assert.rejects(client.reportRequests([]), RangeError);
  });
});

describe('outages', () => {
  it('a refused connection is BrokerUnavailable; idempotent calls are retried, create is not', async () => {
    const dead = new SessionBroker({ baseUrl: `http://127.0.0.1:${await freePort()}`, retry: { retries: 2, baseDelayMs: 10 } });
    const get = await dead.get('x').catch((thrown: unknown) => thrown);
    assert.ok(get instanceof BrokerUnavailable, String(get));
    assert.equal(get.kind, 'connect');
    assert.equal(get.attempt, 2);
    assert.equal(get.mayHaveReachedBroker, false);
    const create = await dead.create().catch((thrown: unknown) => thrown);
    assert.ok(create instanceof BrokerUnavailable);
    assert.equal(create.attempt, 0);
    const keyed = await dead.create({}, { idempotencyKey: 'k-1' }).catch((thrown: unknown) => thrown);
    assert.ok(keyed instanceof BrokerUnavailable);
    assert.equal(keyed.attempt, 2, 'a create with an Idempotency-Key is safe to retry');
  });

  it('a broker that accepts but never answers is BrokerUnavailable(timeout) after timeoutMs', async () => {
    const silent: Server = createServer(() => {}); // holds connections open, never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const port = (silent.address() as { port: number }).port;
      const slow = new SessionBroker({ baseUrl: `http://127.0.0.1:${port}`, timeoutMs: 300, retry: { retries: 0 } });
      const started = Date.now();
      const error = await slow.touch('x').catch((thrown: unknown) => thrown);
      assert.ok(error instanceof BrokerUnavailable, String(error));
      assert.equal(error.kind, 'timeout');
      assert.equal(error.mayHaveReachedBroker, true);
      assert.ok(Date.now() - started < 2_000);
    } finally {
      silent.close();
    }
  });
});

describe('events', () => {
  it('streams lifecycle events and resumes after a given id with Last-Event-ID', async () => {
    const stop = new AbortController();
    const seen: BrokerEvent[] = [];
    const session = await (async () => {
      const iterator = client.events({ signal: stop.signal });
      const first = iterator.next(); // opens the stream (it starts at "now")
      await new Promise((resolve) => setTimeout(resolve, 300));
      const created = await client.create({ principal: 'events-test' });
      await client.delete(created.id);
      const deadline = Date.now() + 10_000;
      for (let next = await first; !next.done; next = await iterator.next()) {
        seen.push(next.value);
        const mine = seen.filter((event) => 'sessionId' in event && event.sessionId === created.id);
        if (mine.length === 2 || Date.now() > deadline) break;
      }
      stop.abort();
      return created;
    })();
    const mine = seen.filter((event) => 'sessionId' in event && event.sessionId === session.id);
    assert.deepEqual(
      mine.map((event) => event.type),
      ['session.created', 'session.ended'],
    );
    const ended = mine[1]!;
    assert.ok('data' in ended && ended.data['reason'] === 'deleted');

    // Resume right after the created event: the next event of this session is its end.
    const resume = new AbortController();
    for await (const event of client.events({ lastEventId: mine[0]!.id, signal: resume.signal })) {
      if ('sessionId' in event && event.sessionId === session.id) {
        assert.equal(event.type, 'session.ended');
        assert.equal(event.id, ended.id);
        break;
      }
    }
    resume.abort();
  });

  it('reconnects after the broker restarts, resuming with Last-Event-ID: nothing emitted meanwhile is lost', async () => {
    const stop = new AbortController();
    const iterator = client.events({ signal: stop.signal, reconnectMinDelayMs: 50 });
    const first = iterator.next();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const before = await client.create({ principal: 'restart-test' });
    for (let next = await first; ; next = await iterator.next()) {
      assert.ok(!next.done);
      if ('sessionId' in next.value && next.value.sessionId === before.id) break;
    }
    // The consumer holds the iterator still while the broker goes away and comes back, and a session
    // is created and deleted meanwhile: a stream that restarted at "now" would never see it.
    await broker.stop();
    await broker.start();
    const during = await client.create({ principal: 'restart-test' });
    await client.delete(during.id);
    const seen: string[] = [];
    const deadline = Date.now() + 15_000;
    while (seen.length < 2 && Date.now() < deadline) {
      const next = await iterator.next();
      assert.ok(!next.done);
      if ('sessionId' in next.value && next.value.sessionId === during.id) seen.push(next.value.type);
    }
    stop.abort();
    await iterator.return(undefined);
    assert.deepEqual(seen, ['session.created', 'session.ended']);
  });

  it('replaces a connection that goes silent (no keep-alive) after idleTimeoutMs', async () => {
    let connections = 0;
    const silent = createHttpServer((_req, res) => {
      connections++;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(': one comment, then silence\n\n');
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const reconnects: unknown[] = [];
    const stop = new AbortController();
    try {
      const port = (silent.address() as { port: number }).port;
      const events = new SessionBroker({ baseUrl: `http://127.0.0.1:${port}` }).events({
        signal: stop.signal,
        idleTimeoutMs: 300,
        reconnectMinDelayMs: 10,
        reconnectMaxDelayMs: 20,
        onReconnect: (error) => reconnects.push(error),
      });
      const pending = events.next();
      const deadline = Date.now() + 5_000;
      while (connections < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      stop.abort();
      assert.equal((await pending).done, true, 'aborting ends the iterator quietly');
      assert.ok(connections >= 2, `reconnected ${connections - 1} times`);
      assert.ok(reconnects[0] instanceof BrokerUnavailable);
    } finally {
      silent.closeAllConnections();
      silent.close();
    }
  });

  it('yields stream.gap when resuming below what retention removed, then carries on', async () => {
    // Retention is at least 60 s on the broker, so mark tenant acme's events purged the way the purge does
    // (the horizon is per tenant).
    const created = await client.create({ principal: 'gap-test' });
    const marker = await (async () => {
      for await (const event of client.events({ lastEventId: '0' })) {
        if ('sessionId' in event && event.sessionId === created.id) return event.id;
      }
      throw new Error('created event not found');
    })();
    await broker.sql(
      `INSERT INTO broker_state (tenant, key, value, updated_at)
       VALUES ('acme', 'events_purged_through', ${marker}, now())
       ON CONFLICT (tenant, key) DO UPDATE SET value = EXCLUDED.value`,
    );
    await client.delete(created.id);
    const stop = new AbortController();
    const events: BrokerEvent[] = [];
    for await (const event of client.events({ lastEventId: '0', signal: stop.signal })) {
      events.push(event);
      if ('sessionId' in event && event.sessionId === created.id) break;
    }
    stop.abort();
    const gap = events[0]!;
    assert.equal(gap.type, 'stream.gap');
    assert.ok('resumedAfter' in gap);
    assert.equal(gap.lastEventId, '0');
    assert.equal(gap.resumedAfter, marker);
    assert.equal(events.at(-1)!.type, 'session.ended');
  });
});

describe('database outage', () => {
  it('the broker answers 503 with Retry-After: BrokerUnavailable(status) with retryAfter, retried only within budget', async () => {
    const session = await client.create();
    const pid = (await readFile(join(broker.dataDir, 'data', 'pg', 'postmaster.pid'), 'utf8')).split('\n')[0]!;
    process.kill(Number(pid), 'SIGINT'); // PostgreSQL fast shutdown: the broker is up, its database is not
    await new Promise((resolve) => setTimeout(resolve, 500));
    const error = await client.get(session.id).catch((thrown: unknown) => thrown);
    assert.ok(error instanceof BrokerUnavailable, String(error));
    assert.equal(error.kind, 'status');
    assert.equal(error.retryAfter, 2);
    assert.equal(error.attempt, 0, 'Retry-After 2 s is beyond the default 1 s budget: no wait, no retry');
    const patient = new SessionBroker({ baseUrl: broker.url, apiKey: TENANT_KEY, retry: { retries: 1, maxDelayMs: 2_500 } });
    const started = Date.now();
    const retried = await patient.get(session.id).catch((thrown: unknown) => thrown);
    assert.ok(retried instanceof BrokerUnavailable);
    assert.equal(retried.attempt, 1);
    assert.ok(Date.now() - started >= 2_000, 'the retry waited out Retry-After');
  });
});
