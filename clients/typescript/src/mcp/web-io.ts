/**
 * Reading web-standard request bodies within a size bound, and turning replies into Responses.
 */
import type { PostBody } from './gate.js';
import type { Reply } from './replies.js';

/** Reads at most `maxBytes` of the body (the SDK's rule: a larger Content-Length is refused unread). */
export async function readWebBody(request: Request, maxBytes: number): Promise<{ body: PostBody; text?: string }> {
  if (Number(request.headers.get('content-length')) > maxBytes) return { body: { kind: 'too-large' } };
  let text = '';
  if (request.body) {
    const reader = request.body.getReader();
    const decoder = new TextDecoder();
    let received = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      received += value.byteLength;
      if (received > maxBytes) {
        await reader.cancel();
        return { body: { kind: 'too-large' } };
      }
      text += decoder.decode(value, { stream: true });
    }
    text += decoder.decode();
  }
  try {
    return { body: { kind: 'json', value: JSON.parse(text) }, text };
  } catch {
    return { body: { kind: 'invalid' }, text };
  }
}

export function toResponse(reply: Reply): Response {
  return new Response(reply.body === '' ? null : reply.body, { status: reply.status, headers: reply.headers });
}
