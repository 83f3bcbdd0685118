// The page the "this wasn't me" link of an email-change notice opens
// (APP_BASE_URL/cancel-email-change#token=…). It waits for a click before it sends
// anything, as the other pages do. Part of JobPath API.
"use strict";

(() => {
  const { call, takeToken, view, say } = window.jobpathAccount;
  const token = takeToken();
  view(token ? "with-link" : "without-link");

  const linkSection = document.getElementById("with-link");
  const cancel = document.getElementById("cancel");
  cancel.addEventListener("click", async () => {
    say(linkSection);
    cancel.disabled = true;
    const result = await call("auth/email/change/cancel", { token });
    cancel.disabled = false;
    if (result.status === 200) {
      view("done", { focus: true });
    } else if (result.status === 403) {
      view("link-invalid");
    } else {
      say(linkSection, { error: result.message });
    }
  });
})();
