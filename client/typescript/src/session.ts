// The session helper: one object that logs in, holds the access token, adds it to every
// call of the generated client, and renews it — shortly before it expires, and once when a
// call is answered 401 `invalid_token` — with a single refresh in flight however many calls
// need one. In cookie mode (browsers) the refresh token never reaches JavaScript: it lives
// in an HttpOnly cookie the server sets, and tabs of one browser share it, so they also
// share one refresh at a time (Web Locks) and its result (BroadcastChannel).
//
// Only what every browser and Node >= 20 has is used (fetch, Request, Headers,
// BroadcastChannel, optionally navigator.locks): no polyfill.
import createClient, { type Client } from "openapi-fetch";

import { ApiError, decodeError } from "./errors.js";
import type { components, paths } from "./generated/openapi.js";

export type TokenResponse = components["schemas"]["TokenResponse"];
export type UserSummary = components["schemas"]["UserSummary"];
export type LogoutScope = "local" | "global" | "others";

/**
 * Where the refresh token lives: `cookie`, an HttpOnly cookie scripts cannot read (for
 * browsers; the API must list the page's origin in `CORS_ORIGINS` unless it is the same
 * origin), or `body`, in this object's memory (servers, tests, mobile apps).
 */
export type RefreshTransport = "cookie" | "body";

export interface SessionOptions {
  /** The API's base URL, such as `https://api.example.com`. */
  baseUrl: string;
  /** Default `cookie` where there is a `document` (a browser page), else `body`. */
  refreshTransport?: RefreshTransport;
  /** Renew this many seconds before the access token expires (default 30). */
  refreshMargin?: number;
  /** The fetch to use (default `globalThis.fetch`). */
  fetch?: (request: Request) => Promise<Response>;
  /**
   * The name of the cross-tab lock and channel (cookie mode in a browser; default
   * `jobpath-session`). Pages of one origin talking to two APIs need two names.
   */
  channel?: string;
  /** Called whenever the session starts, is renewed or ends (`null`). */
  onChange?: (state: SessionState | null) => void;
}

export interface SessionState {
  accessToken: string;
  /** When the access token expires, in milliseconds since the epoch (local clock). */
  expiresAt: number;
  sessionId: string;
  user: UserSummary;
}

/** What tabs tell each other (cookie mode): a renewed session, or its end. */
type Broadcast = { kind: "renewed"; state: SessionState } | { kind: "ended" };

const EXCHANGES = ["/auth/login", "/auth/refresh", "/auth/logout"];

export class Session {
  /** The generated client; every call carries the access token and is renewed on a 401. */
  readonly api: Client<paths>;
  readonly refreshTransport: RefreshTransport;
  private readonly baseUrl: string;
  private readonly margin: number;
  private readonly fetcher: (request: Request) => Promise<Response>;
  private readonly onChange: ((state: SessionState | null) => void) | undefined;
  private readonly lockName: string;
  private readonly channel: BroadcastChannel | undefined;
  private current: SessionState | null = null;
  private refreshToken: string | undefined;
  private inFlight: Promise<SessionState> | null = null;
  /** Bumped by every change of `current`, so a waiting refresh sees that another won. */
  private generation = 0;

  constructor(options: SessionOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.refreshTransport =
      options.refreshTransport ?? (typeof document === "undefined" ? "body" : "cookie");
    this.margin = (options.refreshMargin ?? 30) * 1000;
    const base = options.fetch ?? ((request: Request) => globalThis.fetch(request));
    this.fetcher = base;
    this.onChange = options.onChange;
    this.lockName = options.channel ?? "jobpath-session";
    // Only tabs sharing a cookie share a session; in body mode each object is its own.
    if (this.refreshTransport === "cookie" && typeof BroadcastChannel !== "undefined") {
      this.channel = new BroadcastChannel(this.lockName);
      // Node keeps a process alive for an open channel; a browser has no unref.
      (this.channel as unknown as { unref?: () => void }).unref?.();
      this.channel.onmessage = (event: MessageEvent<Broadcast>) => this.heard(event.data);
    }
    this.api = createClient<paths>({
      baseUrl: this.baseUrl,
      fetch: (request) => this.send(request),
    });
  }

  /** The live session, if any. */
  get state(): SessionState | null {
    return this.current;
  }

  /** Logs in; in cookie mode the server sets the refresh cookie and the body has none. */
  async login(email: string, password: string, deviceToken?: string): Promise<TokenResponse> {
    const { data, error, response } = await this.api.POST("/auth/login", {
      body: {
        email,
        password,
        refresh_token_transport: this.refreshTransport,
        ...(deviceToken === undefined ? {} : { device_token: deviceToken }),
      },
    });
    if (!data) throw new ApiError(response.status, error, response.headers);
    this.adopt(data);
    return data;
  }

  /**
   * After a page load: renews the session from the refresh cookie, if there is a live one.
   * Resolves to the state, or `null` when there is no session to restore (not an error).
   */
  async restore(): Promise<SessionState | null> {
    try {
      return await this.refresh();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return null;
      throw e;
    }
  }

