/**
 * Tier 1's other adapters against the real broker and the SDK's Client: the web-standard handler run by
 * Hono (served by @hono/node-server) in front of WebStandardStreamableHTTPServerTransport, and the plain
 * `node:http` listener (no Express, no body parser, no auth) in front of StreamableHTTPServerTransport.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { serve, type ServerType } from '@hono/node-server';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { Hono } from 'hono';
import { RequestAnalytics, SessionBroker } from '../src/index.js';
import { brokerSessionsFetch, withBrokerSessions, type WebSessionHandler } from '../src/mcp/index.js';
import { TENANT_KEY, startBroker, type BrokerProcess } from './support/broker.js';
import { buildServer, echoed, principalOf, verifier } from './support/mcp-app.js';

let broker: BrokerProcess;
let admin: SessionBroker;
let server: ServerType;
let url: string;
let handler: WebSessionHandler;
const warnings: string[] = [];

/** An initialize the app answers with a JSON-RPC error inside a 200 SSE stream. */
const FAILING_USER = 'carol';

before(async () => {
  broker = await startBroker();
  admin = new SessionBroker({ baseUrl: broker.url, apiKey: TENANT_KEY });
  handler = brokerSessionsFetch(
    {
      broker: new SessionBroker({ baseUrl: broker.url, apiKey: TENANT_KEY }),
      // Flushed by the test itself (the timer would only race it).
      analytics: { flushIntervalMs: 60_000, warn: (message) => warnings.push(message) },
    },
    async (request, context) => {
      if (context.authInfo?.extra?.['sub'] === FAILING_USER) {
        const failure = '{"jsonrpc":"2.0","id":0,"error":{"code":-32603,"message":"upstream unavailable"}}';
        return new Response(`event: message\ndata: ${failure}\n\n`, { headers: { 'content-type': 'text/event-stream' } });
      }
      const mcp = buildServer('hono');
      const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined });
      await mcp.connect(transport);
      return transport.handleRequest(request, { parsedBody: context.parsedBody, ...(context.authInfo ? { authInfo: context.authInfo } : {}) });
    },
  );
  const app = new Hono<{ Variables: { auth: AuthInfo } }>();
  app.use('/mcp', async (c, next) => {
    const token = c.req.header('authorization')?.replace(/^Bearer /, '') ?? '';
    try {
      c.set('auth', await verifier.verifyAccessToken(token));
    } catch {
      return c.json({ error: 'invalid_token' }, 401);
    }
    await next();
  });
  app.all('/mcp', (c) => handler(c.req.raw, { authInfo: c.get('auth') }));
  server = await new Promise<ServerType>((resolve) => {
    const started = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(started));
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
});

after(async () => {
  await handler?.close();
  await new Promise((resolve) => server?.close(resolve));
  await broker?.dispose();
});

