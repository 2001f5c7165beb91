// Swagger UI for /docs, from the package's own copy (no CDN). A file rather than an inline
// script, so that the page's Content-Security-Policy (script-src 'self') holds here too.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
