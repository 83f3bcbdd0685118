// Starts ReDoc (/redoc) on the spec that spec.js loads. Part of JobPath API, not of the
// vendored bundle.
"use strict";

const redocRoot = document.getElementById("redoc");
window.jobpathSpec(redocRoot, (spec) => {
  Redoc.init(spec, { expandResponses: "200,201" }, redocRoot);
});
