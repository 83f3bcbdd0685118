// Starts Swagger UI (/docs) on the spec that spec.js loads. Part of JobPath API, not of
// the vendored bundle. The online spec validator is switched off: it would send the
// contract to a third party.
"use strict";

const swaggerRoot = document.getElementById("swagger-ui");
window.jobpathSpec(swaggerRoot, (spec) => {
  window.ui = SwaggerUIBundle({
    spec,
    domNode: swaggerRoot,
    deepLinking: true,
    displayRequestDuration: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
