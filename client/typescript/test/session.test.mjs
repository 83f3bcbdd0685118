// The session helper against the real server: a single refresh in flight however many
// calls need one (before expiry, and after a 401 `invalid_token`), a refused refresh
// ending the session, and the decoding of errors into the typed codes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, ERROR_CODES, Session, createApiClient, isErrorCode, unwrap } from "../dist/index.js";
import { API, PASSWORD, countingFetch, uniqueEmail } from "./env.mjs";

async function account() {
  const email = uniqueEmail();
  unwrap(await createApiClient(API).POST("/auth/signup", { body: { email, password: PASSWORD } }));
  return email;
}

test("calls that find the access token about to expire share one refresh", async () => {
  const email = await account();
  const { fetcher, count } = countingFetch();
  // A margin longer than the token's life: every call finds it expiring.
  const session = new Session({ baseUrl: API, fetch: fetcher, refreshMargin: 24 * 3600 });
  await session.login(email, PASSWORD);
  const before = session.state.accessToken;
  const answers = await Promise.all(Array.from({ length: 8 }, () => session.api.GET("/auth/me")));
  assert.ok(answers.every((a) => a.response.status === 200));
  assert.equal(count("/auth/refresh"), 1, "one refresh for eight calls");
  assert.notEqual(session.state.accessToken, before);
});

test("calls answered 401 invalid_token share one refresh and are each resent once", async () => {
  const email = await account();
  let stale;
  // The first token stops working (as if revoked by clock skew): requests carrying it are
  // sent with a broken signature, which the server answers 401 invalid_token.
  const { fetcher, count } = countingFetch((request) => {
    const auth = request.headers.get("authorization");
    if (stale && auth === `Bearer ${stale}`) {
      const headers = new Headers(request.headers);
      headers.set("authorization", `Bearer ${stale}x`);
      return new Request(request, { headers });
    }
    return request;
  });
  const session = new Session({ baseUrl: API, fetch: fetcher });
  await session.login(email, PASSWORD);
  stale = session.state.accessToken;
  const answers = await Promise.all(Array.from({ length: 6 }, () => session.api.GET("/auth/sessions")));
  assert.deepEqual(answers.map((a) => a.response.status), [200, 200, 200, 200, 200, 200]);
  assert.equal(count("/auth/refresh"), 1, "one refresh for six 401s");
  assert.equal(count("/auth/sessions"), 12, "each call sent twice, no more");
  // A 401 that is not about the token (a wrong password) is not retried.
  const wrong = await session.api.POST("/auth/me/delete", { body: { password: "not the password" } });
  assert.equal(wrong.response.status, 401);
  assert.equal(count("/auth/me/delete"), 1);
  assert.equal(count("/auth/refresh"), 1);
});

test("a refresh the server refuses ends the session and the call gets its 401", async () => {
  const email = await account();
  const { fetcher, count } = countingFetch();
  const session = new Session({ baseUrl: API, fetch: fetcher });
  const login = await session.login(email, PASSWORD);
  const changes = [];
  const watched = new Session({ baseUrl: API, fetch: fetcher, onChange: (s) => changes.push(s) });
  await watched.login(email, PASSWORD);
  // Ending every session from the first one kills the second one's refresh token too.
  await session.logout("global");
  assert.equal(session.state, null);
  const answer = await watched.api.GET("/auth/me");
  assert.equal(answer.response.status, 401);
  assert.equal(new ApiError(answer.response.status, answer.error).code, "invalid_token");
  assert.equal(count("/auth/refresh"), 1);
  assert.equal(watched.state, null, "the session ended here too");
  assert.equal(changes.at(-1), null);
  await assert.rejects(watched.refresh(), (e) => e instanceof ApiError && e.status === 401);
  assert.ok(login.refresh_token);
});

test("errors decode into the documented codes, with field, request id and Retry-After", async () => {
  const api = createApiClient(API);
  const wrong = await api.POST("/auth/login", { body: { email: uniqueEmail(), password: "x" } });
  const e = new ApiError(wrong.response.status, wrong.error, wrong.response.headers);
  assert.equal(e.status, 401);
  assert.equal(e.code, "invalid_credentials");
  assert.match(e.requestId, /^[0-9a-f]{32}$/);
  assert.equal(e.requestId, wrong.response.headers.get("x-request-id"));

  const short = await api.POST("/auth/signup", { body: { email: uniqueEmail(), password: "short" } });
  assert.throws(() => unwrap(short), (err) => err.code === "validation_error" && err.field === "password");

  const session = new Session({ baseUrl: API });
  await assert.rejects(session.login(uniqueEmail(), "nope"), (err) => err.code === "invalid_credentials");
  // Cookie mode from Node sends no Origin: the server refuses it as a possible forgery.
  const cookie = new Session({ baseUrl: API, refreshTransport: "cookie" });
  await assert.rejects(cookie.login(await account(), PASSWORD), (err) => err.code === "origin_not_allowed" && err.status === 403);

  // What is not the contract's error body: a proxy's page, and a code from a newer server.
  const html = new ApiError(502, "<html>Bad Gateway</html>", new Headers({ "retry-after": "7" }));
  assert.equal(html.code, "unexpected_response");
  assert.equal(html.retryAfter, 7);
  const newer = new ApiError(418, { error: "brand_new", detail: { message: "m", request_id: "r" }, status_code: 418 });
  assert.equal(newer.code, "unexpected_response");
  assert.equal(newer.message, "m");

  // The union is the spec's list, as the server serves it.
  const spec = unwrap(await api.GET("/openapi.json"));
  assert.deepEqual([...ERROR_CODES].sort(), [...spec.components.schemas.ErrorCode.enum].sort());
  assert.ok(isErrorCode("rate_limited") && !isErrorCode("brand_new"));
});
