/**
 * An incremental Server-Sent Events parser (the WHATWG "event stream interpretation"): feed it text as
 * it arrives, get whole frames back. Used for the broker's `/v1/events` and to watch MCP responses.
 */
export interface SseFrame {
  /** `event:` field; 'message' when absent. */
  event: string;
  data: string;
  /** `id:` field of this frame, if it had one. */
  id: string | undefined;
  retry: number | undefined;
}

export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private id: string | undefined;
  private retry: number | undefined;
  private sawField = false;

  /** Feeds a chunk of text; returns the frames it completed. */
  push(text: string): SseFrame[] {
    this.buffer += text;
    const frames: SseFrame[] = [];
    for (;;) {
      const end = lineEnd(this.buffer);
      if (end === undefined) break;
      const line = this.buffer.slice(0, end.index);
      this.buffer = this.buffer.slice(end.index + end.length);
      const frame = this.line(line);
      if (frame) frames.push(frame);
    }
    return frames;
  }

  private line(line: string): SseFrame | undefined {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return undefined; // comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    this.sawField = true;
    switch (field) {
      case 'event':
        this.event = value;
        break;
      case 'data':
        this.data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.id = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored, as the spec says
    }
    return undefined;
  }

  private dispatch(): SseFrame | undefined {
    const frame: SseFrame = {
      event: this.event || 'message',
      data: this.data.join('\n'),
      id: this.id,
      retry: this.retry,
    };
    const had = this.sawField;
    this.event = '';
    this.data = [];
    this.id = undefined;
    this.retry = undefined;
    this.sawField = false;
    return had ? frame : undefined;
  }
}

/** The first line terminator (CRLF, LF or CR) in `text`; a trailing CR waits for a possible LF. */
function lineEnd(text: string): { index: number; length: number } | undefined {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10) return { index: i, length: 1 };
    if (c === 13) {
      if (i + 1 === text.length) return undefined;
      return { index: i, length: text.charCodeAt(i + 1) === 10 ? 2 : 1 };
    }
  }
  return undefined;
}
