/**
 * Tier 2: the SDK's *stateful* transport (server-to-client requests, the GET notification stream and
 * resumability keep working), with every session registered in the broker under the id the SDK
 * minted. `onsessioninitialized` is awaited by the SDK before it answers `initialize`, so the
 * registration happens first and a full quota (429) or a broker outage (503) refuses the handshake:
 * no client ever holds a session the broker does not know.
 *
 * Caveat: the transport lives in this process and the SDK cannot adopt it elsewhere
 * (typescript-sdk#1882), so a request for the session that reaches another replica gets the 404 and
 * the client re-initializes there. Use sticky routing, or tier 1 (`session-broker-client/mcp`).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import {
  WebStandardStreamableHTTPServerTransport,
  type WebStandardStreamableHTTPServerTransportOptions,
} from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import type { SessionBroker } from '../client.js';
import { SessionNotFound } from '../errors.js';
import { isInitializeRequest, messagesOf, SESSION_ID_HEADER, type JsonRpcId } from './jsonrpc.js';
import { toWebRequest, writeWebResponse } from './node-bridge.js';
import { principalFromAuthInfo, type PrincipalResolver, type RequestHead } from './principal.js';
import {
  bodyTooLargeReply,
  failureReply,
  internalErrorReply,
  missingSessionIdReply,
  notFoundReply,
  parseErrorReply,
  type NotFoundBody,
  type Reply,
} from './replies.js';
import { mcpSessionRecord } from './session-record.js';
import { readWebBody, toResponse } from './web-io.js';

export type TransportOptions = Omit<
  WebStandardStreamableHTTPServerTransportOptions,
  'sessionIdGenerator' | 'onsessioninitialized' | 'onsessionclosed'
>;

export interface StatefulBrokerSessionsOptions {
  broker: SessionBroker;
  /** Connects a new MCP server to a new session's transport, e.g. `(t) => buildServer().connect(t)`. */
  connect: (transport: WebStandardStreamableHTTPServerTransport) => Promise<void>;
  principal?: PrincipalResolver;
  kind?: string;
  idleTimeoutSeconds?: number;
  maxLifetimeSeconds?: number;
  /** Recorded as the broker session's `owner`: the replica holding its transport. Default host:pid. */
  owner?: string;
  /** The SDK's session id generator. Default `crypto.randomUUID`. */
  sessionIdGenerator?: () => string;
  /** Other options of each transport (eventStore, enableJsonResponse, allowedHosts, ...). */
  transport?: TransportOptions;
  notFound?: NotFoundBody;
  retryAfterSeconds?: number;
  /** How often local transports whose broker session expired are closed. Default 30 s. */
  sweepIntervalMs?: number;
  maxBodyBytes?: number;
  onError?: (error: unknown) => void;
}

interface LocalSession {
  transport: WebStandardStreamableHTTPServerTransport;
  principal: string | undefined;
  /** From the broker's last answer (register or touch): past it, the broker has expired the session. */
  expiresAt: number;
}

export class StatefulBrokerSessions {
  private readonly sessions = new Map<string, LocalSession>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly onError: (error: unknown) => void;
  private readonly maxBodyBytes: number;

  constructor(private readonly options: StatefulBrokerSessionsOptions) {
    if (!options.broker) throw new TypeError('StatefulBrokerSessions needs a SessionBroker (options.broker)');
    this.onError = options.onError ?? ((error) => console.error('session-broker-client/mcp/stateful:', error));
    this.maxBodyBytes = options.maxBodyBytes ?? 4 * 1024 * 1024;
    this.sweeper = setInterval(() => this.sweep(), options.sweepIntervalMs ?? 30_000);
    this.sweeper.unref();
  }

  /** Sessions whose transport lives in this process. */
  get localSessionCount(): number {
    return this.sessions.size;
  }

  /** Serves one MCP request (web standard). */
  async handle(request: Request, call: { authInfo?: AuthInfo } = {}): Promise<Response> {
    const head: RequestHead = { method: request.method, header: (name) => request.headers.get(name) ?? undefined };
    const principal = (this.options.principal ?? principalFromAuthInfo)(call.authInfo, head) ?? undefined;
    const sessionId = head.header(SESSION_ID_HEADER);
    if (sessionId === undefined) return this.initialize(request, call.authInfo, principal);
    const local = this.sessions.get(sessionId);
    // Not here (another replica's, or gone), or someone else's: the same 404, as the broker answers.
    if (!local || local.principal !== principal) return toResponse(notFoundReply(this.options.notFound));
    try {
      if (request.method === 'DELETE') {
        // The broker first: if it cannot be told, the session stays usable and the client may retry.
        await this.options.broker.delete(sessionId, { principal });
      } else {
        const touched = await this.options.broker.touch(sessionId, { principal });
        local.expiresAt = Date.parse(touched.expires_at);
      }
    } catch (error) {
      if (error instanceof SessionNotFound) await this.drop(sessionId); // ended in the broker (expired, revoked)
      return toResponse(this.failure(error, undefined));
    }
    return local.transport.handleRequest(request, call.authInfo ? { authInfo: call.authInfo } : undefined);
  }

