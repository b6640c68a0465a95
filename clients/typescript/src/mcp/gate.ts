/**
 * Tier 1's decisions, independent of any HTTP framework: the broker is the session table in front of
 * an app that runs the SDK's *stateless* transport. The Express/node:http and web-standard adapters
 * only move bytes; every rule lives here once:
 *
 * - `initialize` without a session id → broker `create` before the app does any work (a full quota or
 *   an outage is answered without calling the app); the app then sees the new id in `mcp-session-id`;
 *   if the app fails the initialize, the broker session is ended again.
 * - any other request with an id → broker `touch` with `Session-Principal`; unknown, ended or another
 *   principal's id → the SDK's 404; broker unavailable → 503 + Retry-After, never 404.
 * - no id and not `initialize` → the SDK's 400. DELETE → broker delete. GET (no standalone stream in a
 *   stateless fleet) → 405 with Allow.
 * - a request declaring a sessionless protocol revision (2026-07-28 and later) → the app, untouched.
 */
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { RequestAnalytics, type AnalyticsOptions } from '../analytics.js';
import { isValidSessionId, type SessionBroker } from '../client.js';
import {
  HANDSHAKE_ERA_PROTOCOL_VERSIONS,
  PROTOCOL_VERSION_HEADER,
  SESSION_ID_HEADER,
  isInitializeRequest,
  isRequest,
  messagesOf,
  type JsonRpcId,
  type JsonRpcMessage,
} from './jsonrpc.js';
import { principalFromAuthInfo, type PrincipalResolver, type RequestHead } from './principal.js';
import { mcpSessionRecord } from './session-record.js';
import {
  alreadyInitializedReply,
  bodyTooLargeReply,
  deletedReply,
  failureReply,
  methodNotAllowedReply,
  missingSessionIdReply,
  notFoundReply,
  type NotFoundBody,
  type Reply,
} from './replies.js';

export interface BrokerSessionsOptions {
  broker: SessionBroker;
  /** Who a request acts for. Default: the SDK's AuthInfo as `issuer|subject|clientId` (see principal.ts). */
  principal?: PrincipalResolver;
  /** The broker session's `kind`. Default 'mcp'. */
  kind?: string;
  /** Idle timeout of new sessions; default: the broker's (`DEFAULT_IDLE_TIMEOUT_SECONDS`). */
  idleTimeoutSeconds?: number;
  /** Absolute lifetime of new sessions; default: the broker's. */
  maxLifetimeSeconds?: number;
  /** The 404 body. Default the TypeScript SDK's: -32001 "Session not found". */
  notFound?: NotFoundBody;
  /** Retry-After (seconds) on a 503 when the broker could not be reached to say. Default 1. */
  retryAfterSeconds?: number;
  /** Revisions that use sessions; any other `MCP-Protocol-Version` passes through. */
  sessionProtocolVersions?: readonly string[];
  /**
   * Request analytics (method, ok, duration) sent in the background to the broker's batch endpoint.
   * Off by default; `true` or options to enable, or a shared `RequestAnalytics`.
   */
  analytics?: boolean | AnalyticsOptions | RequestAnalytics;
  /** Largest POST body read (bytes). Default 4 MiB, as the SDK. */
  maxBodyBytes?: number;
  /** Unexpected failures (a broker misconfiguration, the app throwing). Default `console.error`. */
  onError?: (error: unknown) => void;
}

/** A POST body as read by an adapter. */
export type PostBody = { kind: 'json'; value: unknown } | { kind: 'invalid' } | { kind: 'too-large' };

export interface GateRequest extends RequestHead {
  auth: AuthInfo | undefined;
  /** Reads the POST body; called only when the gate needs it (never for sessionless requests). */
  readBody(maxBytes: number): Promise<PostBody>;
}

/** A request the app should serve, for this session. */
export interface AdmittedSession {
  id: string;
  /** The broker session was created by this request (an `initialize`). */
  created: boolean;
  /** The parsed body the adapter hands to the app (undefined if it was not valid JSON). */
  parsedBody: unknown;
  messages: JsonRpcMessage[];
  initializeId: JsonRpcId | undefined;
  principal: string | undefined;
  startedAt: number;
}

export type Admission =
  | { action: 'reply'; reply: Reply }
  | { action: 'pass' }
  | { action: 'forward'; session: AdmittedSession };

export interface Outcome {
  status: number;
  /** Ids of the requests the app answered with a JSON-RPC error. */
  errorIds: ReadonlySet<JsonRpcId>;
  /** No answer reached the client: the app threw, or the connection went before the answer started. */
  threw?: boolean;
}

const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
const PASS: Admission = { action: 'pass' };

export class SessionGate {
  readonly maxBodyBytes: number;
  private readonly broker: SessionBroker;
  private readonly sessionVersions: ReadonlySet<string>;
  private readonly analytics: RequestAnalytics | undefined;
  private readonly ownsAnalytics: boolean;
  readonly onError: (error: unknown) => void;

  constructor(private readonly options: BrokerSessionsOptions) {
    if (!options.broker) throw new TypeError('broker session middleware needs a SessionBroker (options.broker)');
    this.broker = options.broker;
    this.maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.sessionVersions = new Set(options.sessionProtocolVersions ?? HANDSHAKE_ERA_PROTOCOL_VERSIONS);
    this.onError = options.onError ?? ((error) => console.error('session-broker-client/mcp:', error));
    const analytics = options.analytics;
    this.ownsAnalytics = !(analytics instanceof RequestAnalytics) && Boolean(analytics);
    this.analytics =
      analytics instanceof RequestAnalytics
        ? analytics
        : analytics
          ? new RequestAnalytics(this.broker, analytics === true ? {} : analytics)
          : undefined;
  }

