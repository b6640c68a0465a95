/**
 * The little of JSON-RPC and MCP Streamable HTTP the middleware needs to read requests and to answer
 * the way the TypeScript SDK answers (same status codes, same body bytes).
 */
export type JsonRpcId = string | number;

export interface JsonRpcMessage {
  jsonrpc?: unknown;
  id?: JsonRpcId | null;
  method?: unknown;
  params?: unknown;
  result?: unknown;
  error?: unknown;
}

export const SESSION_ID_HEADER = 'mcp-session-id';
export const PROTOCOL_VERSION_HEADER = 'mcp-protocol-version';

/**
 * Protocol revisions that have `initialize` and `Mcp-Session-Id` (the handshake era). A request that
 * declares any other revision in `MCP-Protocol-Version` (2026-07-28 removed protocol sessions) is
 * passed to the app untouched.
 */
export const HANDSHAKE_ERA_PROTOCOL_VERSIONS: readonly string[] = [
  '2024-10-07',
  '2024-11-05',
  '2025-03-26',
  '2025-06-18',
  '2025-11-25',
];

/** The messages of a POST body (one message or a batch), or undefined when it is not JSON-RPC shaped. */
export function messagesOf(body: unknown): JsonRpcMessage[] | undefined {
  const items = Array.isArray(body) ? body : [body];
  if (items.length === 0) return undefined;
  for (const item of items) {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) return undefined;
  }
  return items as JsonRpcMessage[];
}

/** A request (it has an id) as opposed to a notification or a response. */
export function isRequest(message: JsonRpcMessage): message is JsonRpcMessage & { id: JsonRpcId; method: string } {
  return typeof message.method === 'string' && (typeof message.id === 'string' || typeof message.id === 'number');
}

export function isInitializeRequest(message: JsonRpcMessage): message is JsonRpcMessage & { id: JsonRpcId; method: 'initialize' } {
  return isRequest(message) && message.method === 'initialize';
}

/** What the broker records about the client from its `initialize` (clientInfo, capabilities, version). */
export interface InitializeFacts {
  protocolVersion: string | undefined;
  clientInfo: unknown;
  capabilities: unknown;
}

export function initializeFacts(message: JsonRpcMessage): InitializeFacts {
  const params = (message.params ?? {}) as Record<string, unknown>;
  return {
    protocolVersion: typeof params['protocolVersion'] === 'string' ? params['protocolVersion'] : undefined,
    clientInfo: params['clientInfo'] ?? null,
    capabilities: params['capabilities'] ?? null,
  };
}

/**
 * A JSON-RPC error body, members in the order the TypeScript SDK writes them
 * (`{"jsonrpc":"2.0","error":{...},"id":null}`), so equal answers are equal bytes.
 */
export function errorBody(code: number, message: string, id: JsonRpcId | null = null, data?: unknown): string {
  const error: { code: number; message: string; data?: unknown } = { code, message };
  if (data !== undefined) error.data = data;
  return JSON.stringify({ jsonrpc: '2.0', error, id });
}
