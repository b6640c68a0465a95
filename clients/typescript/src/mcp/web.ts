/**
 * Tier 1 for web-standard handlers (Request → Response): Hono, the SDK's
 * `WebStandardStreamableHTTPServerTransport`, Workers-style `fetch` handlers.
 */
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { SESSION_ID_HEADER } from './jsonrpc.js';
import { SessionGate, type AdmittedSession, type BrokerSessionsOptions } from './gate.js';
import { ResponseObserver } from './observe.js';
import { internalErrorReply } from './replies.js';
import { readWebBody, toResponse } from './web-io.js';

export interface WebAppContext {
  /** The broker session this request belongs to (undefined for sessionless requests). */
  sessionId: string | undefined;
  /** The body already parsed by the middleware: hand it to `transport.handleRequest(req, { parsedBody })`. */
  parsedBody: unknown;
  authInfo: AuthInfo | undefined;
}

/** The app behind the middleware: typically a fresh stateless SDK transport per request. */
export type WebApp = (request: Request, context: WebAppContext) => Response | Promise<Response>;

export interface WebHandlerOptions {
  /** What the SDK's auth layer established about the caller (e.g. Hono's `c.get('auth')`). */
  authInfo?: AuthInfo;
}

export interface WebSessionHandler {
  (request: Request, options?: WebHandlerOptions): Promise<Response>;
  /** Flushes analytics; call at shutdown. */
  close(): Promise<void>;
  readonly gate: SessionGate;
}

export function brokerSessionsFetch(options: BrokerSessionsOptions, app: WebApp): WebSessionHandler {
  const gate = new SessionGate(options);
  const handler = async (request: Request, call: WebHandlerOptions = {}): Promise<Response> => {
    // The body as read, so the app gets it byte for byte (a Request body can be read only once).
    let bodyText: string | undefined;
    const admission = await gate.admit({
      method: request.method,
      header: (name) => request.headers.get(name) ?? undefined,
      auth: call.authInfo,
      readBody: async (maxBytes) => {
        const read = await readWebBody(request, maxBytes);
        bodyText = read.text;
        return read.body;
      },
    });
    if (admission.action === 'reply') return toResponse(admission.reply);
    if (admission.action === 'pass') {
      return app(request, { sessionId: undefined, parsedBody: undefined, authInfo: call.authInfo });
    }
    return forward(gate, admission.session, request, bodyText, app, call.authInfo);
  };
  return Object.assign(handler, { close: () => gate.close(), gate });
}

async function forward(
  gate: SessionGate,
  session: AdmittedSession,
  request: Request,
  body: string | undefined,
  app: WebApp,
  authInfo: AuthInfo | undefined,
): Promise<Response> {
  // The app sees the session id as if the client had sent it (tools read it from requestInfo.headers).
  const headers = new Headers(request.headers);
  headers.set(SESSION_ID_HEADER, session.id);
  const forwarded = new Request(request.url, { method: request.method, headers, body, signal: request.signal });
  let response: Response;
  try {
    response = await app(forwarded, { sessionId: session.id, parsedBody: session.parsedBody, authInfo });
  } catch (error) {
    gate.onError(error);
    await gate.settle(session, { status: 500, errorIds: new Set(), threw: true });
    return toResponse(internalErrorReply());
  }
  const outHeaders = new Headers(response.headers);
  for (const [name, value] of Object.entries(gate.responseHeaders(session, response.status))) outHeaders.set(name, value);
  const init = { status: response.status, statusText: response.statusText, headers: outHeaders };
  if (!gate.wantsOutcome(session)) return new Response(response.body, init);
  const observer = new ResponseObserver(response.headers.get('content-type') ?? undefined);
  const settle = () => {
    observer.end();
    void gate.settle(session, { status: response.status, errorIds: observer.errorIds });
  };
  if (!response.body) {
    settle();
    return new Response(null, init);
  }
  const watched = response.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        observer.write(chunk);
        controller.enqueue(chunk);
      },
      flush: settle,
    }),
  );
  return new Response(watched, init);
}
