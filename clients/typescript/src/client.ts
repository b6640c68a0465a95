/**
 * `SessionBroker`: every operation of the broker's HTTP API (openapi.yaml), typed from the generated
 * contract. Errors are the classes of `errors.ts`; only idempotent calls are retried.
 */
import { InvalidSessionId, SessionNotFound } from './errors.js';
import { streamEvents, type EventStreamOptions } from './events.js';
import { HttpClient, type RetryPolicy } from './http.js';
import type {
  AdminStats,
  BrokerEvent,
  CreatedSession,
  Health,
  ListFilters,
  PurgeRun,
  RequestReport,
  RevokeFilters,
  RevokeResult,
  Session,
  SessionCreate,
  SessionPage,
  SessionPatch,
  SessionWithEtag,
  Stats,
  TouchRequest,
  TouchResult,
} from './types.js';

export interface SessionBrokerOptions {
  /** e.g. `http://127.0.0.1:8080` (the `/v1` prefix is added by the client). */
  baseUrl: string;
  /** Tenant (or admin) API key, sent as `Authorization: Bearer`. */
  apiKey?: string;
  /** Bounds each attempt, answer included (for the event stream: until its headers). Default 5000 ms. */
  timeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  /** A fetch implementation (default: the platform's). */
  fetch?: typeof fetch;
}

/** Options of calls that act for an end user: the broker answers 404 for another principal's session. */
export interface AsPrincipal {
  principal?: string | null | undefined;
  signal?: AbortSignal;
}

export interface CreateOptions {
  /**
   * Sent as `Idempotency-Key` (1-255 visible ASCII characters). The broker remembers a keyed create for
   * `IDEMPOTENCY_KEY_RETENTION_SECONDS`: the same key with the same body answers the first request's
   * session again (`replayed: true` in the result), the same key with another body is
   * `IdempotencyKeyReused`. So with a key a create that failed in transit is retried; without one, never.
   */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface PatchOptions extends AsPrincipal {
  /** `If-Match`: an ETag from `get` (e.g. `"3"`), a list of them, or `*`. */
  ifMatch?: string;
}

export interface TouchOptions extends AsPrincipal {
  /** The gateway request this touch accompanies, recorded in the broker's request analytics. */
  request?: TouchRequest;
}

export interface ListOptions extends ListFilters {
  signal?: AbortSignal;
}

/** The header with which the broker marks a create answered from an earlier request's Idempotency-Key. */
const REPLAYED_HEADER = 'idempotent-replayed';
const MAX_SESSION_ID_LENGTH = 255;
const VISIBLE_ASCII = /^[\x21-\x7e]+$/;

export class SessionBroker {
  private readonly http: HttpClient;

  constructor(options: SessionBrokerOptions) {
    if (!options.baseUrl) throw new TypeError('SessionBroker needs a baseUrl');
    this.http = new HttpClient({
      baseUrl: options.baseUrl,
      apiKey: options.apiKey,
      timeoutMs: options.timeoutMs ?? 5_000,
      retry: { retries: 2, baseDelayMs: 100, maxDelayMs: 1_000, ...options.retry },
      fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
    });
  }

  /**
   * Creates a session with an id the broker mints (256 random bits, URL-safe). `max_requests` and
   * `max_requests_per_minute` in the body limit its touches (0: unlimited; omitted: the tenant's
   * default); past them `touch` is `SessionRequestLimit` or `SessionRateLimited`.
   */
  async create(body: SessionCreate = {}, options: CreateOptions = {}): Promise<CreatedSession> {
    const answer = await this.http.send<Session>({
      method: 'POST',
      path: '/v1/sessions',
      body: checkBody(body),
      headers: { 'idempotency-key': options.idempotencyKey },
      idempotent: options.idempotencyKey !== undefined,
      signal: options.signal,
    });
    return { ...withEtag(answer.body, answer.headers), replayed: answer.headers.get(REPLAYED_HEADER) === 'true' };
  }

  /** Registers an id minted elsewhere (e.g. by an MCP SDK). `SessionExists` if a live session has it. */
  async register(sessionId: string, body: SessionCreate = {}, options: { signal?: AbortSignal } = {}): Promise<SessionWithEtag> {
    const answer = await this.http.send<Session>({
      method: 'PUT',
      path: sessionPath(sessionId),
      body: checkBody(body),
      // A retry after a lost answer would meet our own session as SessionExists: not retried.
      idempotent: false,
      signal: options.signal,
    });
    return withEtag(answer.body, answer.headers);
  }

  /** Reads a session without touching it. */
  async get(sessionId: string, options: AsPrincipal = {}): Promise<SessionWithEtag> {
    const answer = await this.http.send<Session>({
      method: 'GET',
      path: sessionPath(sessionId),
      headers: principalHeader(options),
      idempotent: true,
      signal: options.signal,
    });
    return withEtag(answer.body, answer.headers);
  }

