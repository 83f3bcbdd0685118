// Loads this server's contract for the documentation pages (/docs, /redoc). Part of
// JobPath API, not of the vendored bundles.
//
// The contract lists a development address under `servers`. The pages must describe, and
// "try it out" must call, the server that serves them, wherever it runs (their
// Content-Security-Policy allows no other), so `servers` is replaced by the address this
// page was loaded from. `show` runs the page's renderer on the spec, or shows the error.
"use strict";

window.jobpathSpec = async function (root, show) {
  try {
    const response = await fetch(new URL("openapi.json", document.baseURI));
    if (!response.ok) {
      throw new Error(`openapi.json answered ${response.status}`);
    }
    const spec = await response.json();
    const here = new URL(".", document.baseURI).href.replace(/\/$/, "");
    spec.servers = [{ url: here, description: "This server" }];
    show(spec);
  } catch (error) {
    root.textContent = `Could not load the API description: ${error.message}`;
  }
};