  /**
   * Renews the access token (rotating the refresh token). Concurrent callers share one
   * request; in a browser's cookie mode, tabs take turns through a Web Lock and a tab that
   * waited uses the session another tab renewed meanwhile instead of renewing again.
   */
  refresh(): Promise<SessionState> {
    if (!this.inFlight) {
      const seen = this.generation;
      this.inFlight = this.locked(() => this.renew(seen)).finally(() => {
        this.inFlight = null;
      });
    }
    return this.inFlight;
  }

  /** Ends the session (or, with `others`, every other one) on the server, then here. */
  async logout(scope: LogoutScope = "local"): Promise<void> {
    const { error, response } = await this.api.POST("/auth/logout", {
      params: { query: { scope } },
    });
    // 401: the session had already ended; either way it is over here.
    if (error && response.status !== 401) {
      throw new ApiError(response.status, error, response.headers);
    }
    if (scope !== "others") this.end(true);
  }

  /** Forgets the session here only (no request). */
  forget(): void {
    this.end(true);
  }

  private async renew(seen: number): Promise<SessionState> {
    // Another tab renewed while this one waited for the lock: its token is ours too.
    if (this.generation !== seen && this.current && !this.expiring(this.current)) {
      return this.current;
    }
    const body = this.refreshTransport === "body" ? { refresh_token: this.refreshToken } : {};
    if (this.refreshTransport === "body" && this.refreshToken === undefined) {
      this.end(false);
      throw new ApiError(401, undefined);
    }
    const { data, error, response } = await this.api.POST("/auth/refresh", { body });
    if (!data) {
      const failure = new ApiError(response.status, error, response.headers);
      // A refused token is final (the server cleared the cookie); a 429 or a 503 is not.
      if (response.status === 401) this.end(true);
      throw failure;
    }
    return this.adopt(data);
  }

  private async locked<T>(work: () => Promise<T>): Promise<T> {
    const locks = (globalThis.navigator as { locks?: LockManager } | undefined)?.locks;
    if (this.refreshTransport === "cookie" && locks) {
      return locks.request(this.lockName, work) as Promise<T>;
    }
    return work();
  }

  private adopt(tokens: TokenResponse): SessionState {
    if (tokens.refresh_token !== undefined) this.refreshToken = tokens.refresh_token;
    const state: SessionState = {
      accessToken: tokens.access_token,
      expiresAt: Date.now() + tokens.expires_in * 1000,
      sessionId: tokens.session_id,
      user: tokens.user,
    };
    this.set(state);
    this.channel?.postMessage({ kind: "renewed", state } satisfies Broadcast);
    return state;
  }

  private heard(message: Broadcast): void {
    if (message.kind === "renewed") this.set(message.state);
    else this.end(false);
  }

  private set(state: SessionState | null): void {
    this.current = state;
    this.generation += 1;
    this.onChange?.(state);
  }

  private end(tell: boolean): void {
    this.refreshToken = undefined;
    if (this.current === null) return;
    this.set(null);
    if (tell) this.channel?.postMessage({ kind: "ended" } satisfies Broadcast);
  }

  private expiring(state: SessionState): boolean {
    return Date.now() >= state.expiresAt - this.margin;
  }

  /** Every request of `api` goes through here. */
  private async send(request: Request): Promise<Response> {
    const base = new URL(this.baseUrl).pathname.replace(/\/$/, "");
    const path = new URL(request.url).pathname.slice(base.length);
    const exchange = EXCHANGES.includes(path);
    // The cookie goes only where it is needed (login sets it, refresh reads it, logout
    // clears it); other calls stay plain CORS requests without credentials.
    const credentials: RequestCredentials =
      exchange && this.refreshTransport === "cookie" ? "include" : "same-origin";
    if (path === "/auth/login" || path === "/auth/refresh") {
      return this.fetcher(new Request(request, { credentials }));
    }
    if (this.current && this.expiring(this.current)) {
      await this.refresh().catch(() => undefined);
    }
    const retry = request.clone();
    const token = this.current?.accessToken;
    const response = await this.fetcher(authorised(request, token, credentials));
    if (token === undefined || !(await invalidToken(response))) return response;
    // Once: renew (or join the renewal in flight) and resend with the new token.
    let renewed: SessionState;
    try {
      renewed =
        this.current && this.current.accessToken !== token ? this.current : await this.refresh();
    } catch {
      return response;
    }
    return this.fetcher(authorised(retry, renewed.accessToken, credentials));
  }
}

function authorised(request: Request, token: string | undefined, credentials: RequestCredentials) {
  const headers = new Headers(request.headers);
  if (token !== undefined) headers.set("authorization", `Bearer ${token}`);
  return new Request(request, { headers, credentials });
}

/** A 401 `invalid_token`, as `WWW-Authenticate` says (the body stays unread for the caller). */
async function invalidToken(response: Response): Promise<boolean> {
  if (response.status !== 401) return false;
  const challenge = response.headers.get("www-authenticate");
  if (challenge !== null) return /error="invalid_token"/.test(challenge);
  const error = await decodeError(response.clone());
  return error.code === "invalid_token";
}
