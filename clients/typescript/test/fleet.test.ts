/**
 * The fleet: the real broker, two Express replicas of a real TypeScript SDK MCP server (each its
 * own process, stateless transport behind the tier-1 middleware), a strict round-robin proxy, and the
 * SDK's own Client with StreamableHTTPClientTransport.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { SessionBroker } from '../src/index.js';
import { TENANT_KEY, startBroker, type BrokerProcess } from './support/broker.js';
import { buildServer, echoed, principalOf } from './support/mcp-app.js';
import { startProgram, type NodeProcess } from './support/processes.js';
import { startRoundRobinProxy, type RoundRobinProxy } from './support/proxy.js';

let broker: BrokerProcess;
let replicas: NodeProcess[] = [];
let proxy: RoundRobinProxy;
let admin: SessionBroker; // the test's own view of the broker (same tenant as the replicas)

const TOOL_CALL = { jsonrpc: '2.0', id: 99, method: 'tools/call', params: { name: 'echo', arguments: { text: 'raw' } } };
const INITIALIZE = {
  jsonrpc: '2.0',
  id: 0,
  method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
};

before(async () => {
  broker = await startBroker({
    SESSION_BROKER_TOUCH_GRANULARITY_SECONDS: '0', // every touch writes, so last_seen_at visibly moves
    SESSION_BROKER_TENANT_QUOTAS: JSON.stringify({ acme: { max_sessions_per_principal: 2 } }),
  });
  admin = new SessionBroker({ baseUrl: broker.url, apiKey: TENANT_KEY });
  replicas = await Promise.all(
    ['A', 'B'].map((name) =>
      startProgram('test/support/replica.ts', { BROKER_URL: broker.url, BROKER_KEY: TENANT_KEY, REPLICA: name }),
    ),
  );
  proxy = await startRoundRobinProxy(replicas.map((replica) => replica.url));
});

after(async () => {
  await proxy?.close();
  await Promise.all(replicas.map((replica) => replica.stop()));
  await broker?.dispose();
});

async function connect(token: string, sessionId?: string) {
  const transport = new StreamableHTTPClientTransport(new URL(`${proxy.url}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
    ...(sessionId === undefined ? {} : { sessionId }),
  });
  const client = new Client({ name: 'fleet-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

function post(token: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${proxy.url}/mcp`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-11-25',
      ...headers,
    },
    body: JSON.stringify(body),
  });
}

async function sessionsOf(subject: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const session of admin.list({ principal: principalOf(subject) })) ids.push(session.id);
  return ids;
}

/** The 404 the SDK's own stateful transport answers for an id it does not know. */
async function sdkNotFound(): Promise<{ status: number; type: string | null; body: string }> {
  const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: () => 'the-real-one' });
  await buildServer('sdk').connect(transport);
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  await transport.handleRequest(new Request('http://sdk/mcp', { method: 'POST', headers, body: JSON.stringify(INITIALIZE) }));
  const answer = await transport.handleRequest(
    new Request('http://sdk/mcp', {
      method: 'POST',
      headers: { ...headers, 'mcp-session-id': 'another-one', 'mcp-protocol-version': '2025-11-25' },
      body: JSON.stringify(TOOL_CALL),
    }),
  );
  await transport.close();
  return { status: answer.status, type: answer.headers.get('content-type'), body: await answer.text() };
}

