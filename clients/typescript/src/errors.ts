/**
 * One error class per problem type of the broker (`info.x-problem-types` in openapi.yaml; a test checks
 * the two lists match), plus the client-side failures. Callers branch with `instanceof`.
 */
import type { ProblemDocument } from './types.js';

export const PROBLEM_TYPE_PREFIX = 'urn:session-broker:problem:';

/** Base of every error this package throws. */
export class SessionBrokerError extends Error {
  override name = 'SessionBrokerError';
  /** Which attempt of the call failed this way: 0 for the first, more after retries. */
  attempt = 0;
}

/** The broker answered with an error status. */
export class BrokerProblem extends SessionBrokerError {
  override name = 'BrokerProblem';
  /** HTTP status of the answer. */
  readonly status: number;
  /** The problem `type` URI, or '' when the body was not problem+json. */
  readonly type: string;
  readonly title: string;
  readonly detail: string;
  /** The whole problem document (extension members included). */
  readonly problem: ProblemDocument | undefined;

  constructor(status: number, problem: ProblemDocument | undefined, fallbackDetail = '') {
    const detail = problem?.detail ?? fallbackDetail;
    super(`${status} ${problem?.title ?? 'broker error'}${detail ? `: ${detail}` : ''}`);
    this.status = status;
    this.type = problem?.type ?? '';
    this.title = problem?.title ?? '';
    this.detail = detail;
    this.problem = problem;
  }

  /** The slug after `urn:session-broker:problem:`, e.g. `session-not-found`. */
  get slug(): string {
    return this.type.startsWith(PROBLEM_TYPE_PREFIX) ? this.type.slice(PROBLEM_TYPE_PREFIX.length) : '';
  }
}

