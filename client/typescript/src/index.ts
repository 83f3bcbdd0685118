// @jobpath/client: the generated types and client of the JobPath API (openapi-typescript
// and openapi-fetch, from openapi.yaml), the session helper, and the typed errors.
import createClient from "openapi-fetch";

import type { paths } from "./generated/openapi.js";

export type { components, operations, paths } from "./generated/openapi.js";
export { ApiError, ERROR_CODES, decodeError, isErrorCode, unwrap } from "./errors.js";
export type { ErrorBody, ErrorCode, UnexpectedCode } from "./errors.js";
export { Session } from "./session.js";
export type {
  LogoutScope,
  RefreshTransport,
  SessionOptions,
  SessionState,
  TokenResponse,
  UserSummary,
} from "./session.js";

/** A bare client of the API, for calls made without a session (or with your own headers). */
export function createApiClient(baseUrl: string, options: { fetch?: (request: Request) => Promise<Response> } = {}) {
  return createClient<paths>({ baseUrl, ...options });
}