  /** Slides the idle expiry; `SessionNotFound` when the session is unknown, ended or someone else's. */
  async touch(sessionId: string, options: TouchOptions = {}): Promise<TouchResult> {
    const answer = await this.http.send<TouchResult>({
      method: 'POST',
      path: `${sessionPath(sessionId)}/touch`,
      headers: principalHeader(options),
      body: options.request,
      // Touch only moves expiry forward, so repeating it changes nothing (analytics may count twice).
      idempotent: true,
      signal: options.signal,
    });
    return answer.body;
  }

  /** JSON Merge Patch of metadata, owner, client_id, protocol_version. */
  async patch(sessionId: string, patch: SessionPatch, options: PatchOptions = {}): Promise<SessionWithEtag> {
    const answer = await this.http.send<Session>({
      method: 'PATCH',
      path: sessionPath(sessionId),
      headers: { ...principalHeader(options), 'if-match': options.ifMatch },
      body: patch,
      contentType: 'application/merge-patch+json',
      // A repeated patch after a lost answer would bump the version again or fail its If-Match.
      idempotent: false,
      signal: options.signal,
    });
    return withEtag(answer.body, answer.headers);
  }

  /** Ends a session (reason `deleted`). */
  async delete(sessionId: string, options: AsPrincipal = {}): Promise<void> {
    try {
      await this.http.send<void>({
        method: 'DELETE',
        path: sessionPath(sessionId),
        headers: principalHeader(options),
        idempotent: true,
        signal: options.signal,
      });
    } catch (error) {
      // A retry that finds the session deleted means an earlier attempt did it: that is success.
      if (error instanceof SessionNotFound && error.attempt > 0 && error.reason === 'deleted') return;
      throw error;
    }
  }

  /** One page of live sessions (keyset order by id). Prefer `list` unless you keep cursors yourself. */
  async listPage(filters: ListFilters & { cursor?: string | null } = {}, options: { signal?: AbortSignal } = {}): Promise<SessionPage> {
    const answer = await this.http.send<SessionPage>({
      method: 'GET',
      path: '/v1/sessions',
      query: { ...filters },
      idempotent: true,
      signal: options.signal,
    });
    return answer.body;
  }

  /** Every live session matching the filters, following cursors page by page. */
  async *list(options: ListOptions = {}): AsyncGenerator<Session> {
    const { signal, ...filters } = options;
    let cursor: string | null = null;
    do {
      const page: SessionPage = await this.listPage({ ...filters, cursor }, signal ? { signal } : {});
      yield* page.items;
      cursor = page.next_cursor;
    } while (cursor);
  }

  /**
   * Ends every live session matching the filters (at least one is required) and returns how many; with
   * `{ all: true }` and no filters, every live session of the tenant.
   */
  async revoke(filters: RevokeFilters, options: { all?: boolean; signal?: AbortSignal } = {}): Promise<number> {
    const filtered = Object.values(filters).some((value) => value !== undefined && value !== null);
    if (options.all === true && filtered) {
      throw new TypeError('revoke with all: true takes no filters');
    }
    if (options.all !== true && !filtered) {
      throw new TypeError('revoke needs at least one filter (principal, client_id, owner or kind), or { all: true }');
    }
    const answer = await this.http.send<RevokeResult>({
      method: 'DELETE',
      path: '/v1/sessions',
      query: options.all === true ? { all: 'true' } : { ...filters },
      // Revocation is idempotent; a retry after a lost answer reports 0 for what the first one ended.
      idempotent: true,
      signal: options.signal,
    });
    return answer.body.revoked;
  }

  /** Moves the session to a new minted id; the old id ends with reason `rotated`. */
  async rotate(sessionId: string, options: AsPrincipal & { idempotencyKey?: string } = {}): Promise<SessionWithEtag> {
    const answer = await this.http.send<Session>({
      method: 'POST',
      path: `${sessionPath(sessionId)}/rotate`,
      headers: { ...principalHeader(options), 'idempotency-key': options.idempotencyKey },
      idempotent: options.idempotencyKey !== undefined,
      signal: options.signal,
    });
    return withEtag(answer.body, answer.headers);
  }

  /**
   * The tenant's live counts (by kind, oldest/newest), totals, request analytics and limits; with
   * `windowSeconds` (1-86400) also `window`: created, ended, peak live and lifetimes over that recent
   * interval (see `WindowStats.since` for the interval it really covers).
   */
  async stats(options: { windowSeconds?: number; signal?: AbortSignal } = {}): Promise<Stats> {
    const answer = await this.http.send<Stats>({
      method: 'GET',
      path: '/v1/stats',
      ...(options.windowSeconds === undefined ? {} : { query: { window_seconds: String(options.windowSeconds) } }),
      idempotent: true,
      signal: options.signal,
    });
    return answer.body;
  }

