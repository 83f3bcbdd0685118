// /account/passkeys: sign in (password or passkey), add a passkey, list them, sign out.
// The reference for a front end of one's own: the WebAuthn calls are the browser's own
// (navigator.credentials), and the binary fields are converted by hand, both ways, rather
// than with PublicKeyCredential.parseCreationOptionsFromJSON() and toJSON(), which not
// every browser in use has yet. Part of JobPath API.
"use strict";

(() => {
  const { call, view, say, onSubmit } = window.jobpathAccount;

  // The access token lives in this variable only: not in storage, where any script of the
  // origin could read it long after the page is closed. Reloading signs the page out.
  let accessToken = null;

  const supported = typeof window.PublicKeyCredential === "function";
  const UNSUPPORTED = "This browser does not support passkeys.";
  document.getElementById("unsupported").hidden = supported;
  view("signed-out");

  // base64url without padding (what the server sends and expects) ⇄ ArrayBuffer.
  function fromB64url(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(b64.padEnd(b64.length + ((4 - (b64.length % 4)) % 4), "="));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
  }
  function toB64url(buffer) {
    const binary = String.fromCharCode(...new Uint8Array(buffer));
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  const withBinaryIds = (list) => list?.map((c) => ({ ...c, id: fromB64url(c.id) }));

  // Runs a WebAuthn call; null (and the reason said on `form`) when the browser or the
  // person declined: cancelled, timed out, or (when adding) a passkey this account has
  // already on this authenticator, which `excludeCredentials` names.
  async function ceremony(form, run) {
    try {
      return await run();
    } catch (error) {
      say(form, { error: `No passkey was used (${error.name}): ${error.message}` });
      return null;
    }
  }

  // Signed in with `token`: who it is (GET /auth/me) and their passkeys.
  async function signedIn(form, token) {
    const me = await call("auth/me", undefined, { method: "GET", token });
    if (me.status !== 200) {
      say(form, { error: me.message });
      return;
    }
    accessToken = token;
    document.getElementById("email").textContent = me.body.email;
    view("signed-in", { focus: true });
    await listPasskeys();
  }

  async function listPasskeys() {
    const form = document.getElementById("add-form");
    const result = await call("auth/passkeys", undefined, { method: "GET", token: accessToken });
    if (result.status !== 200) {
      say(form, { error: result.message });
      return;
    }
    // textContent, never innerHTML: a passkey's name is whatever its owner typed.
    const items = result.body.passkeys.map((passkey) => {
      const item = document.createElement("li");
      const added = new Date(passkey.created_at).toLocaleDateString(undefined, { dateStyle: "medium" });
      item.textContent = `${passkey.name} (added ${added})`;
      return item;
    });
    document.getElementById("passkeys").replaceChildren(...items);
    document.getElementById("no-passkeys").hidden = items.length > 0;
  }

  onSubmit("password-form", async (form) => {
    const result = await call("auth/login", {
      email: form.elements.email.value,
      password: form.elements.password.value,
    });
    if (result.status !== 200) {
      say(form, { error: result.message });
      return;
    }
    form.reset();
    await signedIn(form, result.body.access_token);
  });

  onSubmit("passkey-form", async (form) => {
    if (!supported) return say(form, { error: UNSUPPORTED });
    // A discoverable sign-in: the options name no credential and no account, so the
    // browser offers every passkey it holds for this site.
    const start = await call("auth/passkeys/authentication/options");
    if (start.status !== 200) return say(form, { error: start.message });
    const publicKey = {
      ...start.body.options.publicKey,
      challenge: fromB64url(start.body.options.publicKey.challenge),
      allowCredentials: withBinaryIds(start.body.options.publicKey.allowCredentials),
    };
    const credential = await ceremony(form, () => navigator.credentials.get({ publicKey }));
    if (!credential) return;
    const { response } = credential;
    const result = await call("auth/passkeys/authentication/verify", {
      ceremony_id: start.body.ceremony_id,
      credential: {
        id: credential.id,
        rawId: toB64url(credential.rawId),
        type: credential.type,
        response: {
          authenticatorData: toB64url(response.authenticatorData),
          clientDataJSON: toB64url(response.clientDataJSON),
          signature: toB64url(response.signature),
          // Left out (undefined) when the authenticator gives none.
          userHandle: response.userHandle ? toB64url(response.userHandle) : undefined,
        },
        clientExtensionResults: credential.getClientExtensionResults(),
      },
    });
    if (result.status !== 200) return say(form, { error: result.message });
    await signedIn(form, result.body.access_token);
  });

  onSubmit("add-form", async (form) => {
    if (!supported) return say(form, { error: UNSUPPORTED });
    // `{}`: no password, so the server asks for a recent sign-in of this session instead
    // (403 reauthentication_required past REAUTH_WINDOW_MINUTES, which the message says).
    const start = await call("auth/passkeys/registration/options", {}, { token: accessToken });
    if (start.status !== 200) return say(form, { error: start.message });
    const options = start.body.options.publicKey;
    const publicKey = {
      ...options,
      challenge: fromB64url(options.challenge),
      user: { ...options.user, id: fromB64url(options.user.id) },
      excludeCredentials: withBinaryIds(options.excludeCredentials),
    };
    const credential = await ceremony(form, () => navigator.credentials.create({ publicKey }));
    if (!credential) return;
    const { response } = credential;
    const result = await call(
      "auth/passkeys/registration/verify",
      {
        ceremony_id: start.body.ceremony_id,
        name: form.elements.name.value,
        credential: {
          id: credential.id,
          rawId: toB64url(credential.rawId),
          type: credential.type,
          response: {
            attestationObject: toB64url(response.attestationObject),
            clientDataJSON: toB64url(response.clientDataJSON),
            // Where the browser can reach the authenticator again (an older browser has
            // no getTransports: then none is sent).
            transports: response.getTransports?.(),
          },
          clientExtensionResults: credential.getClientExtensionResults(),
        },
      },
      { token: accessToken },
    );
    if (result.status !== 201) return say(form, { error: result.message });
    say(form, { notice: `Passkey "${result.body.name}" added. It signs you in from now on.` });
    await listPasskeys();
  });

  onSubmit("sign-out-form", async (form) => {
    const result = await call("auth/logout", undefined, { token: accessToken });
    // 401: the session had ended already; signed out either way.
    if (result.status !== 200 && result.status !== 401) return say(form, { error: result.message });
    accessToken = null;
    document.getElementById("passkeys").replaceChildren();
    say(document.getElementById("add-form"));
    view("signed-out");
  });
})();
