/**
 * What a new MCP session is created (tier 1) or registered (tier 2) with in the broker: kind, principal,
 * OAuth client, protocol version, and the client's `initialize` facts under `metadata.mcp`.
 */
import type { SessionCreate } from '../types.js';
import { initializeFacts, type JsonRpcMessage } from './jsonrpc.js';

export interface SessionDefaults {
  kind?: string;
  idleTimeoutSeconds?: number;
  maxLifetimeSeconds?: number;
}

export function mcpSessionRecord(
  defaults: SessionDefaults,
  facts: { initialize: JsonRpcMessage; principal: string | undefined; clientId: string | undefined; owner?: string },
): SessionCreate {
  const { protocolVersion, clientInfo, capabilities } = initializeFacts(facts.initialize);
  return {
    kind: defaults.kind ?? 'mcp',
    ...(facts.principal === undefined ? {} : { principal: facts.principal }),
    // The OAuth client, when the SDK's auth middleware identified one: per-client quotas apply.
    ...(facts.clientId ? { client_id: facts.clientId } : {}),
    ...(facts.owner === undefined ? {} : { owner: facts.owner }),
    ...(protocolVersion === undefined ? {} : { protocol_version: protocolVersion }),
    metadata: { mcp: { clientInfo, capabilities, protocolVersion } },
    ...(defaults.idleTimeoutSeconds === undefined ? {} : { idle_timeout_seconds: defaults.idleTimeoutSeconds }),
    ...(defaults.maxLifetimeSeconds === undefined ? {} : { max_lifetime_seconds: defaults.maxLifetimeSeconds }),
  };
}
