// Every operation of openapi.yaml, once, through the generated client (openapi-fetch over
// the openapi-typescript types): the list is checked against the server's own
// /openapi.json, so an operation added to the spec fails here until it is called. Each
// call's answer is the documented success, or for the emailed-secret operations (whose
// secrets only the mailbox has) the documented refusal, decoded as an ApiError.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";

import { ApiError, Session, createApiClient, unwrap } from "../dist/index.js";
import { ADMIN, API, PASSWORD, uniqueEmail } from "./env.mjs";

const FAKE_SECRET = "A".repeat(43);

/** The current 6-digit TOTP code of a base32 secret (SHA-1, 30 s), as an app shows it. */
function totp(secret, at = Date.now()) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secret.replace(/=+$/, "").toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 30_000)));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

async function refused(promise, status, code) {
  const result = await promise;
  assert.equal(result.data, undefined, `expected ${status} ${code}, got data`);
  const error = new ApiError(result.response.status, result.error, result.response.headers);
  assert.equal(error.status, status);
  assert.equal(error.code, code);
  assert.ok(error.requestId, "the request id is decoded");
  return error;
}

test("every operation of the contract answers through the generated client", async () => {
  const anonymous = createApiClient(API);
  const called = new Set();
  const call = (operationId) => called.add(operationId);

  // Anonymous operations.
  const email = uniqueEmail();
  const account = unwrap(await anonymous.POST("/auth/signup", { body: { email, password: PASSWORD } }));
  call("signup");
  assert.equal(account.email, email);
  assert.equal(unwrap(await anonymous.GET("/health/live")).status, "ok");
  call("liveness");
  assert.equal(unwrap(await anonymous.GET("/health/ready")).status, "ready");
  call("readiness");
  const spec = unwrap(await anonymous.GET("/openapi.json"));
  call("get_openapi_json");
  const yaml = await anonymous.GET("/openapi.yaml", { parseAs: "text" });
  assert.match(unwrap(yaml), /^openapi: 3\.0\.3/m);
  call("get_openapi_yaml");
  // An HS256 server (the test server's configuration) publishes no key.
  assert.deepEqual(unwrap(await anonymous.GET("/.well-known/jwks.json")), { keys: [] });
  call("get_jwks");
  // The test server's issuer is the default name, not a URL: nothing to discover.
  await refused(anonymous.GET("/.well-known/openid-configuration"), 404, "not_found");
  call("get_openid_configuration");
  assert.equal((await anonymous.POST("/auth/password/forgot", { body: { email } })).response.status, 202);
  call("forgot_password");
  await refused(anonymous.POST("/auth/password/reset/check", { body: { token: FAKE_SECRET } }), 403, "invalid_secret");
  call("check_password_reset");
  await refused(
    anonymous.POST("/auth/password/reset", { body: { token: FAKE_SECRET, new_password: "a brand new passphrase" } }),
    403,
    "invalid_secret",
  );
  call("reset_password");
  await refused(anonymous.POST("/auth/email/verify", { body: { token: FAKE_SECRET } }), 403, "invalid_secret");
  call("verify_email");
  await refused(anonymous.POST("/auth/email/change/confirm", { body: { token: FAKE_SECRET } }), 403, "invalid_secret");
  call("confirm_email_change");
  await refused(anonymous.POST("/auth/email/change/cancel", { body: { token: FAKE_SECRET } }), 403, "invalid_secret");
  call("cancel_email_change");

  // The caller's own operations, through a session.
  const session = new Session({ baseUrl: API });
  const login = await session.login(email, PASSWORD);
  call("login");
  assert.equal(typeof login.refresh_token, "string", "body mode: the token is in the body");
  const me = unwrap(await session.api.GET("/auth/me"));
  call("get_me");
  assert.equal(me.id, account.id);
  const renewed = await session.refresh();
  call("refresh");
  assert.notEqual(renewed.accessToken, login.access_token);
  assert.equal(
    (await session.api.POST("/auth/email/verify/resend", { body: {} })).response.status,
    202,
  );
  call("resend_verification");
  assert.equal(
    (await session.api.POST("/auth/email/change", {
      body: { new_email: uniqueEmail("new"), password: PASSWORD },
    })).response.status,
    202,
  );
  call("request_email_change");
  const other = new Session({ baseUrl: API });
  await other.login(email, PASSWORD);
  const sessions = unwrap(await session.api.GET("/auth/sessions", { params: { query: { limit: 10 } } }));
  call("list_sessions");
  assert.equal(sessions.sessions.length, 2);
  const theirs = sessions.sessions.find((s) => !s.current);
  const revoked = await session.api.DELETE("/auth/sessions/{session_id}", {
    params: { path: { session_id: theirs.id } },
  });
  assert.equal(revoked.response.status, 204);
  call("revoke_session");
  const events = unwrap(await session.api.GET("/auth/events"));
  call("list_events");
  assert.ok(events.events.some((e) => e.kind === "login_succeeded"));
  unwrap(await session.api.POST("/auth/password", {
    body: { current_password: PASSWORD, new_password: "another fine passphrase" },
  }));
  call("change_password");
  await session.logout();
  call("logout");
  assert.equal(session.state, null);

  // The admin API, on a second account.
  const admin = new Session({ baseUrl: API });
  await admin.login(ADMIN.email, ADMIN.password);
  const target = uniqueEmail("target");
  const targetId = unwrap(await anonymous.POST("/auth/signup", { body: { email: target, password: PASSWORD } })).id;
  const user = { params: { path: { user_id: targetId } } };
  const found = unwrap(await admin.api.GET("/admin/users", { params: { query: { q: "target-" } } }));
  call("admin_list_users");
  assert.ok(found.users.some((u) => u.id === targetId));
  assert.equal(unwrap(await admin.api.GET("/admin/users/{user_id}", user)).email, target);
  call("admin_get_user");
  assert.equal(
    (await admin.api.POST("/admin/users/{user_id}/password-reset", user)).response.status,
    202,
  );
  call("admin_send_password_reset");
  const targetSession = new Session({ baseUrl: API });
  const targetLogin = await targetSession.login(target, PASSWORD);
  unwrap(await admin.api.GET("/admin/users/{user_id}/sessions", user));
  call("admin_list_sessions");
  const one = await admin.api.DELETE("/admin/users/{user_id}/sessions/{session_id}", {
    params: { path: { user_id: targetId, session_id: targetLogin.session_id } },
  });
  assert.equal(one.response.status, 204);
  call("admin_end_session");
  unwrap(await admin.api.DELETE("/admin/users/{user_id}/sessions", user));
  call("admin_end_sessions");
  unwrap(await admin.api.PUT("/admin/users/{user_id}/roles", { ...user, body: { roles: ["support"] } }));
  call("admin_set_roles");
  assert.equal(
    unwrap(await admin.api.POST("/admin/users/{user_id}/deactivate", { ...user, body: { reason: "a test" } })).is_active,
    false,
  );
  call("admin_deactivate_user");
  assert.equal(unwrap(await admin.api.POST("/admin/users/{user_id}/reactivate", user)).is_active, true);
  call("admin_reactivate_user");
  unwrap(await admin.api.GET("/admin/users/{user_id}/events", user));
  call("admin_list_user_events");
  unwrap(await admin.api.GET("/admin/events", { params: { query: { limit: 5 } } }));
  call("admin_list_events");
  assert.equal((await admin.api.DELETE("/admin/users/{user_id}", user)).response.status, 204);
  call("admin_delete_user");

  // Deleting one's own account last: it ends the session.
  const leaving = new Session({ baseUrl: API });
  await leaving.login(email, "another fine passphrase");
  unwrap(await leaving.api.POST("/auth/me/delete", { body: { password: "another fine passphrase" } }));
  call("delete_me");

  // Two-factor authentication, on an account of its own (a factor changes what its
  // sessions may do). The code is computed here as an authenticator app does (RFC 6238).
  const mfaEmail = uniqueEmail("mfa");
  const mfaId = unwrap(await anonymous.POST("/auth/signup", { body: { email: mfaEmail, password: PASSWORD } })).id;
  const mfa = new Session({ baseUrl: API });
  await mfa.login(mfaEmail, PASSWORD);
  const enrolment = unwrap(await mfa.api.POST("/auth/mfa/totp", { body: { password: PASSWORD, label: "Phone" } }));
  call("enrol_totp");
  const confirmed = unwrap(await mfa.api.POST("/auth/mfa/totp/{factor_id}/confirm", {
    params: { path: { factor_id: enrolment.factor_id } },
    body: { code: totp(enrolment.secret) },
  }));
  call("confirm_totp");
  assert.equal(confirmed.recovery_codes.length, 10);
  const factors = unwrap(await mfa.api.GET("/auth/mfa/factors"));
  call("list_mfa_factors");
  assert.ok(factors.factors.some((f) => f.id === enrolment.factor_id));
  // A new login owes the second factor; a recovery code pays it (the TOTP code just used
  // for the confirmation cannot be used twice).
  const owing = new Session({ baseUrl: API });
  assert.equal((await owing.login(mfaEmail, PASSWORD)).mfa_required, true);
  const stepped = unwrap(await owing.api.POST("/auth/mfa/verify", { body: { recovery_code: confirmed.recovery_codes[0] } }));
  call("verify_mfa");
  const aal2 = createApiClient(API, {
    fetch: (request) => {
      const headers = new Headers(request.headers);
      headers.set("authorization", `Bearer ${stepped.access_token}`);
      return fetch(new Request(request, { headers }));
    },
  });
  unwrap(await aal2.GET("/auth/mfa/recovery-codes"));
  call("get_recovery_codes_status");
  const regenerated = unwrap(await aal2.POST("/auth/mfa/recovery-codes")).recovery_codes;
  call("regenerate_recovery_codes");
  assert.equal(regenerated.length, 10);
  unwrap(await aal2.DELETE("/auth/mfa/factors/{factor_id}", {
    params: { path: { factor_id: enrolment.factor_id }, header: { "X-MFA-Code": regenerated[0] } },
  }));
  call("remove_mfa_factor");
  const reset = await admin.api.DELETE("/admin/users/{user_id}/mfa", { params: { path: { user_id: mfaId } } });
  assert.equal(reset.response.status, 200);
  call("admin_reset_mfa");

  // Passkeys, on an account of its own. Node has no authenticator: the ceremonies begin,
  // and their ends are refused as the contract says (the whole ceremony is proven with a
  // software authenticator in tests/api/passkeys.rs and in Chromium in passkey_page.rs).
  const pkEmail = uniqueEmail("passkeys");
  unwrap(await anonymous.POST("/auth/signup", { body: { email: pkEmail, password: PASSWORD } }));
  const pk = new Session({ baseUrl: API });
  await pk.login(pkEmail, PASSWORD);
  const registration = unwrap(await pk.api.POST("/auth/passkeys/registration/options", { body: {} }));
  call("start_passkey_registration");
  assert.equal(registration.options.publicKey.rp.id, "localhost");
  await refused(
    pk.api.POST("/auth/passkeys/registration/verify", {
      body: { ceremony_id: registration.ceremony_id, name: "Laptop", credential: { id: "x" } },
    }),
    422,
    "validation_error",
  );
  call("finish_passkey_registration");
  const signIn = unwrap(await anonymous.POST("/auth/passkeys/authentication/options"));
  call("start_passkey_authentication");
  const forged = {
    id: "AAAA",
    rawId: "AAAA",
    type: "public-key",
    response: { authenticatorData: "AAAA", clientDataJSON: "AAAA", signature: "AAAA" },
  };
  await refused(
    anonymous.POST("/auth/passkeys/authentication/verify", {
      body: { ceremony_id: signIn.ceremony_id, credential: forged },
    }),
    401,
    "invalid_credentials",
  );
  call("finish_passkey_authentication");
  assert.deepEqual(unwrap(await pk.api.GET("/auth/passkeys")).passkeys, []);
  call("list_passkeys");
  const nobody = { params: { path: { passkey_id: "00000000-0000-4000-8000-000000000000" } } };
  await refused(pk.api.PATCH("/auth/passkeys/{passkey_id}", { ...nobody, body: { name: "x" } }), 404, "not_found");
  call("rename_passkey");
  await refused(pk.api.DELETE("/auth/passkeys/{passkey_id}", nobody), 404, "not_found");
  call("remove_passkey");
  await refused(pk.api.POST("/auth/mfa/passkey"), 409, "conflict");
  call("start_mfa_passkey");

  // API keys, made by the passkeys account's fresh session (a recent login: no password
  // needed), and introspection, called with one of them. The key goes in the
  // Authorization header as an access token does; the introspection body is form-encoded.
  const made = unwrap(await pk.api.POST("/auth/api-keys", {
    body: { name: "node test", scopes: ["account:read", "introspect"], expires_in_days: 7 },
  }));
  call("create_api_key");
  assert.match(made.key, /^jp_pat_[A-Za-z0-9_-]{43}_[0-9A-Za-z]{6}$/);
  const listed = unwrap(await pk.api.GET("/auth/api-keys")).api_keys;
  call("list_api_keys");
  assert.deepEqual(listed.map((k) => k.prefix), [made.prefix]);
  assert.ok(!JSON.stringify(listed).includes(made.key), "the list never shows the key");
  const byKey = createApiClient(API);
  const keyAuth = { headers: { Authorization: `Bearer ${made.key}` } };
  assert.equal(unwrap(await byKey.GET("/auth/me", keyAuth)).email, pkEmail);
  const introspected = unwrap(await byKey.POST("/auth/introspect", {
    ...keyAuth,
    body: { token: made.key },
    bodySerializer: (body) => new URLSearchParams(body).toString(),
    headers: { ...keyAuth.headers, "Content-Type": "application/x-www-form-urlencoded" },
  }));
  call("introspect_token");
  assert.equal(introspected.active, true);
  assert.equal(introspected.token_type, "api_key");
  const keyRevoked = await pk.api.DELETE("/auth/api-keys/{key_id}", { params: { path: { key_id: made.id } } });
  assert.equal(keyRevoked.response.status, 204);
  call("delete_api_key");
  await refused(byKey.GET("/auth/me", keyAuth), 401, "invalid_token");

  const documented = new Set(
    Object.values(spec.paths).flatMap((item) =>
      Object.values(item)
        .filter((op) => typeof op === "object" && op !== null && "operationId" in op)
        .map((op) => op.operationId),
    ),
  );
  assert.deepEqual([...documented].filter((id) => !called.has(id)).sort(), [], "operations never called");
  assert.deepEqual([...called].filter((id) => !documented.has(id)).sort(), [], "calls of no operation");
});
