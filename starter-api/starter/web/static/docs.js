// Swagger UI on the service's own OpenAPI document; "Try it out" calls this origin
// (the document's server is "/"), with basic auth or a Bearer token from "Authorize".
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    deepLinking: true,
    // No call to the public validator: nothing leaves this origin.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // Without the browser's credentials a 401 reaches Swagger UI instead of making the
    // browser ask for a password in a dialog of its own (the answer says WWW-Authenticate: Basic).
    requestInterceptor: function (request) {
      request.credentials = "omit";
      return request;
    },
  });
});