async function connect(token: string) {
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  const client = new Client({ name: 'hono-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

describe('web-standard handler on Hono', () => {
  it('serves an SDK client through the broker: one session, bound to the principal', async () => {
    const { client, transport } = await connect('alice-token');
    const sessionId = transport.sessionId!;
    for (let i = 0; i < 3; i++) {
      assert.equal(echoed(await client.callTool({ name: 'echo', arguments: { text: String(i) } })).sessionId, sessionId);
    }
    const session = await admin.get(sessionId);
    assert.equal(session.principal, principalOf('alice'));
    await transport.terminateSession();
    await assert.rejects(admin.get(sessionId), /deleted/);
    await client.close();
  });

  it('an initialize the app answers with a JSON-RPC error (inside a 200 SSE stream) ends its broker session', async () => {
    const created = (await admin.stats()).created_total;
    await assert.rejects(connect('carol-token'), /upstream unavailable/);
    assert.equal((await admin.stats()).created_total, created + 1);
    const deadline = Date.now() + 3_000;
    let left: unknown[] = [];
    do {
      left = [];
      for await (const session of admin.list({ principal: principalOf(FAILING_USER) })) left.push(session);
    } while (left.length > 0 && Date.now() < deadline);
    assert.deepEqual(left, []);
  });

  it('analytics are buffered off the request path, then flushed to POST /v1/analytics: the broker counts them', async () => {
    const analytics = handler.gate.requestAnalytics!;
    await analytics.flush(); // whatever earlier tests buffered
    const before = await admin.stats();
    const recordedBefore = analytics.counts.recorded;
    const toolCalls = (stats: typeof before) => stats.requests.busiest_methods.find((entry) => entry.method === 'tools/call')?.requests ?? 0;
    const { client } = await connect('bob-token'); // initialize + notifications/initialized
    await client.callTool({ name: 'echo', arguments: { text: 'counted' } });
    await client.callTool({ name: 'echo', arguments: { text: 'counted too' } });
    await client.close();
    const pending = analytics.pending;
    assert.ok(pending >= 4, `buffered ${pending} requests`);
    const untouched = await admin.stats();
    assert.equal(untouched.requests.requests_total, before.requests.requests_total, 'nothing sent before the flush');
    await analytics.flush();
    assert.equal(analytics.pending, 0);
    assert.equal(analytics.disabled, false);
    assert.equal(analytics.counts.recorded - recordedBefore, pending, 'the broker recorded every buffered report');
    const deadline = Date.now() + 10_000;
    let after = await admin.stats();
    while (after.requests.requests_total < before.requests.requests_total + pending && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      after = await admin.stats();
    }
    assert.equal(after.requests.requests_total, before.requests.requests_total + pending);
    assert.equal(toolCalls(after), toolCalls(before) + 2);
    assert.deepEqual(warnings, []);
  });

  it('analytics switch themselves off with one warning where the broker answers 404 for POST /v1/analytics', async () => {
    // The real broker's 404 `not-found`: under this base URL it serves nothing (as an older broker
    // without the endpoint answers for /v1/analytics).
    const seen: string[] = [];
    const elsewhere = new SessionBroker({ baseUrl: `${broker.url}/no-such-prefix`, apiKey: TENANT_KEY });
    const analytics = new RequestAnalytics(elsewhere, { flushIntervalMs: 60_000, warn: (message) => seen.push(message) });
    for (let i = 0; i < 3; i++) analytics.record({ method: 'tools/call', ok: true, duration_ms: 1 });
    await analytics.flush();
    assert.equal(analytics.disabled, true);
    assert.equal(analytics.counts.dropped, 3);
    assert.equal(seen.length, 1);
    assert.match(seen[0]!, /no POST \/v1\/analytics/);
    analytics.record({ method: 'tools/call', ok: true, duration_ms: 1 });
    await analytics.flush();
    assert.equal(analytics.pending, 0, 'off: nothing is buffered any more');
    assert.equal(seen.length, 1, 'one warning only');
    await analytics.close();
  });
});

describe('plain node:http listener', () => {
  let server: Server;
  let listener: ReturnType<typeof withBrokerSessions>;
  let nodeUrl: string;

  before(async () => {
    listener = withBrokerSessions({ broker: new SessionBroker({ baseUrl: broker.url, apiKey: TENANT_KEY }) }, async (req, res) => {
      const mcp = buildServer('node-http');
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
      res.on('close', () => void transport.close());
      await mcp.connect(transport);
      await transport.handleRequest(req, res, req.body); // req.body: parsed by the middleware itself
    });
    server = createServer(listener);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    nodeUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  });
  after(async () => {
    await listener?.close();
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
  });

  it('serves an SDK client without a body parser or auth: unbound sessions, DELETE then 404', async () => {
    const transport = new StreamableHTTPClientTransport(new URL(nodeUrl));
    const client = new Client({ name: 'node-http-test', version: '1.0.0' });
    await client.connect(transport);
    const sessionId = transport.sessionId!;
    for (let i = 0; i < 2; i++) {
      assert.equal(echoed(await client.callTool({ name: 'echo', arguments: { text: String(i) } })).sessionId, sessionId);
    }
    assert.equal((await admin.get(sessionId)).principal, null, 'no auth: no principal');
    await transport.terminateSession();
    const answer = await fetch(nodeUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': sessionId },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    assert.equal(answer.status, 404);
    await client.close();
  });

  it('a handler that throws is a 500 and leaves no session behind', async () => {
    const failing = withBrokerSessions({ broker: new SessionBroker({ baseUrl: broker.url, apiKey: TENANT_KEY }), onError: () => {} }, () => {
      throw new Error('app down');
    });
    const crashing = createServer(failing);
    await new Promise<void>((resolve) => crashing.listen(0, '127.0.0.1', resolve));
    try {
      const created = (await admin.stats()).created_total;
      const live = (await admin.stats()).live;
      const answer = await fetch(`http://127.0.0.1:${(crashing.address() as AddressInfo).port}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }),
      });
      assert.equal(answer.status, 500);
      assert.equal(answer.headers.get('mcp-session-id'), null);
      assert.equal((await admin.stats()).created_total, created + 1);
      const deadline = Date.now() + 3_000;
      while ((await admin.stats()).live > live && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal((await admin.stats()).live, live);
    } finally {
      await new Promise((resolve) => crashing.close(resolve));
    }
  });
});
