/**
 * session-broker-client: a typed client for the session and state-handle broker, and a drop-in,
 * broker-backed replacement for in-process MCP session managers. The MCP middleware is in
 * `session-broker-client/mcp` (tier 1) and `session-broker-client/mcp/stateful` (tier 2).
 */
export { SessionBroker, sessionPath, isValidSessionId, assertSessionId } from './client.js';
export type { SessionBrokerOptions, AsPrincipal, CreateOptions, PatchOptions, TouchOptions, ListOptions } from './client.js';
export type { RetryPolicy } from './http.js';
export type { EventStreamOptions } from './events.js';
export * from './errors.js';
export { BrokerSessionManager } from './session-manager.js';
export type {
  BrokerSessionManagerOptions,
  CreateSessionOptions,
  ManagedSession,
  SessionStatistics,
  ExpirationDetails,
  ExpirationHandler,
} from './session-manager.js';
export { RequestAnalytics, type AnalyticsOptions } from './analytics.js';
export type * from './types.js';
