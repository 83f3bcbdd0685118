// What the account pages (/account/reset-password, /account/verify-email, the two
// email-change pages and /account/passkeys) share: calling the API, taking the token out
// of the address, switching views, and a form's messages.
// Part of JobPath API; no framework, nothing from another origin (the pages' CSP allows
// none).
"use strict";

window.jobpathAccount = (() => {
  // The API is relative to the page (…/account/<page> → …/auth/…), so the pages also work
  // behind a proxy that mounts the server under a path prefix.
  const apiUrl = (path) => new URL(`../${path}`, document.baseURI);

  // POSTs `body` as JSON; resolves to { status, body, message }, where `message` is the
  // server's `detail.message` for an error (status 0: the server could not be reached).
  // `method` and `token` (an access token, sent as `Authorization: Bearer`) are for the
  // signed-in calls of /account/passkeys. Without a body (a GET, a sign-out, the start of
  // a passkey sign-in) none is sent, and no Content-Type claims one.
  async function call(path, body, { method = "POST", token = null } = {}) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(apiUrl(path), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      return { status: 0, body: null, message: "Could not reach the server. Check your connection and try again." };
    }
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      // Not JSON (a proxy's error page, say): the status alone must do.
    }
    const message = parsed?.detail?.message ?? `The server answered ${response.status}. Try again in a moment.`;
    return { status: response.status, body: parsed, message };
  }

  // The `token` of the address's fragment (`#token=…`), or null. The fragment is removed at
  // once, so the secret does not stay in the address bar, the history entry, or a
  // bookmark; the page keeps it in memory only.
  function takeToken() {
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    if (location.hash) {
      history.replaceState(null, "", location.pathname + location.search);
    }
    return token || null;
  }

  // Shows the view (an element marked data-view) with this id, hides the others, and moves
  // the focus to it when asked, so a screen reader follows the change.
  function view(id, { focus = false } = {}) {
    for (const element of document.querySelectorAll("[data-view]")) {
      element.hidden = element.id !== id;
    }
    if (focus) {
      document.getElementById(id).focus();
    }
  }

  // Sets a form's error (role=alert) and notice (role=status) texts; either may be empty.
  function say(form, { error = "", notice = "" } = {}) {
    const errorElement = form.querySelector(".error");
    const noticeElement = form.querySelector(".notice");
    if (errorElement) errorElement.textContent = error;
    if (noticeElement) noticeElement.textContent = notice;
  }

  // While a request is in flight its button is disabled: a second click must not send the
  // request again (a single-use secret would make the second one fail).
  function busy(form, on) {
    for (const button of form.querySelectorAll("button")) {
      button.disabled = on;
    }
  }

  // Whether the form's two new-password fields agree; if not, says so.
  function passwordsMatch(form) {
    if (form.elements.new_password.value === form.elements.confirm.value) {
      return true;
    }
    say(form, { error: "The two passwords do not match." });
    form.elements.confirm.focus();
    return false;
  }

  // Runs `submit(form)` for each submission of the form with this id, instead of the
  // browser's own submission (which the pages' CSP forbids anyway: form-action 'none').
  function onSubmit(id, submit) {
    const form = document.getElementById(id);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      say(form);
      busy(form, true);
      try {
        await submit(form);
      } finally {
        busy(form, false);
      }
    });
  }

  return { call, takeToken, view, say, passwordsMatch, onSubmit };
})();
