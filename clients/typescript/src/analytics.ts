/**
 * Request analytics off the request path: `record()` only appends to a bounded buffer; a background
 * timer sends batches to `POST /v1/analytics`. A broker without that endpoint (404 `not-found`)
 * switches the reporter off with one warning instead of failing every flush.
 */
import type { SessionBroker } from './client.js';
import { BrokerUnavailable, NotFound } from './errors.js';
import type { RequestReport } from './types.js';

export interface AnalyticsOptions {
  /** How often buffered reports are sent. Default 5000 ms. */
  flushIntervalMs?: number;
  /** Reports kept while the broker cannot take them; the oldest are dropped past this. Default 10,000. */
  maxBuffered?: number;
  /** Where warnings go. Default `console.warn`. */
  warn?: (message: string) => void;
}

const BATCH = 1000;

export class RequestAnalytics {
  private buffer: RequestReport[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private off = false;
  private readonly interval: number;
  private readonly max: number;
  private readonly warn: (message: string) => void;
  /** Reports the broker accepted, and reports given up on (buffer full, rejected, or lost in transit). */
  readonly counts = { recorded: 0, dropped: 0 };

  constructor(
    private readonly broker: SessionBroker,
    options: AnalyticsOptions = {},
  ) {
    this.interval = options.flushIntervalMs ?? 5_000;
    this.max = options.maxBuffered ?? 10_000;
    this.warn = options.warn ?? ((message) => console.warn(message));
  }

  /** True once the broker said it has no analytics endpoint. */
  get disabled(): boolean {
    return this.off;
  }

  get pending(): number {
    return this.buffer.length;
  }

  /** Queues one finished request. Never blocks, never throws. */
  record(report: RequestReport): void {
    if (this.off) return;
    this.buffer.push(report);
    this.trim();
    if (!this.timer) {
      this.timer = setInterval(() => void this.flush(), this.interval);
      this.timer.unref(); // analytics never keep a process alive
    }
  }

  /** Sends everything buffered now (also what the timer does). Resolves when done; never rejects. */
  flush(): Promise<void> {
    this.flushing ??= this.drain().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  /** Stops the timer after a last flush. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  private async drain(): Promise<void> {
    while (this.buffer.length > 0 && !this.off) {
      const batch = this.buffer.splice(0, BATCH);
      try {
        this.counts.recorded += await this.broker.reportRequests(batch);
      } catch (error) {
        if (error instanceof NotFound) {
          this.off = true;
          this.counts.dropped += batch.length + this.buffer.length;
          this.buffer = [];
          if (this.timer) clearInterval(this.timer);
          this.timer = undefined;
          this.warn('session-broker-client: this broker has no POST /v1/analytics; request analytics are switched off');
          return;
        }
        if (error instanceof BrokerUnavailable && !error.mayHaveReachedBroker) {
          // Certainly not recorded: keep the batch for the next flush (the buffer bound still applies).
          this.buffer.unshift(...batch);
          this.trim();
          return;
        }
        // Possibly recorded (timeout) or refused: sending again could count twice or fail again.
        this.counts.dropped += batch.length;
        if (!(error instanceof BrokerUnavailable)) this.warn(`session-broker-client: analytics batch refused: ${String(error)}`);
      }
    }
  }

  /** Drops the oldest reports past the bound. */
  private trim(): void {
    if (this.buffer.length > this.max) {
      const excess = this.buffer.length - this.max;
      this.buffer.splice(0, excess);
      this.counts.dropped += excess;
    }
  }
}
