/**
 * Tier 2: the SDK's stateful transport on Express, every session registered in the real broker under
 * the id the SDK minted, the handshake refused on 429/503.
 */
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { SessionBroker, SessionNotFound } from '../src/index.js';
import { StatefulBrokerSessions } from '../src/mcp/stateful.js';
import { TENANT_KEY, startBroker, type BrokerProcess } from './support/broker.js';
import { buildServer, echoed, principalOf, verifier } from './support/mcp-app.js';

let broker: BrokerProcess;
let admin: SessionBroker;
let sessions: StatefulBrokerSessions;
let server: Server;
let url: string;

before(async () => {
  broker = await startBroker({ SESSION_BROKER_TENANT_QUOTAS: JSON.stringify({ acme: { max_sessions_per_principal: 2 } }) });
  admin = new SessionBroker({ baseUrl: broker.url, apiKey: TENANT_KEY });
  sessions = new StatefulBrokerSessions({
    broker: new SessionBroker({ baseUrl: broker.url, apiKey: TENANT_KEY, timeoutMs: 2_000 }),
    connect: (transport) => buildServer('stateful').connect(transport),
    owner: 'replica-1',
  });
  const app = express();
  app.use(express.json());
  app.all('/mcp', requireBearerAuth({ verifier }), sessions.nodeHandler());
  server = await new Promise<Server>((resolve) => {
    const listening = app.listen(0, '127.0.0.1', () => resolve(listening));
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
});

after(async () => {
  await sessions?.close();
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await broker?.dispose();
});

async function connect(token: string, sessionId?: string) {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
    ...(sessionId === undefined ? {} : { sessionId }),
  });
  const client = new Client({ name: 'stateful-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

const statusOf = (expected: number) => (error: unknown) => {
  assert.ok(error instanceof StreamableHTTPError && error.code === expected, String(error));
  return true;
};

describe('stateful transport registered in the broker', () => {
  let alice: Awaited<ReturnType<typeof connect>>;
  let sessionId: string;

  it('registers the SDK-minted id with the initialize facts before the client gets it', async () => {
    alice = await connect('alice-token');
    sessionId = alice.transport.sessionId!;
    assert.match(sessionId, /^[0-9a-f-]{36}$/, 'the SDK minted it (randomUUID)');
    const session = await admin.get(sessionId);
    assert.equal(session.principal, principalOf('alice'));
    assert.equal(session.owner, 'replica-1');
    assert.equal((session.metadata['mcp'] as { clientInfo: { name: string } }).clientInfo.name, 'stateful-test');
    for (let i = 0; i < 3; i++) {
      assert.equal(echoed(await alice.client.callTool({ name: 'echo', arguments: { text: String(i) } })).replica, 'stateful');
    }
    assert.equal(sessions.localSessionCount, 1);
  });

  it("another principal with alice's id gets 404 and the session is unharmed", async () => {
    const bob = await connect('bob-token', sessionId);
    await assert.rejects(bob.client.callTool({ name: 'echo', arguments: { text: 'x' } }), statusOf(404));
    await bob.transport.close();
    await alice.client.callTool({ name: 'echo', arguments: { text: 'mine' } });
  });

  it('a full quota refuses the handshake with 429 naming it; nothing is kept locally or in the broker', async () => {
    const second = await connect('alice-token');
    const local = sessions.localSessionCount;
    await assert.rejects(connect('alice-token'), (error: unknown) => {
      assert.ok(error instanceof StreamableHTTPError && error.code === 429, String(error));
      assert.match(error.message, /principal quota is full/);
      return true;
    });
    assert.equal(sessions.localSessionCount, local);
    const live: string[] = [];
    for await (const session of admin.list({ principal: principalOf('alice') })) live.push(session.id);
    assert.equal(live.length, 2);
    await second.transport.terminateSession();
    await second.client.close();
  });

  it('broker stopped: the handshake is refused with 503 (not the SDK 400), requests get 503; back: it continues', async () => {
    await broker.stop();
    try {
      const local = sessions.localSessionCount;
      const refused = await fetch(url, {
        method: 'POST',
        headers: { authorization: 'Bearer carol-token', 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }),
      });
      assert.equal(refused.status, 503);
      assert.match(refused.headers.get('retry-after') ?? '', /^\d+$/);
      assert.equal(sessions.localSessionCount, local);
      await assert.rejects(alice.client.callTool({ name: 'echo', arguments: { text: 'down' } }), statusOf(503));
    } finally {
      await broker.start();
    }
    await alice.client.callTool({ name: 'echo', arguments: { text: 'back' } });
  });

  it('a session revoked in the broker is 404 on its next request and its transport is closed', async () => {
    const carol = await connect('carol-token');
    const local = sessions.localSessionCount;
    assert.equal(await admin.revoke({ principal: principalOf('carol') }), 1);
    await assert.rejects(carol.client.callTool({ name: 'echo', arguments: { text: 'x' } }), statusOf(404));
    assert.equal(sessions.localSessionCount, local - 1);
    await carol.client.close();
  });

  it('DELETE ends the broker session and the local transport', async () => {
    await alice.transport.terminateSession();
    const error = await admin.get(sessionId).catch((thrown: unknown) => thrown);
    assert.ok(error instanceof SessionNotFound);
    assert.equal(error.reason, 'deleted');
    assert.equal(sessions.localSessionCount, 0);
    await alice.client.close();
  });
});
