// The page an email-change confirmation links to (APP_BASE_URL/confirm-email-change#token=…).
// It waits for a click on "Confirm the new address" before it sends anything: a mail
// scanner that opens the link and runs its script must not change the address. Part of
// JobPath API.
"use strict";

(() => {
  const { call, takeToken, view, say } = window.jobpathAccount;
  const token = takeToken();
  view(token ? "with-link" : "without-link");

  const linkSection = document.getElementById("with-link");
  const confirm = document.getElementById("confirm");
  confirm.addEventListener("click", async () => {
    say(linkSection);
    confirm.disabled = true;
    const result = await call("auth/email/change/confirm", { token });
    confirm.disabled = false;
    if (result.status === 200) {
      document.getElementById("new-email").textContent = result.body.email;
      view("done", { focus: true });
    } else if (result.status === 403) {
      view("link-invalid");
    } else {
      // 409: another account has the address now; the server's words say so.
      say(linkSection, { error: result.message });
    }
  });
})();
