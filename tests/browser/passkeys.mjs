// Drives Debian's chromium (launched and watched by chromium.mjs) through /account/passkeys
// of a running JobPath API test server, as a person would, with a virtual authenticator
// (the DevTools protocol's WebAuthn domain: a platform authenticator that holds resident
// keys, verifies its user and needs no touch). Run by tests/api/passkey_page.rs, which
// starts the server, signs the account up and checks the database afterwards:
//
//   node passkeys.mjs <base-url> add-and-sign-in <email> <password>
//       sign in with the password, add a passkey (listed; one resident credential in the
//       authenticator), sign out, sign in with the passkey without typing an email: the
//       page names the account's email (from /auth/me); and, in a browser without
//       WebAuthn, the page says so
//   node passkeys.mjs <base-url> wrong-origin <email> <password>
//       against a server whose WEBAUTHN_RP_ORIGINS is another origin: the registration is
//       refused (422) and the page shows the server's message; no passkey is listed
//
// <base-url> must be http://localhost:<port>: WebAuthn refuses an IP address as the
// relying party. It fails (exit 1, reason on stderr) if the page requests anything from
// another origin, if the browser reports an error (a CSP violation, an exception), if the
// server answers an error the step does not expect, or if the page does not show what it
// should.
import { finish, launch, watch } from "./chromium.mjs";

const [base, step, email, password, ...rest] = process.argv.slice(2);
if (!base || !["add-and-sign-in", "wrong-origin"].includes(step) || !email || !password || rest.length > 0) {
  console.error("usage: node passkeys.mjs <base-url> add-and-sign-in|wrong-origin <email> <password>");
  process.exit(2);
}
if (new URL(base).hostname !== "localhost") {
  console.error(`the base URL must be on localhost (WebAuthn refuses IP addresses): ${base}`);
  process.exit(2);
}

// Error answers a step provokes on purpose, as "<status> <path>". Chromium also logs each
// as a console error ("Failed to load resource: … status of 422"), which is let through for
// these only.
const expected = new Set();
const seen = new Set();
const key = (status, url) => `${status} ${new URL(url).pathname}`;
// Every API call the page makes, in order, as "<method> <path>".
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
  recordCalls(page);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  const authenticator = { cdp, authenticatorId };

  await page.goto(`${base}/account/passkeys`);
  if (await page.locator("#unsupported").isVisible()) {
    problems.push("the page says this chromium does not support passkeys");
  }
  await signInWithPassword(page);
  await { "add-and-sign-in": addAndSignIn, "wrong-origin": wrongOrigin }[step](page, authenticator);
  for (const k of expected) {
    if (!seen.has(k)) {
      problems.push(`expected the answer ${k}, which never came`);
    }
  }
  if (process.env.JOBPATH_SCREENSHOT_DIR) {
    await page.screenshot({ path: `${process.env.JOBPATH_SCREENSHOT_DIR}/passkeys-${step}.png`, fullPage: true });
  }
} catch (error) {
  problems.push(error.stack ?? String(error));
} finally {
  await browser.close();
}
finish(problems);

// Records the API calls `page` makes in `calls`.
function recordCalls(page) {
  page.on("request", (request) => {
    const path = new URL(request.url()).pathname;
    if (path.startsWith("/auth/")) {
      calls.push(`${request.method()} ${path}`);
    }
  });
}

// Waits until `locator` shows `text` (a substring).
async function shows(locator, text) {
  await locator.filter({ hasText: text }).waitFor({ state: "visible" });
}

// Whether the calls made since `from` are exactly `want`, in order; if not, says so.
function callsSince(from, want, what) {
  const made = calls.slice(from);
  if (made.join() !== want.join()) {
    problems.push(`${what}: expected the calls ${want.join(", ")}; made ${made.join(", ")}`);
  }
}

async function signInWithPassword(page) {
  const from = calls.length;
  const form = page.locator("#password-form");
  await form.getByLabel("Email address").fill(email);
  await form.getByLabel("Password").fill(password);
  await form.getByRole("button", { name: "Sign in" }).click();
  await shows(page.locator("#signed-in"), `Signed in as ${email}`);
  await page.getByText("None yet.").waitFor({ state: "visible" });
  callsSince(from, ["POST /auth/login", "GET /auth/me", "GET /auth/passkeys"], "password sign-in");
}

async function addAndSignIn(page, { cdp, authenticatorId }) {
  const name = "Chromium's virtual authenticator";
  let from = calls.length;
  const add = page.locator("#add-form");
  await add.getByLabel("Name of the new passkey").fill(name);
  await add.getByRole("button", { name: "Add a passkey" }).click();
  await shows(add.getByRole("status"), `Passkey "${name}" added`);
  await shows(page.locator("#passkeys li"), name);
  if ((await page.locator("#passkeys li").count()) !== 1) {
    problems.push(`one passkey listed expected: ${await page.locator("#passkeys").innerText()}`);
  }
  callsSince(
    from,
    ["POST /auth/passkeys/registration/options", "POST /auth/passkeys/registration/verify", "GET /auth/passkeys"],
    "adding a passkey",
  );
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  if (credentials.length !== 1 || !credentials[0].isResidentCredential || credentials[0].rpId !== "localhost") {
    problems.push(`one resident credential for localhost expected in the authenticator: ${JSON.stringify(credentials)}`);
  }
  console.log("passkeys: added and listed; the authenticator holds one resident credential");

  from = calls.length;
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.locator("#signed-out").waitFor({ state: "visible" });
  callsSince(from, ["POST /auth/logout"], "signing out");

  from = calls.length;
  const emailField = page.locator("#password-form").getByLabel("Email address");
  if ((await emailField.inputValue()) !== "") {
    problems.push("the email field is not empty: the passkey sign-in must need none typed");
  }
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await shows(page.locator("#signed-in"), `Signed in as ${email}`);
  await shows(page.locator("#passkeys li"), name);
  callsSince(
    from,
    ["POST /auth/passkeys/authentication/options", "POST /auth/passkeys/authentication/verify", "GET /auth/me", "GET /auth/passkeys"],
    "signing in with the passkey",
  );
  console.log("passkeys: signed out, then signed in with the passkey and no email typed");

  // A browser without WebAuthn: the page says so at once, and again on the button, and
  // calls nothing.
  const bare = await browser.newPage();
  watch(bare, base, problems);
  recordCalls(bare);
  await bare.addInitScript(() => delete window.PublicKeyCredential);
  await bare.goto(`${base}/account/passkeys`);
  await shows(bare.locator("#unsupported"), "This browser does not support passkeys");
  from = calls.length;
  const form = bare.locator("#passkey-form");
  await form.getByRole("button", { name: "Sign in with a passkey" }).click();
  await shows(form.getByRole("alert"), "This browser does not support passkeys");
  callsSince(from, [], "a browser without WebAuthn");
  await bare.close();
  console.log("passkeys: a browser without WebAuthn is told so");
}

async function wrongOrigin(page) {
  expected.add("422 /auth/passkeys/registration/verify");
  const add = page.locator("#add-form");
  await add.getByRole("button", { name: "Add a passkey" }).click();
  // The server's own words (detail.message).
  await shows(add.getByRole("alert"), "The authenticator's answer was not accepted");
  if (!(await page.getByText("None yet.").isVisible())) {
    problems.push(`no passkey may be listed after a refusal: ${await page.locator("#passkeys").innerText()}`);
  }
  console.log("passkeys: a registration from another origin was refused, with the server's message");
}
