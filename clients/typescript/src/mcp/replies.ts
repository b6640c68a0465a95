/**
 * Every answer the middleware gives without the app, and the one mapping from broker errors to HTTP:
 * unknown/ended/another principal's session → the SDK's 404; broker unavailable → 503 + Retry-After
 * (never 404: a store outage must not make every client re-initialize); a full quota → 429.
 */
import { BrokerProblem, BrokerUnavailable, PrincipalMismatch, QuotaExceeded, SessionNotFound } from '../errors.js';
import { errorBody, type JsonRpcId } from './jsonrpc.js';

export interface Reply {
  status: number;
  headers: Record<string, string>;
  /** '' for no body. */
  body: string;
}

export interface NotFoundBody {
  /** JSON-RPC code of the 404 body. Default -32001, as the TypeScript SDK (the Python SDK uses -32600). */
  code?: number;
  /** Default 'Session not found'. */
  message?: string;
}

const JSON_TYPE = { 'content-type': 'application/json' };

function jsonReply(status: number, body: string, headers: Record<string, string> = {}): Reply {
  return { status, headers: { ...JSON_TYPE, ...headers }, body };
}

export function notFoundReply(options: NotFoundBody = {}): Reply {
  return jsonReply(404, errorBody(options.code ?? -32001, options.message ?? 'Session not found'));
}

export function missingSessionIdReply(): Reply {
  return jsonReply(400, errorBody(-32000, 'Bad Request: Mcp-Session-Id header is required'));
}

export function alreadyInitializedReply(): Reply {
  return jsonReply(400, errorBody(-32600, 'Invalid Request: Server already initialized'));
}

export function bodyTooLargeReply(maxBytes: number): Reply {
  return jsonReply(413, errorBody(-32000, `Payload Too Large: Request body must not exceed ${maxBytes} bytes`));
}

/** Tier 1 has no standalone GET stream: 405 tells the SDK client so (it then stops asking). */
export function methodNotAllowedReply(allow = 'POST, DELETE'): Reply {
  return jsonReply(405, errorBody(-32000, 'Method not allowed.'), { allow });
}

/** The app threw instead of answering. */
export function internalErrorReply(id: JsonRpcId | null = null): Reply {
  return jsonReply(500, errorBody(-32603, 'Internal error', id));
}

export function parseErrorReply(): Reply {
  return jsonReply(400, errorBody(-32700, 'Parse error: Invalid JSON'));
}

/** The SDK answers a successful DELETE with 200 and no body. */
export function deletedReply(): Reply {
  return { status: 200, headers: {}, body: '' };
}

export interface FailureContext {
  /** The JSON-RPC id to echo (the initialize's), when the failed request had one. */
  requestId?: JsonRpcId | null;
  /** Retry-After when the broker gave none (it could not be reached). */
  retryAfterSeconds: number;
  notFound: NotFoundBody;
}

/** The answer for a broker call that failed; `internal` marks failures worth logging. */
export function failureReply(error: unknown, context: FailureContext): { reply: Reply; internal: boolean } {
  const id = context.requestId ?? null;
  if (error instanceof SessionNotFound || error instanceof PrincipalMismatch) {
    return { reply: notFoundReply(context.notFound), internal: false };
  }
  if (error instanceof BrokerUnavailable) {
    const retryAfter = String(error.retryAfter ?? context.retryAfterSeconds);
    return {
      reply: jsonReply(503, errorBody(-32603, 'Session store unavailable; retry later', id), { 'retry-after': retryAfter }),
      internal: false,
    };
  }
  if (error instanceof QuotaExceeded || (error instanceof BrokerProblem && error.status === 429)) {
    // Any 429 of the broker: a full quota on create, or a per-session request limit on touch.
    const retryAfter = error instanceof QuotaExceeded ? error.retryAfter : undefined;
    const data: Record<string, unknown> = { type: error.type };
    if (error instanceof QuotaExceeded) {
      if (error.scope !== undefined) data['scope'] = error.scope;
      if (error.limit !== undefined) data['limit'] = error.limit;
    }
    const headers: Record<string, string> = retryAfter === undefined ? {} : { 'retry-after': String(retryAfter) };
    return { reply: jsonReply(429, errorBody(-32000, error.detail || error.title, id, data), headers), internal: false };
  }
  const detail = error instanceof BrokerProblem ? `${error.status} ${error.title}` : 'unexpected error';
  return { reply: jsonReply(500, errorBody(-32603, `Session broker error: ${detail}`, id)), internal: true };
}
