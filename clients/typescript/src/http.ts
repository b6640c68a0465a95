/**
 * The one place that talks HTTP to the broker: timeouts, error mapping and the retry policy. Only the
 * platform's `fetch` is used, so the package has no runtime dependency.
 */
import { BrokerUnavailable, problemError, SessionBrokerError, type UnavailableKind } from './errors.js';
import type { ProblemDocument } from './types.js';

export const USER_AGENT = 'session-broker-client/0.1.0';

export interface RetryPolicy {
  /** Extra attempts after the first, for idempotent calls only. Default 2. */
  retries: number;
  /** Backoff base; attempt n waits a random time in [0, base × 2^n] ("full jitter"). Default 100 ms. */
  baseDelayMs: number;
  /**
   * The longest this client waits before one retry. A `Retry-After` longer than this is not waited
   * out: the call fails at once with `BrokerUnavailable.retryAfter`, so the caller (e.g. a gateway
   * answering 503 + Retry-After) decides. Default 1000 ms.
   */
  maxDelayMs: number;
}

export interface HttpSettings {
  baseUrl: string;
  apiKey: string | undefined;
  timeoutMs: number;
  retry: RetryPolicy;
  fetch: typeof fetch;
}

export interface Call {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Path below the base URL, with every dynamic segment already percent-encoded. */
  path: string;
  query?: Record<string, string | number | boolean | undefined | null>;
  headers?: Record<string, string | undefined>;
  /** JSON body; undefined sends none. */
  body?: unknown;
  contentType?: string;
  /** Whether repeating the call cannot change its effect; only those are retried. */
  idempotent: boolean;
  signal?: AbortSignal | undefined;
  /** 'stream' hands back the open Response (used for SSE) and applies no timeout to its body. */
  expect?: 'json' | 'stream';
}

export interface Answer<T> {
  status: number;
  headers: Headers;
  body: T;
  /** 0 for the first attempt; >0 when a retry produced this answer. */
  attempt: number;
}

export class HttpClient {
  constructor(private readonly settings: HttpSettings) {}

  async send<T>(call: Call): Promise<Answer<T>> {
    const { retries } = this.settings.retry;
    for (let attempt = 0; ; attempt++) {
      const canRetry = call.idempotent && attempt < retries;
      try {
        return await this.once<T>(call, attempt);
      } catch (error) {
        if (error instanceof SessionBrokerError) error.attempt = attempt;
        if (!(error instanceof BrokerUnavailable) || !canRetry) throw error;
        const delay = this.retryDelay(attempt, error.retryAfter);
        if (delay === undefined) throw error;
        await sleep(delay, call.signal);
      }
    }
  }

  /** Milliseconds to wait before the next attempt, or undefined when Retry-After is beyond our budget. */
  private retryDelay(attempt: number, retryAfterSeconds: number | undefined): number | undefined {
    const { baseDelayMs, maxDelayMs } = this.settings.retry;
    if (retryAfterSeconds !== undefined) {
      const asked = retryAfterSeconds * 1000;
      if (asked > maxDelayMs) return undefined;
      // Never sooner than asked; a little jitter so replicas told the same value do not return in step.
      return asked + Math.random() * Math.min(baseDelayMs, maxDelayMs - asked);
    }
    return Math.random() * Math.min(maxDelayMs, baseDelayMs * 2 ** attempt);
  }

