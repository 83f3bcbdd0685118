// Drives Debian's chromium (launched and watched by chromium.mjs) through the account pages
// of a running JobPath API test server (/account/reset-password, /account/verify-email), as
// a person would. Run by tests/api/account_pages.rs, which starts the server, reads the
// emails between steps and checks the accounts afterwards. One step per run:
//
//   node account.mjs <base-url> forgot <email>
//       a made-up link is refused; "Request a new one"; the forgot form asks for an email
//   node account.mjs <base-url> reset <emailed-link> <weak-password> <new-password>
//       the link is checked and leaves the address bar; mismatched and weak passwords are
//       refused on the page; the new one is set
//   node account.mjs <base-url> verify <emailed-link>
//       nothing is sent before the click on "Confirm my email address"; then it is
//   node account.mjs <base-url> codes <email> <verification-code> <reset-code> <new-password>
//       the "I have a code" forms of both pages
//
// It fails (exit 1, reason on stderr) if a page requests anything from another origin, if
// the browser reports an error (a CSP violation, an exception), if the server answers an
// error the step does not expect, or if a page does not show what it should.
import { finish, launch, watch } from "./chromium.mjs";

const [base, step, ...args] = process.argv.slice(2);
const STEPS = { forgot: 1, reset: 3, verify: 1, codes: 4 };
if (!base || STEPS[step] !== args.length) {
  console.error("usage: node account.mjs <base-url> forgot|reset|verify|codes <args...> (see the header)");
  process.exit(2);
}

// Error answers a step provokes on purpose, as "<status> <path>". Chromium also logs each
// as a console error ("Failed to load resource: … status of 403"), which is let through for
// these only.
const expected = new Set();
const seen = new Set();
const key = (status, url) => `${status} ${new URL(url).pathname}`;
// Every API call the pages make, in order, as "<method> <path>".
const calls = [];

const browser = await launch();
const problems = [];
try {
  const page = await browser.newPage();
  watch(page, base, problems, {
    errorAnswer: (response) => {
      const k = key(response.status(), response.url());
      seen.add(k);
      return expected.has(k);
    },
    consoleError: (message) => {
      const status = /^Failed to load resource: the server responded with a status of (\d+)/.exec(message.text());
      return status !== null && expected.has(key(status[1], message.location().url));
    },
  });
  page.on("request", (request) => {
    const path = new URL(request.url()).pathname;
    if (path.startsWith("/auth/")) {
      calls.push(`${request.method()} ${path}`);
    }
  });
  await { forgot, reset, verify, codes }[step](page, ...args);
  for (const k of expected) {
    if (!seen.has(k)) {
      problems.push(`expected the answer ${k}, which never came`);
    }
  }
  if (process.env.JOBPATH_SCREENSHOT_DIR) {
    await page.screenshot({ path: `${process.env.JOBPATH_SCREENSHOT_DIR}/account-${step}.png`, fullPage: true });
  }
} catch (error) {
  problems.push(error.stack ?? String(error));
} finally {
  await browser.close();
}
finish(problems);

// Waits until `locator` shows `text` (a substring).
async function shows(locator, text) {
  await locator.filter({ hasText: text }).waitFor({ state: "visible" });
}

// The token must have left the address bar once the page has read it.
function fragmentGone(page) {
  if (new URL(page.url()).hash !== "") {
    problems.push(`the fragment is still in the address: ${page.url()}`);
  }
}

async function forgot(page, email) {
  expected.add("403 /auth/password/reset/check");
  await page.goto(`${base}/account/reset-password#token=not-a-token-anyone-was-sent`);
  await shows(page.locator("#link-invalid"), "This link is invalid or has expired");
  fragmentGone(page);
  await page.getByRole("link", { name: "Request a new one" }).click();
  const form = page.locator("#forgot-form");
  await form.getByLabel("Email address").fill(email);
  await form.getByRole("button", { name: "Send me a reset email" }).click();
  await shows(form.getByRole("status"), "If an account exists for this address");
  console.log("forgot: a made-up link was refused; a reset email was asked for");
}

async function reset(page, link, weak, fresh) {
  expected.add("422 /auth/password/reset");
  await page.goto(link);
  await shows(page.locator("#valid-until"), "This link is valid until");
  fragmentGone(page);
  const form = page.locator("#link-form");
  const password = form.getByLabel("New password", { exact: true });
  const confirm = form.getByLabel("New password again");

  await password.fill(fresh);
  await confirm.fill(`${fresh}!`);
  await form.getByRole("button", { name: "Set new password" }).click();
  await shows(form.getByRole("alert"), "The two passwords do not match");
  if (calls.includes("POST /auth/password/reset")) {
    problems.push("mismatched passwords were sent to the server");
  }

  await password.fill(weak);
  await confirm.fill(weak);
  await form.getByRole("button", { name: "Set new password" }).click();
  // The server's own words (detail.message), and the form stays for a better password.
  await shows(form.getByRole("alert"), "one of the most commonly used passwords");

  await password.fill(fresh);
  await confirm.fill(fresh);
  await form.getByRole("button", { name: "Set new password" }).click();
  await shows(page.locator("#done"), "Log in with your new password");
  console.log("reset: the weak password was refused and the new one set");
}

async function verify(page, link) {
  await page.goto(link);
  const button = page.getByRole("button", { name: "Confirm my email address" });
  await button.waitFor({ state: "visible" });
  fragmentGone(page);
  // A mail scanner that runs the page's script must not confirm the address.
  await page.waitForTimeout(500);
  if (calls.length > 0) {
    problems.push(`calls before the click: ${calls.join(", ")}`);
  }
  await button.click();
  await shows(page.locator("#done"), "Your email address is confirmed");
  if (calls.join() !== "POST /auth/email/verify") {
    problems.push(`one verify call expected, made: ${calls.join(", ")}`);
  }
  console.log("verify: confirmed by the click, and not before");
}

async function codes(page, email, verificationCode, resetCode, fresh) {
  await page.goto(`${base}/account/verify-email`);
  let form = page.locator("#code-form");
  await form.getByLabel("Email address").fill(email);
  await form.getByLabel("Code").fill(verificationCode);
  await form.getByRole("button", { name: "Confirm my email address" }).click();
  await shows(page.locator("#done"), "Your email address is confirmed");

  await page.goto(`${base}/account/reset-password`);
  form = page.locator("#code-form");
  await form.getByLabel("Email address").fill(email);
  await form.getByLabel("Code").fill(resetCode);
  await form.getByLabel("New password", { exact: true }).fill(fresh);
  await form.getByLabel("New password again").fill(fresh);
  await form.getByRole("button", { name: "Set new password" }).click();
  await shows(page.locator("#done"), "Log in with your new password");
  console.log("codes: the address was confirmed and the password reset by code");
}
