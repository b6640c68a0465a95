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
/** Body of create and register; every field is optional. */
export type SessionCreate = Schemas['SessionCreate'];
/** JSON Merge Patch body of `patch`. */
export type SessionPatch = Schemas['SessionPatch'];
export type SessionPage = Schemas['SessionPage'];
export type TouchResult = Schemas['TouchResult'];
/** The optional analytics body a touch may carry. */
export type TouchRequest = Schemas['TouchRequest'];
export type Stats = Schemas['Stats'];
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
/** Filters of `DELETE /v1/sessions` (revocation); at least one is required. */
export type RevokeFilters = NonNullable<operations['revoke_sessions']['parameters']['query']>;

/**
 * One gateway request for `POST /v1/analytics` (being added to the broker by another issue; not in
 * openapi.yaml yet, hence written by hand and kept to the agreed shape).
 */
export interface RequestReport {
  method: string;
  ok: boolean;
  duration_ms: number | null;
}

/** Lifecycle event types the broker emits today (`session.expiring` is planned; unknown types pass). */
export type SessionEventType = 'session.created' | 'session.updated' | 'session.ended' | 'session.rotated';

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
