/**
 * `GET /v1/events` as an async iterator that never silently loses an event: every frame's id is
 * remembered and sent back as `Last-Event-ID` on reconnect, and a `stream.gap` (events dropped by
 * retention) is yielded to the consumer rather than hidden.
 */
import { BrokerUnavailable } from './errors.js';
import { sleep, type HttpClient } from './http.js';
import { SseParser, type SseFrame } from './sse.js';
import type { BrokerEvent, StreamEventData, StreamNoticeData } from './types.js';

export interface EventStreamOptions {
  /** Resume after this event id; omitted: start at "now". `'0'` replays everything retained. */
  lastEventId?: string;
  /** Stops the stream (the iterator then ends without an error). */
  signal?: AbortSignal;
  /** Reconnect backoff after an outage: full jitter between 0 and min(max, min × 2^n). */
  reconnectMinDelayMs?: number;
  reconnectMaxDelayMs?: number;
  /** Called for each connection problem before reconnecting (for logs); the stream carries on. */
  onReconnect?: (error: unknown) => void;
  /**
   * A connection that delivers nothing (not even the broker's 15 s keep-alive) for this long is taken
   * as dead and replaced: a silently lost connection must not stop the stream forever. Default 45 s.
   */
  idleTimeoutMs?: number;
}

export async function* streamEvents(http: HttpClient, options: EventStreamOptions = {}): AsyncGenerator<BrokerEvent> {
  const { signal } = options;
  const minDelay = options.reconnectMinDelayMs ?? 250;
  const maxDelay = options.reconnectMaxDelayMs ?? 5_000;
  const idleTimeout = options.idleTimeoutMs ?? 45_000;
  let lastEventId = options.lastEventId;
  let failures = 0;
  while (!signal?.aborted) {
    // One controller per connection: aborted by the caller's signal, or by the idle watchdog.
    const connection = new AbortController();
    const stopConnection = () => connection.abort(signal?.reason);
    signal?.addEventListener('abort', stopConnection, { once: true });
    let watchdog: NodeJS.Timeout | undefined;
    try {
      const answer = await http.send<Response>({
        method: 'GET',
        path: '/v1/events',
        headers: { accept: 'text/event-stream', 'last-event-id': lastEventId },
        idempotent: false, // reconnects are this loop's business, with Last-Event-ID
        expect: 'stream',
        signal: connection.signal,
      });
      watchdog = setTimeout(() => connection.abort(new Error('event stream idle')), idleTimeout);
      watchdog.unref();
      const body = answer.body.body;
      if (!body) throw new BrokerUnavailable('event stream answered without a body', { kind: 'network' });
      const parser = new SseParser();
      const decoder = new TextDecoder();
      const chunks = (body as unknown as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
      for (;;) {
        let next: IteratorResult<Uint8Array>;
        try {
          next = await chunks.next();
        } catch (error) {
          // The connection broke mid-stream (broker killed, network): an outage, not the consumer's problem.
          throw new BrokerUnavailable('event stream interrupted', { kind: 'network', error });
        }
        if (next.done) break;
        watchdog.refresh();
        for (const frame of parser.push(decoder.decode(next.value, { stream: true }))) {
          if (frame.id !== undefined) lastEventId = frame.id;
          failures = 0; // the connection delivered: the next outage starts its backoff afresh
          const event = toEvent(frame);
          if (event === 'reconnect') {
            await chunks.return?.();
            throw new BrokerUnavailable('broker ended the stream (stream.error)', { kind: 'status' });
          }
          if (event) {
            let resumed = false;
            try {
              yield event;
              resumed = true;
            } finally {
              // Not resumed: the consumer stopped iterating (break/return), so close the connection.
              if (!resumed) await chunks.return?.();
            }
          }
        }
      }
      // The broker closed the stream (e.g. shutting down): reconnect after the usual pause.
      throw new BrokerUnavailable('event stream closed by the broker', { kind: 'network' });
    } catch (error) {
      if (signal?.aborted) return;
      if (!(error instanceof BrokerUnavailable)) throw error; // 401, 422...: reconnecting cannot help
      // (an idle abort surfaces as the interrupted read above, i.e. as BrokerUnavailable)
      options.onReconnect?.(error);
      const backoff = Math.random() * Math.min(maxDelay, minDelay * 2 ** failures++);
      const asked = (error.retryAfter ?? 0) * 1000;
      try {
        await sleep(Math.max(backoff, asked), signal);
      } catch {
        return; // aborted while waiting
      }
    } finally {
      clearTimeout(watchdog);
      signal?.removeEventListener('abort', stopConnection);
    }
  }
}

/** A frame as something to yield, skip (undefined) or reconnect on. */
function toEvent(frame: SseFrame): BrokerEvent | 'reconnect' | undefined {
  switch (frame.event) {
    case 'stream.open':
      return undefined; // carries only the starting id, already recorded
    case 'stream.error':
      return 'reconnect';
    case 'stream.gap': {
      const notice = parseData<StreamNoticeData>(frame) ?? { detail: '' };
      return {
        id: frame.id ?? '',
        type: 'stream.gap',
        lastEventId: notice.last_event_id ?? null,
        resumedAfter: notice.resumed_after ?? null,
        detail: notice.detail,
      };
    }
    default: {
      const data = parseData<StreamEventData>(frame);
      if (!data) return undefined;
      return {
        id: frame.id ?? '',
        type: data.type ?? frame.event,
        sessionId: data.session_id,
        occurredAt: data.occurred_at,
        data: data.data ?? {},
      };
    }
  }
}

function parseData<T>(frame: SseFrame): T | undefined {
  try {
    return JSON.parse(frame.data) as T;
  } catch {
    return undefined;
  }
}
