/**
 * Who a request acts for, as the string the broker binds sessions to (`Session-Principal`).
 */
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';

/** What the middleware knows about a request before the app runs. */
export interface RequestHead {
  method: string;
  /** A request header (lower-case name), or undefined. */
  header(name: string): string | undefined;
}

/**
 * Returns the principal for a request, or undefined/null for none (then the broker does not check
 * the binding: a session created without a principal is usable by anyone holding its id).
 */
export type PrincipalResolver = (auth: AuthInfo | undefined, request: RequestHead) => string | null | undefined;

/**
 * The default: the SDK auth middleware's `AuthInfo` (`req.auth`, set by `requireBearerAuth`) as
 * `issuer|subject|clientId`, the Python SDK's owner triple. The TypeScript SDK's AuthInfo has only
 * `clientId` as a field, so issuer and subject are read from `extra` (`iss`/`issuer`, `sub`/`subject`),
 * where a token verifier puts the token's claims; absent parts are empty. No AuthInfo: no principal.
 */
export function principalFromAuthInfo(auth: AuthInfo | undefined): string | undefined {
  if (!auth) return undefined;
  const extra = auth.extra ?? {};
  const issuer = text(extra['iss']) ?? text(extra['issuer']) ?? '';
  const subject = text(extra['sub']) ?? text(extra['subject']) ?? '';
  const clientId = auth.clientId ?? '';
  if (!issuer && !subject && !clientId) return undefined;
  return `${issuer}|${subject}|${clientId}`;
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
