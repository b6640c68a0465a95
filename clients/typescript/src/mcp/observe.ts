/**
 * Watches an MCP response body as it streams to the client (JSON or SSE) and notes which JSON-RPC
 * requests it answered with an error: that is how the middleware knows the app failed an
 * `initialize`, and which requests to count as failed in the analytics. It never changes the bytes.
 */
import { SseParser } from '../sse.js';
import { messagesOf, type JsonRpcId } from './jsonrpc.js';

/** JSON bodies are buffered for inspection only up to this size; past it they are not inspected. */
const MAX_INSPECTED_JSON_BYTES = 1024 * 1024;

export class ResponseObserver {
  readonly errorIds = new Set<JsonRpcId>();
  private readonly sse: SseParser | undefined;
  private readonly decoder = new TextDecoder();
  private json = '';
  private jsonBytes = 0;

  constructor(contentType: string | undefined) {
    this.sse = contentType?.includes('text/event-stream') ? new SseParser() : undefined;
  }

  write(chunk: Uint8Array): void {
    const text = this.decoder.decode(chunk, { stream: true });
    if (this.sse) {
      for (const frame of this.sse.push(text)) this.note(frame.data);
      return;
    }
    this.jsonBytes += chunk.byteLength;
    if (this.jsonBytes <= MAX_INSPECTED_JSON_BYTES) this.json += text;
  }

  end(): void {
    const rest = this.decoder.decode();
    if (this.sse) {
      for (const frame of this.sse.push(rest + '\n\n')) this.note(frame.data);
    } else if (this.jsonBytes <= MAX_INSPECTED_JSON_BYTES) {
      this.note(this.json + rest);
    }
  }

  private note(text: string): void {
    if (!text) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return;
    }
    for (const message of messagesOf(parsed) ?? []) {
      if (message.error !== undefined && (typeof message.id === 'string' || typeof message.id === 'number')) {
        this.errorIds.add(message.id);
      }
    }
  }
}
