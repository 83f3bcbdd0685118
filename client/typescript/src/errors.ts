// Decoding the one error body of the contract (`Error` in openapi.yaml) into a typed
// exception. The union of codes is the spec's `ErrorCode` enum, generated with its values,
// so a `switch (e.code)` is checked by the compiler and a code the spec drops breaks the
// build of the code that handled it.
import { errorCodeValues, type components } from "./generated/openapi.js";

/** A stable `error` code of the contract (`ErrorCode` in openapi.yaml). */
export type ErrorCode = components["schemas"]["ErrorCode"];

/** The error body every failed operation answers with (`Error` in openapi.yaml). */
export type ErrorBody = components["schemas"]["Error"];

/**
 * What a response that is not the contract's error body is decoded as: a proxy's HTML
 * page, a cut connection, or a code this client does not know yet (a newer server).
 */
export type UnexpectedCode = "unexpected_response";

export const ERROR_CODES: ReadonlySet<string> = new Set(errorCodeValues);

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && ERROR_CODES.has(value);
}

/** A failed call: the HTTP status, the decoded code, and the body as the server sent it. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: ErrorCode | UnexpectedCode;
  /** The field at fault, for `validation_error`. */
  readonly field: string | undefined;
  /** The server's request id (also in the `X-Request-Id` header), for support. */
  readonly requestId: string | undefined;
  /** Seconds to wait, from `Retry-After` (429, 503). */
  readonly retryAfter: number | undefined;
  readonly body: unknown;

  constructor(status: number, body: unknown, headers?: Headers) {
    const decoded = isErrorBody(body) ? body : undefined;
    super(decoded?.detail.message ?? `unexpected response (HTTP ${status})`);
    this.name = "ApiError";
    this.status = status;
    this.code = decoded && isErrorCode(decoded.error) ? decoded.error : "unexpected_response";
    this.field = decoded?.detail.field;
    this.requestId = decoded?.detail.request_id ?? headers?.get("x-request-id") ?? undefined;
    const retry = Number(headers?.get("retry-after") ?? Number.NaN);
    this.retryAfter = Number.isFinite(retry) ? retry : undefined;
    this.body = body;
  }
}

function isErrorBody(body: unknown): body is ErrorBody {
  if (typeof body !== "object" || body === null) return false;
  const b = body as Record<string, unknown>;
  const detail = b.detail as Record<string, unknown> | null | undefined;
  return (
    typeof b.error === "string" &&
    typeof b.status_code === "number" &&
    typeof detail === "object" &&
    detail !== null &&
    typeof detail.message === "string"
  );
}

/**
 * The data of an openapi-fetch result, or its error thrown as an {@link ApiError}.
 *
 * ```ts
 * const me = unwrap(await api.GET("/auth/me"));
 * ```
 */
export function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.response.ok) {
    // A 204 has no body: openapi-fetch gives `{}` or undefined; the type says what it is.
    return result.data as T;
  }
  throw new ApiError(result.response.status, result.error, result.response.headers);
}

/** Decodes a failed `Response` whose body has not been read yet. */
export async function decodeError(response: Response): Promise<ApiError> {
  let body: unknown;
  const text = await response.text();
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return new ApiError(response.status, body, response.headers);
}
