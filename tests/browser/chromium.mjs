// What every driver script of tests/browser shares: how Debian's chromium is launched, and
// the watch on a page that turns anything the browser should never do into a problem —
// a request to another origin, an error answer, a console error (a refused script, a
// Content-Security-Policy violation), an uncaught exception. Used by docs.mjs and
// account.mjs; run by the tests in tests/api (see tests/api/browser.rs).
import { chromium } from "playwright-core";

export const TIMEOUT = 20_000;

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    // The machine has no way out: without these, chromium's own background traffic is
    // refused many times over and slows it down.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

// Watches `page` (loaded from `base`'s origin), pushing each problem onto `problems`. A
// driver that expects something the watch would refuse says so, narrowly:
// `otherOrigin(url)` for a request to another origin, `errorAnswer(response)` for a 4xx/5xx,
// `consoleError(message)` for a console error.
export function watch(page, base, problems, { otherOrigin = () => false, errorAnswer = () => false, consoleError = () => false } = {}) {
  page.setDefaultTimeout(TIMEOUT);
  const origin = new URL(base).origin;
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (!["data:", "blob:"].includes(url.protocol) && url.origin !== origin && !otherOrigin(request.url())) {
      problems.push(`requested another origin: ${request.url()}`);
    }
  });
  page.on("response", (response) => {
    if (response.status() >= 400 && !errorAnswer(response)) {
      problems.push(`${response.status()} for ${response.url()}`);
    }
  });
  page.on("console", (message) => {
    if (message.type() === "error" && !consoleError(message)) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
}

// Ends the script: exit 1 with the problems on stderr, if there are any.
export function finish(problems) {
  if (problems.length > 0) {
    console.error(problems.join("\n"));
    process.exit(1);
  }
}
