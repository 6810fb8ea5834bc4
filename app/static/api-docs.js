// Starts Swagger UI on /docs. A file rather than an inline script: the page's CSP
// allows scripts from this server only.
const root = document.getElementById('swagger-ui');
window.ui = globalThis.SwaggerUIBundle({
  url: root.dataset.spec,
  domNode: root,
  deepLinking: true,
  presets: [globalThis.SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});