  private async once<T>(call: Call, attempt: number): Promise<Answer<T>> {
    const url = this.url(call);
    const headers: Record<string, string> = { 'user-agent': USER_AGENT, accept: 'application/json' };
    if (this.settings.apiKey) headers['authorization'] = `Bearer ${this.settings.apiKey}`;
    for (const [name, value] of Object.entries(call.headers ?? {})) {
      if (value !== undefined) headers[name.toLowerCase()] = value;
    }
    let body: string | undefined;
    if (call.body !== undefined) {
      body = JSON.stringify(call.body);
      headers['content-type'] = call.contentType ?? 'application/json';
    }
    const timeout = AbortSignal.timeout(this.settings.timeoutMs);
    const controller = new AbortController();
    const abortFrom = (signal: AbortSignal) => controller.abort(signal.reason);
    // For streams the timeout covers only the wait for the response headers.
    const detachTimeout = onAbort(timeout, () => abortFrom(timeout));
    const detachCaller = call.signal ? onAbort(call.signal, () => abortFrom(call.signal!)) : () => {};
    let handedOver = false;
    try {
      let response: Response;
      try {
        response = await this.settings.fetch(url, {
          method: call.method,
          headers,
          ...(body === undefined ? {} : { body }),
          signal: controller.signal,
        });
      } catch (error) {
        throw transportError(error, call, timeout);
      }
      if (call.expect === 'stream' && response.ok) {
        // The caller's signal must keep reaching the open body, so it stays attached.
        handedOver = true;
        return { status: response.status, headers: response.headers, body: response as T, attempt };
      }
      let text: string;
      try {
        text = await response.text();
      } catch (error) {
        throw transportError(error, call, timeout);
      }
      if (!response.ok) {
        throw problemError(response.status, parseProblem(response, text), parseRetryAfter(response), text);
      }
      return { status: response.status, headers: response.headers, body: parseJson<T>(response, text), attempt };
    } finally {
      detachTimeout();
      if (!handedOver) detachCaller();
    }
  }

  private url(call: Call): string {
    const url = new URL(this.settings.baseUrl.replace(/\/+$/, '') + call.path);
    for (const [name, value] of Object.entries(call.query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    return url.toString();
  }
}

function transportError(error: unknown, call: Call, timeout: AbortSignal): unknown {
  if (call.signal?.aborted) return call.signal.reason ?? error; // the caller gave up: not an outage
  if (timeout.aborted) {
    return new BrokerUnavailable(`broker did not answer ${call.method} ${call.path} in time`, {
      kind: 'timeout',
      error,
    });
  }
  const kind = connectionKind(error);
  const code = errorCode(error);
  return new BrokerUnavailable(`broker unreachable (${call.method} ${call.path}${code ? `: ${code}` : ''})`, {
    kind,
    error,
  });
}

/** Refused or unresolvable means the request never left this process; anything else may have. */
function connectionKind(error: unknown): UnavailableKind {
  const code = errorCode(error);
  return code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EHOSTUNREACH'
    ? 'connect'
    : 'network';
}

function errorCode(error: unknown): string | undefined {
  // undici wraps the system error: TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } }).
  for (let current: unknown = error, depth = 0; current && depth < 4; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

function parseProblem(response: Response, text: string): ProblemDocument | undefined {
  const type = response.headers.get('content-type') ?? '';
  if (!type.includes('json')) return undefined;
  try {
    const document = JSON.parse(text) as unknown;
    if (document && typeof document === 'object' && typeof (document as ProblemDocument).type === 'string') {
      return document as ProblemDocument;
    }
  } catch {
    // not a problem document: the caller reports the status and the text
  }
  return undefined;
}

function parseJson<T>(response: Response, text: string): T {
  if (response.status === 204 || text === '') return undefined as T;
  try {
    return JSON.parse(text) as T;
  } catch {
    throw problemError(response.status, undefined, undefined, `unparsable JSON answer: ${text.slice(0, 200)}`);
  }
}

/** `Retry-After` as seconds: delta-seconds or an HTTP date. */
export function parseRetryAfter(response: Response): number | undefined {
  const value = response.headers.get('retry-after');
  if (value === null) return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

function onAbort(signal: AbortSignal, listener: () => void): () => void {
  if (signal.aborted) {
    listener();
    return () => {};
  }
  signal.addEventListener('abort', listener, { once: true });
  return () => signal.removeEventListener('abort', listener);
}

/** setTimeout as a promise that rejects with the signal's reason when aborted. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      detach();
      resolve();
    }, ms);
    const detach = signal
      ? onAbort(signal, () => {
          clearTimeout(timer);
          reject(signal.reason);
        })
      : () => {};
  });
}
