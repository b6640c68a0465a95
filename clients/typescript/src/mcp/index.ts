/**
 * Tier 1 middleware for MCP servers on the TypeScript SDK: the broker is the session table and the
 * app runs the SDK's stateless transport, so any replica serves any session. Tier 2 (a stateful
 * transport registered in the broker) is in `session-broker-client/mcp/stateful`.
 */
export { brokerSessions, withBrokerSessions } from './node.js';
export type { NodeRequest, NodeSessionMiddleware, NextFunction } from './node.js';
export { brokerSessionsFetch } from './web.js';
export type { WebApp, WebAppContext, WebHandlerOptions, WebSessionHandler } from './web.js';
export { SessionGate } from './gate.js';
export type { BrokerSessionsOptions, Admission, AdmittedSession, Outcome, PostBody, GateRequest } from './gate.js';
export { principalFromAuthInfo } from './principal.js';
export type { PrincipalResolver, RequestHead } from './principal.js';
export { notFoundReply, type NotFoundBody, type Reply } from './replies.js';
export {
  HANDSHAKE_ERA_PROTOCOL_VERSIONS,
  SESSION_ID_HEADER,
  PROTOCOL_VERSION_HEADER,
  errorBody,
} from './jsonrpc.js';
export { RequestAnalytics, type AnalyticsOptions } from '../analytics.js';