  /**
   * The tenant's lifecycle events, for as long as you iterate: reconnects after outages with
   * `Last-Event-ID`, yields `stream.gap` when retention dropped events, ends when `signal` aborts.
   */
  events(options: EventStreamOptions = {}): AsyncGenerator<BrokerEvent> {
    return streamEvents(this.http, options);
  }

  /**
   * Records finished gateway requests in the broker's request analytics (`POST /v1/analytics`, 1–1000
   * per call). Not retried: a retry after a lost answer would count them twice.
   */
  async reportRequests(requests: readonly RequestReport[], options: { signal?: AbortSignal } = {}): Promise<number> {
    if (requests.length < 1 || requests.length > 1000) {
      throw new RangeError(`reportRequests takes 1 to 1000 requests, got ${requests.length}`);
    }
    const answer = await this.http.send<{ recorded: number }>({
      method: 'POST',
      path: '/v1/analytics',
      body: { requests },
      idempotent: false,
      signal: options.signal,
    });
    return answer.body.recorded;
  }

  /** Admin key only: every tenant's live counts and totals. */
  async adminStats(options: { signal?: AbortSignal } = {}): Promise<AdminStats> {
    const answer = await this.http.send<AdminStats>({ method: 'GET', path: '/v1/admin/stats', idempotent: true, signal: options.signal });
    return answer.body;
  }

  /** Admin key only: runs a purge now (skipped if another replica is purging). */
  async purge(options: { signal?: AbortSignal } = {}): Promise<PurgeRun> {
    const answer = await this.http.send<PurgeRun>({ method: 'POST', path: '/v1/admin/purge', idempotent: false, signal: options.signal });
    return answer.body;
  }

  /** Readiness (`/readyz`): the broker and its database answer. Throws `BrokerUnavailable` otherwise. */
  async ready(options: { signal?: AbortSignal } = {}): Promise<Health> {
    const answer = await this.http.send<Health>({ method: 'GET', path: '/readyz', idempotent: false, signal: options.signal });
    return answer.body;
  }
}

/**
 * `/v1/sessions/<id>` with the id percent-encoded. Ids are visible ASCII (MCP allows `/ ? # % + =`),
 * which `encodeURIComponent` makes one opaque path segment. `.` and `..` cannot be sent at all: URL
 * parsers resolve them (even as `%2E`) as dot segments before the request leaves.
 */
export function sessionPath(sessionId: string): string {
  assertSessionId(sessionId);
  return `/v1/sessions/${encodeURIComponent(sessionId)}`;
}

/** Throws `InvalidSessionId` for an id the broker's contract cannot carry. */
export function assertSessionId(sessionId: string): void {
  if (!isValidSessionId(sessionId)) {
    throw new InvalidSessionId(
      `invalid session id ${JSON.stringify(String(sessionId).slice(0, 40))}: ids are 1-${MAX_SESSION_ID_LENGTH} visible ASCII characters (0x21-0x7E), and not "." or ".."`,
    );
  }
}

export function isValidSessionId(sessionId: unknown): sessionId is string {
  return (
    typeof sessionId === 'string' &&
    sessionId.length <= MAX_SESSION_ID_LENGTH &&
    VISIBLE_ASCII.test(sessionId) &&
    sessionId !== '.' &&
    sessionId !== '..'
  );
}

function principalHeader(options: AsPrincipal): Record<string, string | undefined> {
  if (options.principal === undefined || options.principal === null) return {};
  assertHeaderSafePrincipal(options.principal);
  return { 'session-principal': options.principal };
}

/**
 * Calls after create carry the principal in the `Session-Principal` header, and an HTTP header holds
 * bytes: characters beyond U+00FF or control characters cannot be sent (fetch would throw). Refusing
 * such a principal at create time keeps a session from being created that could never be touched.
 */
function assertHeaderSafePrincipal(principal: string): void {
  if (!/^[\x20-\x7e\x80-\xff]*$/.test(principal) || principal.trim() !== principal || principal === '') {
    throw new TypeError(
      'principal must be 1-512 characters of Latin-1 without control characters or surrounding spaces (it travels in the Session-Principal header); hash or encode other principals first',
    );
  }
}

function checkBody(body: SessionCreate): SessionCreate {
  if (typeof body.principal === 'string') assertHeaderSafePrincipal(body.principal);
  return body;
}

function withEtag(session: Session, headers: Headers): SessionWithEtag {
  return { ...session, etag: headers.get('etag') ?? `"${session.version}"` };
}
