// Serves the reference page with the built package, for trying it out and for its browser
// test (tests/browser/spa.mjs):
//
//   npm run build && node examples/spa/serve.mjs [port] [api]
//
// then open http://localhost:5173/?api=http://localhost:8000 (the API must list
// http://localhost:5173 in CORS_ORIGINS). Static files only, from three directories.
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json",
};

export function serve({
  port = 5173,
  host = "127.0.0.1",
  client = join(here, "../../dist"),
  vendor = join(here, "../../node_modules/openapi-fetch/dist"),
} = {}) {
  const roots = [
    ["/client/", client],
    ["/vendor/openapi-fetch/", vendor],
    ["/", here],
  ];
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, "http://page").pathname;
    const [prefix, root] = roots.find(([p]) => path.startsWith(p));
    const relative = normalize(path.slice(prefix.length) || "index.html");
    if (relative.startsWith("..") || relative.endsWith(".d.ts")) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(root, relative));
      res.writeHead(200, {
        "content-type": TYPES[extname(relative)] ?? "application/octet-stream",
        "cache-control": "no-store",
      });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(port, host, () => resolve(server)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] ?? 5173);
  const api = process.argv[3] ?? "http://localhost:8000";
  await serve({ port });
  console.log(`http://localhost:${port}/?api=${api}`);
}
