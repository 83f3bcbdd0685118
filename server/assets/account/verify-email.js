// The page a verification email links to (APP_BASE_URL/verify-email#token=…). With a token
// it waits for a click on "Confirm my email address" before it sends anything: some mail
// scanners open links and run their scripts, and an automatic confirmation would let them
// confirm an address nobody read. Without a token it takes the emailed code, and can send
// the email again. Part of JobPath API.
"use strict";

(() => {
  const { call, takeToken, view, say, onSubmit } = window.jobpathAccount;
  const token = takeToken();
  view(token ? "with-link" : "without-link");

  const linkSection = document.getElementById("with-link");
  const confirm = document.getElementById("confirm");
  confirm.addEventListener("click", async () => {
    say(linkSection);
    confirm.disabled = true;
    const result = await call("auth/email/verify", { token });
    confirm.disabled = false;
    if (result.status === 200) {
      view("done", { focus: true });
    } else if (result.status === 403) {
      view("link-invalid");
    } else {
      say(linkSection, { error: result.message });
    }
  });

  onSubmit("code-form", async (form) => {
    const result = await call("auth/email/verify", {
      email: form.elements.email.value,
      code: form.elements.code.value,
    });
    if (result.status === 200) {
      view("done", { focus: true });
    } else {
      say(form, { error: result.message });
    }
  });

  onSubmit("resend-form", async (form) => {
    const result = await call("auth/email/verify/resend", { email: form.elements.email.value });
    if (result.status === 202) {
      // The same words whatever the address, as the server's answer.
      say(form, {
        notice: "If this address still needs confirming, an email with a link and a code is on its way.",
      });
    } else {
      say(form, { error: result.message });
    }
  });
})();