  /** The same, for Express or `node:http`: `app.all('/mcp', sessions.nodeHandler())`. */
  nodeHandler(): (req: IncomingMessage & { auth?: AuthInfo; body?: unknown }, res: ServerResponse) => Promise<void> {
    return async (req, res) => {
      try {
        await writeWebResponse(res, await this.handle(toWebRequest(req), req.auth ? { authInfo: req.auth } : {}));
      } catch (error) {
        this.onError(error);
        if (!res.headersSent) {
          const reply = internalErrorReply();
          res.writeHead(reply.status, reply.headers).end(reply.body);
        }
        else res.destroy();
      }
    };
  }

  /** Closes every local transport (the broker sessions stay until they expire or are deleted). */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
    await Promise.all([...this.sessions.keys()].map((id) => this.drop(id)));
  }

  private async initialize(request: Request, authInfo: AuthInfo | undefined, principal: string | undefined): Promise<Response> {
    if (request.method !== 'POST') return toResponse(missingSessionIdReply());
    const { body } = await readWebBody(request, this.maxBodyBytes);
    if (body.kind === 'too-large') return toResponse(bodyTooLargeReply(this.maxBodyBytes));
    if (body.kind === 'invalid') return toResponse(parseErrorReply());
    const parsedBody = body.value;
    const initialize = messagesOf(parsedBody)?.find(isInitializeRequest);
    if (!initialize) return toResponse(missingSessionIdReply());

    let refusal: unknown;
    const transport: WebStandardStreamableHTTPServerTransport = new WebStandardStreamableHTTPServerTransport({
      ...this.options.transport,
      sessionIdGenerator: this.options.sessionIdGenerator ?? randomUUID,
      // Awaited by the SDK before it answers initialize: register, or refuse the handshake.
      onsessioninitialized: async (id) => {
        try {
          const record = mcpSessionRecord(this.options, {
            initialize,
            principal,
            clientId: authInfo?.clientId,
            owner: this.options.owner ?? `${hostname()}:${process.pid}`,
          });
          const session = await this.options.broker.register(id, record);
          this.sessions.set(id, { transport, principal, expiresAt: Date.parse(session.expires_at) });
        } catch (error) {
          refusal = error;
          throw error; // stops the SDK from serving the initialize
        }
      },
    });
    // Set before connect: the SDK's Protocol chains its own onclose after this one.
    transport.onclose = () => {
      const id = transport.sessionId;
      if (id !== undefined && this.sessions.get(id)?.transport === transport) this.sessions.delete(id);
    };
    await this.options.connect(transport);
    let response: Response;
    try {
      response = await transport.handleRequest(request, { parsedBody, ...(authInfo ? { authInfo } : {}) });
    } catch (error) {
      refusal ??= error;
      response = toResponse(internalErrorReply(initialize.id));
    }
    if (refusal !== undefined) {
      // The SDK turns a throwing onsessioninitialized into a 400; answer what really happened instead.
      await transport.close();
      return toResponse(this.failure(refusal, initialize.id));
    }
    if (response.status >= 400 && transport.sessionId !== undefined) {
      const id = transport.sessionId;
      await this.drop(id);
      await this.options.broker.delete(id, { principal }).catch((error: unknown) => this.onError(error));
    }
    return response;
  }

  private failure(error: unknown, requestId: JsonRpcId | undefined): Reply {
    const { reply, internal } = failureReply(error, {
      requestId,
      retryAfterSeconds: this.options.retryAfterSeconds ?? 1,
      notFound: this.options.notFound ?? {},
    });
    if (internal) this.onError(error);
    return reply;
  }

  private async drop(sessionId: string): Promise<void> {
    const local = this.sessions.get(sessionId);
    if (!local) return;
    this.sessions.delete(sessionId);
    await local.transport.close().catch((error: unknown) => this.onError(error));
  }

  /** Closes transports whose broker session has expired (clients rarely DELETE; expiry is what ends sessions). */
  private sweep(): void {
    const now = Date.now();
    for (const [id, local] of this.sessions) {
      if (local.expiresAt <= now) void this.drop(id);
    }
  }
}
