/**
 * Tier 1 for Node's request/response objects: Express (or Connect-style) middleware, and a wrapper for
 * a plain `node:http` listener. The app behind it runs the SDK's stateless
 * `StreamableHTTPServerTransport` and must hand it the parsed body: `transport.handleRequest(req, res, req.body)`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { SESSION_ID_HEADER } from './jsonrpc.js';
import { SessionGate, type AdmittedSession, type BrokerSessionsOptions, type PostBody } from './gate.js';
import { ResponseObserver } from './observe.js';
import { internalErrorReply, type Reply } from './replies.js';

/** What Express and the SDK's auth middleware leave on the request. */
export type NodeRequest = IncomingMessage & { auth?: AuthInfo; body?: unknown };
export type NextFunction = (error?: unknown) => void;

export interface NodeSessionMiddleware {
  (req: NodeRequest, res: ServerResponse, next: NextFunction): Promise<void>;
  /** Flushes analytics; call at shutdown. */
  close(): Promise<void>;
  readonly gate: SessionGate;
}

/**
 * Express middleware: `app.use('/mcp', requireBearerAuth(...), brokerSessions({ broker }))`, then the
 * route that runs the stateless transport. Uses `req.body` when a body parser ran (express.json()),
 * otherwise reads the body itself and leaves the parsed value in `req.body`.
 */
export function brokerSessions(options: BrokerSessionsOptions): NodeSessionMiddleware {
  const gate = new SessionGate(options);
  const middleware = async (req: NodeRequest, res: ServerResponse, next: NextFunction): Promise<void> => {
    let admission;
    try {
      admission = await gate.admit({
        method: req.method ?? 'GET',
        header: (name) => headerValue(req.headers[name]),
        auth: req.auth,
        readBody: (maxBytes) => readNodeBody(req, maxBytes),
      });
    } catch (error) {
      return next(error);
    }
    if (admission.action === 'reply') return writeReply(res, admission.reply);
    if (admission.action === 'pass') return next();
    const { session } = admission;
    req.headers[SESSION_ID_HEADER] = session.id; // the app and its tools see the session id
    if (session.parsedBody !== undefined) req.body = session.parsedBody;
    watchResponse(gate, session, res);
    next();
  };
  return Object.assign(middleware, { close: () => gate.close(), gate });
}

/**
 * A `node:http` request listener: the broker middleware in front of `handler`, which serves the
 * request with the SDK's stateless transport (`transport.handleRequest(req, res, req.body)`).
 */
export function withBrokerSessions(
  options: BrokerSessionsOptions,
  handler: (req: NodeRequest, res: ServerResponse) => unknown,
): ((req: IncomingMessage, res: ServerResponse) => void) & { close(): Promise<void>; readonly gate: SessionGate } {
  const middleware = brokerSessions(options);
  const fail = (res: ServerResponse, error: unknown) => {
    middleware.gate.onError(error);
    if (!res.headersSent) {
      writeReply(res, internalErrorReply());
    } else {
      res.destroy();
    }
  };
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    void middleware(req, res, (error) => {
      if (error) return fail(res, error);
      Promise.resolve()
        .then(() => handler(req, res))
        .catch((thrown: unknown) => fail(res, thrown));
    });
  };
  return Object.assign(listener, { close: () => middleware.close(), gate: middleware.gate });
}

/**
 * Adds the session header when the app starts its answer, and (when the gate wants the outcome) watches
 * the bytes it writes, so a failed initialize ends its broker session and analytics learn the result.
 */
function watchResponse(gate: SessionGate, session: AdmittedSession, res: ServerResponse): void {
  const writeHead = res.writeHead;
  // Node routes implicit headers (a first write or end without writeHead) through res.writeHead too.
  res.writeHead = function (this: ServerResponse, statusCode: number, ...rest: unknown[]) {
    if (!this.headersSent) {
      for (const [name, value] of Object.entries(gate.responseHeaders(session, statusCode))) this.setHeader(name, value);
    }
    return (writeHead as (...args: unknown[]) => ServerResponse).call(this, statusCode, ...rest);
  } as typeof res.writeHead;
  if (!gate.wantsOutcome(session)) return;

  let observer: ResponseObserver | undefined;
  const observe = (chunk: unknown, encoding: unknown) => {
    if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
    observer ??= new ResponseObserver(contentType(res));
    const bytes =
      typeof chunk === 'string'
        ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
        : (chunk as Uint8Array);
    observer.write(bytes);
  };
  const write = res.write;
  res.write = function (this: ServerResponse, chunk: unknown, ...rest: unknown[]) {
    observe(chunk, rest[0]);
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof res.write;
  const end = res.end;
  res.end = function (this: ServerResponse, chunk?: unknown, ...rest: unknown[]) {
    observe(chunk, rest[0]);
    return (end as (...args: unknown[]) => ServerResponse).call(this, chunk, ...rest);
  } as typeof res.end;
  // 'close' comes after a finished answer and after an aborted one alike. An answer that never
  // started (the connection went first) counts as a failure: that client never saw its session id.
  res.once('close', () => {
    observer ??= new ResponseObserver(contentType(res));
    observer.end();
    const unanswered = !res.headersSent;
    void gate.settle(session, { status: res.statusCode, errorIds: observer.errorIds, threw: unanswered });
  });
}

function contentType(res: ServerResponse): string | undefined {
  const value = res.getHeader('content-type');
  return value === undefined ? undefined : String(value);
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** The POST body: what a body parser left in `req.body`, else read from the stream with the size limit. */
async function readNodeBody(req: NodeRequest, maxBytes: number): Promise<PostBody> {
  if (req.body !== undefined) return { kind: 'json', value: req.body };
  if (Number(req.headers['content-length']) > maxBytes) return { kind: 'too-large' };
  const chunks: Buffer[] = [];
  let received = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    received += chunk.byteLength;
    if (received > maxBytes) return { kind: 'too-large' };
    chunks.push(chunk);
  }
  try {
    return { kind: 'json', value: JSON.parse(Buffer.concat(chunks).toString('utf8')) };
  } catch {
    return { kind: 'invalid' };
  }
}

function writeReply(res: ServerResponse, reply: Reply): void {
  res.writeHead(reply.status, reply.headers);
  res.end(reply.body === '' ? undefined : reply.body);
}