describe('two replicas behind a strict round-robin proxy', () => {
  let alice: Awaited<ReturnType<typeof connect>>;
  let sessionId: string;

  it('initialize then 20 tool calls: 20/20 succeed with one session id, served by both replicas', async () => {
    alice = await connect('alice-token');
    sessionId = alice.transport.sessionId!;
    assert.ok(sessionId, 'initialize answered with Mcp-Session-Id');
    const before = await admin.get(sessionId);
    const results: Array<ReturnType<typeof echoed>> = [];
    const failures: unknown[] = [];
    for (let i = 0; i < 20; i++) {
      try {
        results.push(echoed(await alice.client.callTool({ name: 'echo', arguments: { text: `call ${i}` } })));
      } catch (error) {
        failures.push(error);
      }
    }
    assert.deepEqual(failures, []);
    assert.equal(results.length, 20);
    assert.deepEqual(new Set(results.map((result) => result.sessionId)), new Set([sessionId]));
    assert.deepEqual(new Set(results.map((result) => result.replica)), new Set(['A', 'B']));
    assert.equal(alice.transport.sessionId, sessionId);

    const after = await admin.get(sessionId);
    assert.ok(Date.parse(after.last_seen_at) > Date.parse(before.last_seen_at), 'every request touched the broker');
    // What the middleware recorded from initialize.
    assert.equal(after.kind, 'mcp');
    assert.equal(after.principal, principalOf('alice'));
    assert.equal(after.client_id, 'e2e-client');
    const mcp = after.metadata['mcp'] as { clientInfo: { name: string }; protocolVersion: string; capabilities: unknown };
    assert.equal(mcp.clientInfo.name, 'fleet-test');
    assert.equal(after.protocol_version, mcp.protocolVersion);
    assert.ok(mcp.capabilities && typeof mcp.capabilities === 'object');
  });

  it("another principal presenting alice's id gets the SDK's 404, byte for byte; alice's session is unharmed", async () => {
    const before = await admin.get(sessionId);
    const answers = [await post('bob-token', TOOL_CALL, { 'mcp-session-id': sessionId }), await post('bob-token', TOOL_CALL, { 'mcp-session-id': sessionId })];
    const sdk = await sdkNotFound();
    for (const answer of answers) {
      assert.equal(answer.status, 404);
      assert.equal(answer.headers.get('content-type'), sdk.type);
      assert.equal(await answer.text(), sdk.body);
    }
    assert.equal(sdk.status, 404);
    assert.equal(sdk.body, '{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}');
    // The SDK client of another user, given the id, fails the same way.
    const bob = await connect('bob-token', sessionId);
    await assert.rejects(bob.client.callTool({ name: 'echo', arguments: { text: 'hijack' } }), (error: unknown) => {
      assert.ok(error instanceof StreamableHTTPError && error.code === 404, String(error));
      return true;
    });
    await bob.transport.close();
    const after = await admin.get(sessionId);
    assert.equal(after.last_seen_at, before.last_seen_at, 'a mismatched touch changes nothing');
    assert.equal(echoed(await alice.client.callTool({ name: 'echo', arguments: { text: 'still mine' } })).sessionId, sessionId);
  });

  it('GET is 405 with Allow; a request without an id is 400; an unknown id is 404', async () => {
    const get = await fetch(`${proxy.url}/mcp`, {
      headers: { authorization: 'Bearer alice-token', accept: 'text/event-stream', 'mcp-session-id': sessionId },
    });
    assert.equal(get.status, 405);
    assert.equal(get.headers.get('allow'), 'POST, DELETE');
    const missing = await post('alice-token', TOOL_CALL);
    assert.equal(missing.status, 400);
    assert.equal(((await missing.json()) as { error: { code: number } }).error.code, -32000);
    const unknown = await post('alice-token', TOOL_CALL, { 'mcp-session-id': 'no-such-session' });
    assert.equal(unknown.status, 404);
  });

  it('a 2026-07-28 (sessionless) request reaches the app untouched: no broker session, no session header', async () => {
    const before = (await admin.stats()).created_total;
    const answer = await post('alice-token', { jsonrpc: '2.0', id: 5, method: 'server/discover' }, { 'mcp-protocol-version': '2026-07-28' });
    const text = await answer.text();
    // SDK 1.32 does not speak 2026-07-28; its own answer (not the middleware's) proves the app got the request.
    assert.equal(answer.status, 400);
    assert.match(text, /Unsupported protocol version: 2026-07-28/);
    assert.equal(answer.headers.get('mcp-session-id'), null);
    assert.equal((await admin.stats()).created_total, before);
  });

  it('broker stopped: every request is 503 with Retry-After, never 404; broker back: the same session continues', async () => {
    await broker.stop();
    try {
      const logStart = proxy.log.length;
      for (let i = 0; i < 4; i++) {
        const answer = await post('alice-token', TOOL_CALL, { 'mcp-session-id': sessionId });
        assert.equal(answer.status, 503);
        assert.match(answer.headers.get('retry-after') ?? '', /^\d+$/);
        const body = (await answer.json()) as { error: { code: number } };
        assert.equal(body.error.code, -32603);
      }
      assert.deepEqual(new Set(proxy.log.slice(logStart).map((entry) => entry.upstream)), new Set(replicas.map((r) => r.url)));
      await assert.rejects(alice.client.callTool({ name: 'echo', arguments: { text: 'outage' } }), (error: unknown) => {
        assert.ok(error instanceof StreamableHTTPError && error.code === 503, String(error));
        return true;
      });
      const refused = await post('carol-token', INITIALIZE);
      assert.equal(refused.status, 503, 'no initialize without the broker: the app is not called');
    } finally {
      await broker.start();
    }
    for (let i = 0; i < 2; i++) {
      const result = echoed(await alice.client.callTool({ name: 'echo', arguments: { text: `after ${i}` } }));
      assert.equal(result.sessionId, sessionId);
    }
  });

  it('a principal at its quota: initialize fails with a JSON-RPC error naming the quota, no session left behind', async () => {
    const carol = [await connect('carol-token'), await connect('carol-token')];
    assert.equal((await sessionsOf('carol')).length, 2);
    const created = (await admin.stats()).created_total;
    const refused = await post('carol-token', INITIALIZE);
    assert.equal(refused.status, 429);
    assert.match(refused.headers.get('retry-after') ?? '', /^\d+$/);
    const body = (await refused.json()) as { id: number; error: { code: number; message: string; data: { scope: string; limit: number } } };
    assert.equal(body.id, 0, 'the error answers the initialize request');
    assert.match(body.error.message, /principal quota is full/);
    assert.deepEqual({ scope: body.error.data.scope, limit: body.error.data.limit }, { scope: 'principal', limit: 2 });
    await assert.rejects(connect('carol-token'), /quota/);
    assert.equal((await sessionsOf('carol')).length, 2);
    assert.equal((await admin.stats()).created_total, created);
    for (const { client } of carol) await client.close();
  });

  it('an app that fails the initialize leaves no broker session', async () => {
    const created = (await admin.stats()).created_total;
    await assert.rejects(connect('broken-token'), (error: unknown) => {
      assert.ok(error instanceof StreamableHTTPError && error.code === 500, String(error));
      return true;
    });
    assert.equal((await admin.stats()).created_total, created + 1, 'the session was created before the app ran');
    const deadline = Date.now() + 3_000;
    while ((await sessionsOf('broken')).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(await sessionsOf('broken'), []);
  });

  it('DELETE through one replica → the canonical 404 through the other; the client can initialize again', async () => {
    await alice.transport.terminateSession();
    const deleted = proxy.log.at(-1)!;
    assert.equal(deleted.method, 'DELETE');
    assert.equal(deleted.status, 200);
    const answer = await post('alice-token', TOOL_CALL, { 'mcp-session-id': sessionId });
    const next = proxy.log.at(-1)!;
    assert.notEqual(next.upstream, deleted.upstream);
    assert.equal(answer.status, 404);
    assert.equal(await answer.text(), (await sdkNotFound()).body);
    await alice.client.close();

    const again = await connect('alice-token');
    assert.ok(again.transport.sessionId && again.transport.sessionId !== sessionId);
    assert.equal(echoed(await again.client.callTool({ name: 'echo', arguments: { text: 'new' } })).sessionId, again.transport.sessionId);
    await again.client.close();
  });
});