export class Unauthorized extends BrokerProblem {
  override name = 'Unauthorized';
}
export class AdminRequired extends BrokerProblem {
  override name = 'AdminRequired';
}
export class TenantKeyRequired extends BrokerProblem {
  override name = 'TenantKeyRequired';
}
/** Only with the broker's `PRINCIPAL_MISMATCH_STATUS=403`; by default a mismatch is `SessionNotFound`. */
export class PrincipalMismatch extends BrokerProblem {
  override name = 'PrincipalMismatch';
}
/** Unknown, ended, another tenant's or (by default) another principal's session. */
export class SessionNotFound extends BrokerProblem {
  override name = 'SessionNotFound';
  /** Why it ended (`deleted`, `expired_idle`, ...) while the broker remembers it; undefined if unknown. */
  get reason(): string | undefined {
    return this.problem?.reason ?? undefined;
  }
}
/** No such route: e.g. an endpoint this broker version does not have. */
export class NotFound extends BrokerProblem {
  override name = 'NotFound';
}
export class MethodNotAllowed extends BrokerProblem {
  override name = 'MethodNotAllowed';
}
export class NotAcceptable extends BrokerProblem {
  override name = 'NotAcceptable';
}
export class SessionExists extends BrokerProblem {
  override name = 'SessionExists';
}
/** The id ended deliberately and cannot be registered again while the broker remembers it. */
export class SessionIdRetired extends BrokerProblem {
  override name = 'SessionIdRetired';
  get reason(): string | undefined {
    return this.problem?.reason ?? undefined;
  }
}
/** `ifMatch` did not match the session's current ETag. */
export class PreconditionFailed extends BrokerProblem {
  override name = 'PreconditionFailed';
}
export class PayloadTooLarge extends BrokerProblem {
  override name = 'PayloadTooLarge';
}
export class MetadataTooLarge extends BrokerProblem {
  override name = 'MetadataTooLarge';
  get limit(): number | undefined {
    return numberMember(this.problem, 'limit');
  }
}
export class UnsupportedMediaType extends BrokerProblem {
  override name = 'UnsupportedMediaType';
}
export interface FieldError {
  field: string;
  message: string;
}
export class ValidationFailed extends BrokerProblem {
  override name = 'ValidationFailed';
  get errors(): FieldError[] {
    return (this.problem?.errors ?? []).map((error) => ({
      field: String(error['field'] ?? ''),
      message: String(error['message'] ?? ''),
    }));
  }
}
/** A problem whose answer says when to try again: `retryAfter` is its `Retry-After` in seconds. */
export class RetryAfterProblem extends BrokerProblem {
  override name = 'RetryAfterProblem';
  readonly retryAfter: number | undefined;
  constructor(status: number, problem: ProblemDocument | undefined, retryAfter: number | undefined) {
    super(status, problem);
    this.retryAfter = retryAfter;
  }
}
/** A create would exceed a quota (policy `reject`). */
export class QuotaExceeded extends RetryAfterProblem {
  override name = 'QuotaExceeded';
  /** `tenant`, `principal` or `client_id`. */
  get scope(): string | undefined {
    const scope = this.problem?.['scope'];
    return typeof scope === 'string' ? scope : undefined;
  }
  get limit(): number | undefined {
    return numberMember(this.problem, 'limit');
  }
}
/** `Idempotency-Key` was sent before with a different request (use a new key for a new request). */
export class IdempotencyKeyReused extends BrokerProblem {
  override name = 'IdempotencyKeyReused';
}
/** Concurrent requests with this `Idempotency-Key` kept colliding: retry with the same key. */
export class IdempotencyKeyConflict extends RetryAfterProblem {
  override name = 'IdempotencyKeyConflict';
}
/** The session has used up its `max_requests` touches; it stays readable until it expires. */
export class SessionRequestLimit extends BrokerProblem {
  override name = 'SessionRequestLimit';
  get limit(): number | undefined {
    return numberMember(this.problem, 'limit');
  }
}
/** The session is over its `max_requests_per_minute`; `retryAfter` says when the next touch may pass. */
export class SessionRateLimited extends RetryAfterProblem {
  override name = 'SessionRateLimited';
  constructor(status: number, problem: ProblemDocument | undefined, retryAfter: number | undefined) {
    super(status, problem, retryAfter ?? numberMember(problem, 'retry_after'));
  }
  get limit(): number | undefined {
    return numberMember(this.problem, 'limit');
  }
}
/** A header that must appear once (e.g. `Idempotency-Key`, `Session-Principal`) appeared more than once. */
export class DuplicateHeader extends BrokerProblem {
  override name = 'DuplicateHeader';
  /** The header's name, as the broker reports it. */
  get header(): string | undefined {
    const header = this.problem?.['header'];
    return typeof header === 'string' ? header : undefined;
  }
}
/** The request did not arrive in time (the broker's read timeout). */
export class RequestTimeout extends BrokerProblem {
  override name = 'RequestTimeout';
}
/** The request line and headers are too large. */
export class HeadersTooLarge extends BrokerProblem {
  override name = 'HeadersTooLarge';
}
export class InternalError extends BrokerProblem {
  override name = 'InternalError';
}
/** Every stream lease of the session is held; `retryAfter` says when the earliest expires. */
export class SessionLeasesFull extends RetryAfterProblem {
  override name = 'SessionLeasesFull';
}
/** The lease expired, was released or was taken over: stop serving the stream. */
export class LeaseLost extends BrokerProblem {
  override name = 'LeaseLost';
}
export class InFlightMarkNotFound extends BrokerProblem {
  override name = 'InFlightMarkNotFound';
}
/** The session already has a pending server-to-client request with this JSON-RPC id. */
export class PendingRequestExists extends BrokerProblem {
  override name = 'PendingRequestExists';
}
/** A reply for a request id the session has no request with: refused without effect. */
export class PendingRequestNotFound extends BrokerProblem {
  override name = 'PendingRequestNotFound';
}
/** A reply to a request that has ended (answered, cancelled, timed out): refused without effect. */
export class PendingRequestEnded extends BrokerProblem {
  override name = 'PendingRequestEnded';
}

/** How a `BrokerUnavailable` came about, which decides whether the request may have had an effect. */
export type UnavailableKind = 'status' | 'connect' | 'timeout' | 'network';

/**
 * The broker cannot answer now: it said 503 (its database is down), or it could not be reached, or it
 * did not answer in time. Never a reason to treat a session as gone.
 */
export class BrokerUnavailable extends SessionBrokerError {
  override name = 'BrokerUnavailable';
  /** Seconds the broker asked to wait (`Retry-After`), if it said. */
  readonly retryAfter: number | undefined;
  /** `status`: it said 503; `connect`: refused; `timeout`: no answer in time; `network`: connection broke. */
  readonly kind: UnavailableKind;
  /** The 503's problem document, when the broker answered. */
  readonly problem: ProblemDocument | undefined;

  constructor(
    message: string,
    options: { kind: UnavailableKind; retryAfter?: number; problem?: ProblemDocument; error?: unknown },
  ) {
    super(message, options.error === undefined ? undefined : { cause: options.error });
    this.kind = options.kind;
    this.retryAfter = options.retryAfter;
    this.problem = options.problem;
  }

