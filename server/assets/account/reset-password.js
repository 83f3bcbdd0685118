// The page a password-reset email links to (APP_BASE_URL/reset-password#token=…). With a
// token it checks the link first (without using it), then asks for the new password;
// without one it offers to send a reset email and to reset with the emailed code. Part of
// JobPath API.
"use strict";

(() => {
  const { call, takeToken, view, say, passwordsMatch, onSubmit } = window.jobpathAccount;
  const token = takeToken();

  if (token) {
    withLink(token);
  } else {
    view("without-link");
  }

  async function withLink(token) {
    view("checking");
    const check = await call("auth/password/reset/check", { token });
    if (check.status === 403) {
      view("link-invalid");
      return;
    }
    const validUntil = document.getElementById("valid-until");
    if (check.status === 200) {
      const until = new Date(check.body.expires_at);
      validUntil.textContent = `This link is valid until ${until.toLocaleString(undefined, {
        dateStyle: "medium",
        timeStyle: "short",
      })}.`;
    } else {
      // The check is a courtesy; the reset itself decides. Asking the user to reload
      // would not help: the token is no longer in the address.
      validUntil.textContent = `The link could not be checked just now (${check.message}); you can still try.`;
    }
    view("with-link");
    document.getElementById("link-password").focus();
  }

  onSubmit("link-form", async (form) => {
    if (!passwordsMatch(form)) return;
    const result = await call("auth/password/reset", {
      token,
      new_password: form.elements.new_password.value,
    });
    if (result.status === 200) {
      view("done", { focus: true });
    } else if (result.status === 403) {
      view("link-invalid");
    } else {
      // 422: a refused password, and the link stays usable for a better one.
      say(form, { error: result.message });
    }
  });

  onSubmit("forgot-form", async (form) => {
    const result = await call("auth/password/forgot", { email: form.elements.email.value });
    if (result.status === 202) {
      // The same words whatever the address: the server's answer reveals nothing either.
      say(form, {
        notice:
          "If an account exists for this address, an email with a link and a code is on its way. " +
          "It can take a few minutes; check your spam folder too.",
      });
    } else {
      say(form, { error: result.message });
    }
  });

  onSubmit("code-form", async (form) => {
    if (!passwordsMatch(form)) return;
    const result = await call("auth/password/reset", {
      email: form.elements.email.value,
      code: form.elements.code.value,
      new_password: form.elements.new_password.value,
    });
    if (result.status === 200) {
      view("done", { focus: true });
    } else {
      say(form, { error: result.message });
    }
  });
})();