  async admit(request: GateRequest): Promise<Admission> {
    const version = request.header(PROTOCOL_VERSION_HEADER);
    if (version !== undefined && !this.sessionVersions.has(version)) return PASS;
    const sessionId = request.header(SESSION_ID_HEADER);
    const principal = (this.options.principal ?? principalFromAuthInfo)(request.auth, request) ?? undefined;
    switch (request.method) {
      case 'POST':
        return this.admitPost(request, sessionId, principal);
      case 'DELETE':
        return this.admitDelete(sessionId, principal);
      default:
        return { action: 'reply', reply: methodNotAllowedReply() };
    }
  }

  /** Headers to add to the app's response: the session id, except on a failed initialize. */
  responseHeaders(session: AdmittedSession, status: number): Record<string, string> {
    if (session.created && status >= 300) return {};
    return { [SESSION_ID_HEADER]: session.id };
  }

  /** Whether `settle` needs to see the response body (errors inside a 200 SSE stream). */
  wantsOutcome(session: AdmittedSession): boolean {
    return session.created || this.analytics !== undefined;
  }

  /** After the app answered: end a session whose initialize failed; record analytics. Never throws. */
  async settle(session: AdmittedSession, outcome: Outcome): Promise<void> {
    const failed = (id: JsonRpcId | undefined) =>
      Boolean(outcome.threw) || outcome.status >= 400 || (id !== undefined && outcome.errorIds.has(id));
    if (this.analytics) {
      const duration = Date.now() - session.startedAt;
      for (const message of session.messages) {
        if (typeof message.method !== 'string') continue;
        this.analytics.record({
          method: message.method,
          ok: !failed(isRequest(message) ? message.id : undefined),
          duration_ms: duration,
        });
      }
    }
    if (session.created && failed(session.initializeId)) {
      try {
        // The client never got a working session: leave none behind to count against its quota.
        await this.broker.delete(session.id, { principal: session.principal });
      } catch (error) {
        this.onError(error);
      }
    }
  }

  /** Flushes and stops the analytics this gate started. */
  async close(): Promise<void> {
    if (this.ownsAnalytics) await this.analytics?.close();
  }

  get requestAnalytics(): RequestAnalytics | undefined {
    return this.analytics;
  }

  private async admitPost(request: GateRequest, sessionId: string | undefined, principal: string | undefined): Promise<Admission> {
    const body = await request.readBody(this.maxBodyBytes);
    if (body.kind === 'too-large') return { action: 'reply', reply: bodyTooLargeReply(this.maxBodyBytes) };
    const messages = body.kind === 'json' ? messagesOf(body.value) : undefined;
    const parsedBody = body.kind === 'json' ? body.value : undefined;
    if (!messages) {
      // Not JSON-RPC: the app's transport answers the parse error, as the SDK would (after the
      // session check, so an unknown id still gets its 404).
      return sessionId === undefined ? PASS : this.touch(sessionId, principal, [], parsedBody);
    }
    const initialize = messages.find(isInitializeRequest);
    if (initialize) {
      if (sessionId !== undefined) return { action: 'reply', reply: alreadyInitializedReply() };
      return this.create(initialize, messages, principal, request.auth?.clientId, parsedBody);
    }
    if (sessionId === undefined) return { action: 'reply', reply: missingSessionIdReply() };
    return this.touch(sessionId, principal, messages, parsedBody);
  }

  private async create(
    initialize: JsonRpcMessage & { id: JsonRpcId },
    messages: JsonRpcMessage[],
    principal: string | undefined,
    clientId: string | undefined,
    parsedBody: unknown,
  ): Promise<Admission> {
    const startedAt = Date.now();
    try {
      const session = await this.broker.create(mcpSessionRecord(this.options, { initialize, principal, clientId }));
      return {
        action: 'forward',
        session: { id: session.id, created: true, parsedBody, messages, initializeId: initialize.id, principal, startedAt },
      };
    } catch (error) {
      return this.failure(error, initialize.id);
    }
  }

  private async touch(
    sessionId: string,
    principal: string | undefined,
    messages: JsonRpcMessage[],
    parsedBody: unknown,
  ): Promise<Admission> {
    // An id the broker cannot hold cannot name a live session.
    if (!isValidSessionId(sessionId)) return { action: 'reply', reply: notFoundReply(this.options.notFound) };
    const startedAt = Date.now();
    try {
      await this.broker.touch(sessionId, { principal });
      return {
        action: 'forward',
        session: { id: sessionId, created: false, parsedBody, messages, initializeId: undefined, principal, startedAt },
      };
    } catch (error) {
      return this.failure(error, undefined);
    }
  }

  private async admitDelete(sessionId: string | undefined, principal: string | undefined): Promise<Admission> {
    if (sessionId === undefined) return { action: 'reply', reply: missingSessionIdReply() };
    if (!isValidSessionId(sessionId)) return { action: 'reply', reply: notFoundReply(this.options.notFound) };
    try {
      await this.broker.delete(sessionId, { principal });
      return { action: 'reply', reply: deletedReply() };
    } catch (error) {
      return this.failure(error, undefined);
    }
  }

  private failure(error: unknown, requestId: JsonRpcId | undefined): Admission {
    const { reply, internal } = failureReply(error, {
      requestId,
      retryAfterSeconds: this.options.retryAfterSeconds ?? 1,
      notFound: this.options.notFound ?? {},
    });
    if (internal) this.onError(error);
    return { action: 'reply', reply };
  }
}
