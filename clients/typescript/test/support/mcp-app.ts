/**
 * The MCP server every test fleet runs: a real `McpServer` of the TypeScript SDK with one tool, and a
 * token verifier for the SDK's `requireBearerAuth` so requests carry real `AuthInfo` principals.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { OAuthTokenVerifier } from '@modelcontextprotocol/sdk/server/auth/provider.js';
import { z } from 'zod';

export const ISSUER = 'https://idp.test';
export const CLIENT_ID = 'e2e-client';

/** Bearer token → subject. `broken` is a user for whom the app fails (to test a failed initialize). */
export const TOKENS: Record<string, string> = {
  'alice-token': 'alice',
  'bob-token': 'bob',
  'carol-token': 'carol',
  'broken-token': 'broken',
};

/** The principal the middleware's default derives from these tokens. */
export const principalOf = (subject: string) => `${ISSUER}|${subject}|${CLIENT_ID}`;

export const verifier: OAuthTokenVerifier = {
  async verifyAccessToken(token: string): Promise<AuthInfo> {
    const subject = TOKENS[token];
    if (!subject) throw new InvalidTokenError('unknown token');
    return {
      token,
      clientId: CLIENT_ID,
      scopes: [],
      expiresAt: Math.floor(Date.now() / 1000) + 3600,
      extra: { iss: ISSUER, sub: subject },
    };
  },
};

/** One tool, `echo`, answering which replica served it and which session id it saw. */
export function buildServer(replica: string): McpServer {
  const server = new McpServer({ name: `e2e-${replica}`, version: '1.0.0' });
  server.registerTool(
    'echo',
    { description: 'echo with the serving replica and session', inputSchema: { text: z.string() } },
    async ({ text }, extra) => {
      const sessionId = extra.requestInfo?.headers['mcp-session-id'];
      return { content: [{ type: 'text', text: JSON.stringify({ replica, sessionId, text }) }] };
    },
  );
  return server;
}

/** The parsed payload of an `echo` result. */
export function echoed(result: unknown): { replica: string; sessionId: string; text: string } {
  const content = (result as { content: Array<{ type: string; text: string }> }).content;
  return JSON.parse(content[0]!.text) as { replica: string; sessionId: string; text: string };
}
