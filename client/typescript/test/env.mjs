// What the Rust harness (tests/api/typescript.rs) gives these tests: a live server of its
// own and an admin account on it. Run alone, they need the same variables.
export const API = process.env.JOBPATH_API_URL;
export const ADMIN = {
  email: process.env.JOBPATH_ADMIN_EMAIL,
  password: process.env.JOBPATH_ADMIN_PASSWORD,
};
if (!API || !ADMIN.email || !ADMIN.password) {
  throw new Error("set JOBPATH_API_URL, JOBPATH_ADMIN_EMAIL and JOBPATH_ADMIN_PASSWORD (the Rust harness does)");
}
export const PASSWORD = "correct horse battery staple";

export function uniqueEmail(tag = "ts") {
  return `${tag}-${crypto.randomUUID()}@example.com`;
}

// A fetch that counts requests by path (and lets a test rewrite or answer some itself).
export function countingFetch(rewrite = (request) => request) {
  const counts = new Map();
  const fetcher = async (request) => {
    const path = new URL(request.url).pathname;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const replaced = await rewrite(request);
    return replaced instanceof Response ? replaced : globalThis.fetch(replaced);
  };
  return { fetcher, count: (path) => counts.get(path) ?? 0 };
}
