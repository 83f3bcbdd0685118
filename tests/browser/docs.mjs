// Drives Debian's chromium (launched and watched by chromium.mjs) through /docs (Swagger UI)
// or /redoc of a running JobPath API test server, as a person would. Run by
// tests/api/docs.rs, which starts the server, checks the database afterwards, and passes:
//
//   node docs.mjs <base-url> swagger|redoc [email-to-sign-up]
//   JOBPATH_OPERATIONS='[{"method":"post","path":"/auth/signup","operationId":"signup",
//                         "tag":"auth","summary":"Create an account"}, ...]'
//
// It fails (exit 1, reason on stderr) if an operation is missing from the page, if the page
// requests anything from another origin, or if the browser reports an error (a refused
// script, a Content-Security-Policy violation, an exception). For swagger it then uses
// "Try it out" on signup and requires the 201 the page shows.
//
// One exception, named here rather than hidden in a pattern: ReDoc 2 hard-codes its vendor's
// logo (an <img> from its CDN, at the foot of the menu). The page's CSP must block it — the
// browser never sends it and the image hides itself on error — and the test requires exactly
// that: the request failed as refused by the CSP, and the only CSP message is about it.
import { finish, launch, watch } from "./chromium.mjs";

const BLOCKED_BY_DESIGN = {
  redoc: ["https://cdn.redoc.ly/redoc/logo-mini.svg"],
  swagger: [],
};

const [base, mode, email] = process.argv.slice(2);
const operations = JSON.parse(process.env.JOBPATH_OPERATIONS ?? "[]");
if (!base || !["swagger", "redoc"].includes(mode) || operations.length === 0) {
  console.error("usage: JOBPATH_OPERATIONS=[...] node docs.mjs <base-url> swagger|redoc [email]");
  process.exit(2);
}
const browser = await launch();
const problems = [];
const expectedBlocks = new Set(BLOCKED_BY_DESIGN[mode]);
const blocked = new Set();
try {
  const page = await browser.newPage();
  watch(page, base, problems, {
    otherOrigin: (url) => expectedBlocks.has(url),
    consoleError: (message) =>
      message.text().includes("Content Security Policy") &&
      [...expectedBlocks].some((url) => message.text().includes(`'${url}'`)),
  });
  page.on("requestfinished", (request) => {
    if (expectedBlocks.has(request.url())) {
      problems.push(`not blocked by the page's CSP: ${request.url()}`);
    }
  });
  page.on("requestfailed", (request) => {
    // Chromium reports a CSP refusal as "csp" (older versions: net::ERR_BLOCKED_BY_CSP).
    const reason = request.failure()?.errorText ?? "";
    if (expectedBlocks.has(request.url()) && ["csp", "net::ERR_BLOCKED_BY_CSP"].includes(reason)) {
      blocked.add(request.url());
    }
  });

  if (mode === "swagger") {
    await swagger(page);
  } else {
    await redoc(page);
  }
  if (process.env.JOBPATH_SCREENSHOT_DIR) {
    // For a person to look at what the test saw.
    await page.screenshot({ path: `${process.env.JOBPATH_SCREENSHOT_DIR}/${mode}.png`, fullPage: false });
  }
} catch (error) {
  problems.push(error.stack ?? String(error));
} finally {
  await browser.close();
}
for (const url of expectedBlocks) {
  // Only meaningful once the page got as far as rendering the menu, which the operation
  // checks above require.
  if (problems.length === 0 && !blocked.has(url)) {
    problems.push(`expected the CSP to block ${url}, but it was never requested or not blocked`);
  }
}
finish(problems);

async function swagger(page) {
  await page.goto(`${base}/docs`);
  for (const op of operations) {
    // Swagger UI gives each operation the id operations-<tag>-<operationId>.
    const block = page.locator(`#operations-${op.tag}-${op.operationId}`);
    await block.waitFor({ state: "visible" });
    const method = await block.locator(".opblock-summary-method").first().innerText();
    const path = await block.locator(".opblock-summary-path").first().getAttribute("data-path");
    if (method.toLowerCase() !== op.method || path !== op.path) {
      problems.push(`${op.operationId}: shown as ${method} ${path}, expected ${op.method} ${op.path}`);
    }
  }
  console.log(`swagger: ${operations.length} operations listed`);

  if (!email) {
    return;
  }
  const signup = page.locator(`#operations-auth-signup`);
  await signup.locator(".opblock-summary").first().click();
  await signup.getByRole("button", { name: "Try it out" }).click();
  const body = JSON.stringify({ email, password: "correct horse battery staple" }, null, 2);
  await signup.locator("textarea.body-param__text").fill(body);
  await signup.getByRole("button", { name: "Execute" }).click();
  const status = signup.locator(".live-responses-table tr.response .response-col_status").first();
  await status.waitFor({ state: "visible" });
  const shown = (await status.innerText()).trim();
  const responseBody = await signup
    .locator(".live-responses-table tr.response .response-col_description pre")
    .first()
    .innerText();
  if (!shown.startsWith("201")) {
    problems.push(`try it out: signup showed ${shown}: ${responseBody}`);
  } else if (!responseBody.includes(email)) {
    problems.push(`try it out: the 201 body does not show the email: ${responseBody}`);
  }
  console.log(`swagger: try it out on signup showed ${shown}`);
}

async function redoc(page) {
  await page.goto(`${base}/redoc`);
  for (const op of operations) {
    // ReDoc gives each operation a section tag/<tag>/operation/<operationId>, headed by
    // its summary, with the method and path in the request panel.
    const section = page.locator(`[data-section-id="tag/${op.tag}/operation/${op.operationId}"]`);
    await section.waitFor({ state: "attached" });
    const text = await section.innerText();
    if (!text.includes(op.summary) || !text.includes(op.path)) {
      problems.push(`${op.operationId}: section does not show "${op.summary}" and ${op.path}`);
    }
  }
  console.log(`redoc: ${operations.length} operations listed`);
}
