// Drives the reference front end (client/typescript/examples/spa) in Chromium, in cookie
// mode, served from another origin than the API (another port of localhost: the same
// site). Run by tests/api/spa.rs:
//
//   node spa.mjs PAGE_ORIGIN API_URL EMAIL   (SPA_DIR, CLIENT_DIST, OPENAPI_FETCH_DIST set)
//
// Signs up, logs in, reloads (the cookie must bring the session back), has three "tabs"
// restore at once (one refresh in flight at a time), ends a second session, logs out. Throughout: no request to any host but the page's and the API's,
// the refresh token never readable by the page (document.cookie, storage), the cookie
// stored HttpOnly, Secure, SameSite=Strict for /auth/refresh only.
import { pathToFileURL } from "node:url";

import { finish, launch, watch } from "./chromium.mjs";

const [pageOrigin, api, email] = process.argv.slice(2);
const password = "correct horse battery staple";
const problems = [];
const check = (ok, what) => {
  if (!ok) problems.push(what);
  return ok;
};

const { serve } = await import(pathToFileURL(`${process.env.SPA_DIR}/serve.mjs`).href);
const server = await serve({
  port: Number(new URL(pageOrigin).port),
  client: process.env.CLIENT_DIST,
  vendor: process.env.OPENAPI_FETCH_DIST,
});
const browser = await launch();
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const apiOrigin = new URL(api).origin;
  watch(page, pageOrigin, problems, { otherOrigin: (url) => new URL(url).origin === apiOrigin });
  const refreshes = [];
  page.on("request", (request) => {
    if (request.url() === `${apiOrigin}/auth/refresh` && request.method() === "POST") refreshes.push(request);
  });

  const status = page.locator("#status");
  const url = `${pageOrigin}/?api=${encodeURIComponent(api)}`;
  await page.goto(url);
  await page.locator("html[data-ready]").waitFor();

  await page.fill("#signup input[name=email]", email);
  await page.fill("#signup input[name=password]", password);
  await page.click("#signup button");
  await status.filter({ hasText: `Account created for ${email}` }).waitFor();

  await page.fill("#login input[name=email]", email);
  await page.fill("#login input[name=password]", password);
  await page.click("#login button");
  await page.locator("#account-email", { hasText: email }).waitFor();
  await page.locator("#sessions li[data-current]").waitFor();

  const cookieOf = async () =>
    (await context.cookies(`${apiOrigin}/auth/refresh`)).find((c) => c.name === "__Secure-jobpath_refresh");
  const hidden = async (token, when) => {
    const readable = await page.evaluate(() => [
      document.cookie,
      JSON.stringify(localStorage),
      JSON.stringify(sessionStorage),
    ]);
    check(!readable.some((text) => text.includes(token)), `${when}: the page can read the refresh token`);
  };
  const cookie = await cookieOf();
  if (check(cookie !== undefined, "no refresh cookie stored after the login")) {
    check(cookie.httpOnly && cookie.secure && cookie.sameSite === "Strict", `cookie attributes: ${JSON.stringify(cookie)}`);
    check(cookie.path === "/auth/refresh", `cookie path: ${cookie.path}`);
    await hidden(cookie.value, "after the login");
  }

  // A reload forgets the access token; the cookie brings the session back.
  await page.reload();
  await status.filter({ hasText: "Welcome back" }).waitFor();
  await page.locator("#account-email", { hasText: email }).waitFor();
  check(refreshes.length === 1, `one refresh after the reload, not ${refreshes.length}`);
  const rotated = await cookieOf();
  if (check(rotated !== undefined, "no refresh cookie after the reload")) {
    check(rotated.value !== cookie?.value, "the refresh rotated the cookie");
    await hidden(rotated.value, "after the reload");
  }

  // Tabs share the cookie: three sessions of one page (as three tabs would be) restoring at
  // once take turns through the Web Lock, one refresh in flight at a time, and all succeed
  // (none presents a cookie another has spent).
  const tabs = await page.evaluate(async (api) => {
    const { Session } = await import("@jobpath/client");
    let inFlight = 0;
    let most = 0;
    const fetcher = async (request) => {
      if (new URL(request.url).pathname !== "/auth/refresh") return fetch(request);
      inFlight += 1;
      most = Math.max(most, inFlight);
      try {
        return await fetch(request);
      } finally {
        inFlight -= 1;
      }
    };
    const sessions = [0, 1, 2].map(() => new Session({ baseUrl: api, refreshTransport: "cookie", fetch: fetcher }));
    const states = await Promise.all(sessions.map((s) => s.restore()));
    return { most, restored: states.filter((s) => s !== null).length, locks: "locks" in navigator };
  }, api);
  check(tabs.locks, "Chromium has no Web Locks");
  check(tabs.most === 1, `refreshes in flight at once across tabs: ${tabs.most}`);
  check(tabs.restored === 3, `tabs restored: ${tabs.restored} of 3`);
  const beforeLogout = refreshes.length;

  // A second session (another device, logged in outside this browser), ended from here.
  const other = await fetch(`${api}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json", "user-agent": "second device" },
    body: JSON.stringify({ email, password }),
  });
  check(other.ok, `the second login: ${other.status}`);
  await page.click("#reload-sessions");
  await page.locator("#sessions li").nth(1).waitFor();
  await page.locator("#sessions li:not([data-current]) button").click();
  await status.filter({ hasText: "Session ended" }).waitFor();
  await page.locator("#sessions li").nth(1).waitFor({ state: "detached" });

  await page.click("#logout");
  await status.filter({ hasText: "Logged out" }).waitFor();
  await page.locator("#login").waitFor();
  check((await cookieOf()) === undefined, "the logout left the refresh cookie");
  await page.reload();
  await page.locator("html[data-ready]").waitFor();
  await page.locator("#login").waitFor();
  check(await page.locator("#signed-in").isHidden(), "signed in after logout and reload");
  check(refreshes.length === beforeLogout, `a refresh after the logout: ${refreshes.length}`);
  console.log("logged out");
} finally {
  await browser.close();
  server.close();
}
finish(problems);
