/**
 * One replica of the test fleet, as its own process: Express + the SDK's bearer auth + the broker
 * middleware (tier 1) + a fresh stateless `StreamableHTTPServerTransport` per request.
 * Env: BROKER_URL, BROKER_KEY, REPLICA (name). Prints `listening <port>` when ready.
 */
import express from 'express';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { SessionBroker } from '../../src/index.js';
import { brokerSessions } from '../../src/mcp/index.js';
import { buildServer, verifier } from './mcp-app.js';

const name = process.env['REPLICA'] ?? 'replica';
const broker = new SessionBroker({ baseUrl: process.env['BROKER_URL']!, apiKey: process.env['BROKER_KEY']!, timeoutMs: 2_000 });
const sessions = brokerSessions({ broker });

const app = express();
app.use(express.json());
// Auth first: the middleware binds sessions to the principal the SDK's auth middleware established.
app.use('/mcp', requireBearerAuth({ verifier }), sessions);
app.all('/mcp', async (req, res) => {
  if (req.auth?.extra?.['sub'] === 'broken') throw new Error('this user cannot be served (test: the app fails)');
  const server = buildServer(name);
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => {
    void transport.close();
    void server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, req.body);
});

const listener = app.listen(0, '127.0.0.1', () => {
  const address = listener.address();
  console.log(`listening ${typeof address === 'object' && address ? address.port : ''}`);
});
process.on('SIGTERM', () => {
  listener.closeAllConnections();
  listener.close(() => void sessions.close().then(() => process.exit(0)));
});
