/**
 * The broker's wire types, named. Everything here is an alias of `generated/openapi.ts`, which
 * `npm run generate` derives from the repository's openapi.yaml (a test fails when it is stale), so a
 * change in the contract shows up here as a type error rather than at run time.
 */
import type { components, operations } from './generated/openapi.js';

type Schemas = components['schemas'];

/** A session as the broker returns it (`SessionRead`). Timestamps are RFC 3339 strings. */
export type Session = Schemas['SessionRead'];
/** A session read with `get`, with the strong ETag to send back as `ifMatch`. */
export type SessionWithEtag = Session & { etag: string };
/**
 * What `create` returns: the session, and whether the broker answered it from an earlier request with
 * the same `Idempotency-Key` (`Idempotent-Replayed: true`) instead of creating one now.
 */
export type CreatedSession = SessionWithEtag & { replayed: boolean };
/** Body of create and register; every field is optional. */
export type SessionCreate = Schemas['SessionCreate'];
/** JSON Merge Patch body of `patch`. */
export type SessionPatch = Schemas['SessionPatch'];
export type SessionPage = Schemas['SessionPage'];
export type TouchResult = Schemas['TouchResult'];
/** The optional analytics body a touch may carry. */
export type TouchRequest = Schemas['TouchRequest'];
export type Stats = Schemas['Stats'];
/** `Stats.window`: figures over the last `windowSeconds` (only when `stats({ windowSeconds })` asked). */
export type WindowStats = Schemas['WindowStats'];
export type KindStats = Schemas['KindStats'];
export type Limits = Schemas['Limits'];
export type AdminStats = Schemas['AdminStats'];
export type PurgeRun = Schemas['PurgeRun'];
export type RevokeResult = Schemas['RevokeResult'];
export type ProblemDocument = Schemas['ProblemDocument'];
export type StreamEventData = Schemas['StreamEvent'];
export type StreamNoticeData = Schemas['StreamNotice'];
export type Health = Schemas['Health'];

/** Filters of `GET /v1/sessions` (without the paging parameters, which `list` handles). */
export type ListFilters = Omit<NonNullable<operations['list_sessions']['parameters']['query']>, 'cursor'>;
/**
 * Filters of `DELETE /v1/sessions` (revocation); at least one is required. `all` is not among them:
 * ending every session of the tenant is `revoke({}, { all: true })`, said on purpose.
 */
export type RevokeFilters = Omit<NonNullable<operations['revoke_sessions']['parameters']['query']>, 'all'>;

/** One gateway request for `POST /v1/analytics` (`AnalyticsBatch.requests`: as in a touch body). */
export type RequestReport = Schemas['TouchRequest'];

/**
 * Lifecycle event types the broker emits (unknown types still pass). `session.expiring` comes once per
 * session `limits.expiry_warning_seconds` before its expiry, only when the broker's
 * `EXPIRY_WARNING_SECONDS` is set; its data has `expires_at` and `expires_in_seconds`.
 */
export type SessionEventType = 'session.created' | 'session.updated' | 'session.expiring' | 'session.ended' | 'session.rotated';

/** Why a session ended, as in `session.ended` events and 404 `reason`s. */
export type EndReason = 'deleted' | 'expired_idle' | 'expired_lifetime' | 'evicted' | 'revoked' | 'rotated';

/** A lifecycle event from `GET /v1/events`. */
export interface SessionEvent {
  /** The SSE id: resume after it with `lastEventId`. */
  id: string;
  type: SessionEventType | (string & {});
  sessionId: string;
  occurredAt: string;
  /** The event's fields (e.g. `reason`, `kind`, `principal` for `session.ended`); never metadata. */
  data: Record<string, unknown>;
}

/**
 * Events were removed by retention before this stream resumed: whatever the consumer tracks may have
 * changed unseen, so it should re-read it (`list`) and carry on.
 */
export interface StreamGap {
  id: string;
  type: 'stream.gap';
  lastEventId: string | null;
  resumedAfter: string | null;
  detail: string;
}

export type BrokerEvent = SessionEvent | StreamGap;