  /**
   * False only when the request certainly did not reach the broker (connection refused) or the broker
   * said 503 before acting. A timeout or a broken connection may have left an effect behind.
   */
  get mayHaveReachedBroker(): boolean {
    return this.kind === 'timeout' || this.kind === 'network';
  }
}

/** An answer this client cannot interpret (not problem+json, unknown status, malformed body). */
export class UnexpectedResponse extends BrokerProblem {
  override name = 'UnexpectedResponse';
}

/** A session id the broker's contract cannot carry; no request was sent. */
export class InvalidSessionId extends SessionBrokerError {
  override name = 'InvalidSessionId';
}

type ProblemClass = new (status: number, problem: ProblemDocument | undefined) => BrokerProblem;

/** Problem slug → class. Those carrying Retry-After (below) and database-unavailable are built apart. */
export const PROBLEM_CLASSES: Readonly<Record<string, ProblemClass>> = {
  unauthorized: Unauthorized,
  'admin-required': AdminRequired,
  'tenant-key-required': TenantKeyRequired,
  'principal-mismatch': PrincipalMismatch,
  'session-not-found': SessionNotFound,
  'not-found': NotFound,
  'method-not-allowed': MethodNotAllowed,
  'not-acceptable': NotAcceptable,
  'session-exists': SessionExists,
  'session-id-retired': SessionIdRetired,
  'precondition-failed': PreconditionFailed,
  'payload-too-large': PayloadTooLarge,
  'metadata-too-large': MetadataTooLarge,
  'unsupported-media-type': UnsupportedMediaType,
  'validation-error': ValidationFailed,
  'idempotency-key-reused': IdempotencyKeyReused,
  'session-request-limit': SessionRequestLimit,
  'duplicate-header': DuplicateHeader,
  'request-timeout': RequestTimeout,
  'headers-too-large': HeadersTooLarge,
  'internal-error': InternalError,
  'lease-lost': LeaseLost,
  'in-flight-mark-not-found': InFlightMarkNotFound,
  'pending-request-exists': PendingRequestExists,
  'pending-request-not-found': PendingRequestNotFound,
  'pending-request-ended': PendingRequestEnded,
};

/** The problem types whose class also carries the answer's `Retry-After` (in seconds). */
type RetryAfterClass = new (
  status: number,
  problem: ProblemDocument | undefined,
  retryAfter: number | undefined,
) => RetryAfterProblem;
const RETRY_AFTER_CLASSES: Readonly<Record<string, RetryAfterClass>> = {
  'quota-exceeded': QuotaExceeded,
  'idempotency-key-conflict': IdempotencyKeyConflict,
  'session-rate-limited': SessionRateLimited,
  'session-leases-full': SessionLeasesFull,
};

/** Every problem slug this client maps to its own class (used by the contract test). */
export const KNOWN_PROBLEM_SLUGS: readonly string[] = [
  ...Object.keys(PROBLEM_CLASSES),
  ...Object.keys(RETRY_AFTER_CLASSES),
  'database-unavailable',
];

/** The error for an error answer of the broker. */
export function problemError(
  status: number,
  problem: ProblemDocument | undefined,
  retryAfter: number | undefined,
  bodyText: string,
): SessionBrokerError {
  const slug = problem?.type.startsWith(PROBLEM_TYPE_PREFIX) ? problem.type.slice(PROBLEM_TYPE_PREFIX.length) : '';
  if (status === 503 || slug === 'database-unavailable') {
    return new BrokerUnavailable(`broker unavailable (${status}): ${problem?.detail ?? bodyText}`, {
      kind: 'status',
      ...(retryAfter === undefined ? {} : { retryAfter }),
      ...(problem === undefined ? {} : { problem }),
    });
  }
  const withRetryAfter = RETRY_AFTER_CLASSES[slug];
  if (withRetryAfter) return new withRetryAfter(status, problem, retryAfter);
  const known = PROBLEM_CLASSES[slug];
  if (known) return new known(status, problem);
  // A problem type this client does not know yet (a newer broker) keeps its type and status.
  if (problem) return new BrokerProblem(status, problem);
  return new UnexpectedResponse(status, undefined, bodyText.slice(0, 200));
}

function numberMember(problem: ProblemDocument | undefined, name: string): number | undefined {
  const value = problem?.[name];
  return typeof value === 'number' ? value : undefined;
}
