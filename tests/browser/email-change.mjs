// Drives Debian's chromium (launched and watched by chromium.mjs) through the page an
// email-change confirmation links to (/account/confirm-email-change), as a person would.
// Run by tests/api/email_change.rs, which starts the server, reads the email and checks the
// account afterwards:
//
//   node email-change.mjs <base-url> <emailed-link> <new-email>
//       nothing is sent before the click on "Confirm the new address"; then it is, once,
//       and the page names the new address
//
// It fails (exit 1, reason on stderr) if the page requests anything from another origin,
// if the browser reports an error (a CSP violation, an exception), if the server answers an
// error, or if the page does not show what it should.
import { finish, launch, watch } from "./chromium.mjs";

const [base, link, newEmail, ...rest] = process.argv.slice(2);
if (!base || !link || !newEmail || rest.length > 0) {
  console.error("usage: node email-change.mjs <base-url> <emailed-link> <new-email>");
  process.exit(2);
}

const calls = [];
const browser = await launch();
const problems = [];
try {
  const page = await browser.newPage();
  watch(page, base, problems);
  page.on("request", (request) => {
    const path = new URL(request.url()).pathname;
    if (path.startsWith("/auth/")) {
      calls.push(`${request.method()} ${path}`);
    }
  });
  await page.goto(link);
  const button = page.getByRole("button", { name: "Confirm the new address" });
  await button.waitFor({ state: "visible" });
  if (new URL(page.url()).hash !== "") {
    problems.push(`the fragment is still in the address: ${page.url()}`);
  }
  // A mail scanner that runs the page's script must not change the address.
  await page.waitForTimeout(500);
  if (calls.length > 0) {
    problems.push(`calls before the click: ${calls.join(", ")}`);
  }
  await button.click();
  await page.locator("#done").filter({ hasText: "Your email address is changed" }).waitFor({ state: "visible" });
  const shown = await page.locator("#new-email").textContent();
  if (shown !== newEmail) {
    problems.push(`the page names ${shown}, not ${newEmail}`);
  }
  if (calls.join() !== "POST /auth/email/change/confirm") {
    problems.push(`one confirm call expected, made: ${calls.join(", ")}`);
  }
  if (process.env.JOBPATH_SCREENSHOT_DIR) {
    await page.screenshot({ path: `${process.env.JOBPATH_SCREENSHOT_DIR}/email-change.png`, fullPage: true });
  }
  console.log("email change: changed by the click, and not before");
} catch (error) {
  problems.push(error.stack ?? String(error));
} finally {
  await browser.close();
}
finish(problems);
