/* Polku's own browser code. Small on purpose: the server renders the pages.
   Loaded from a file because the Content-Security-Policy forbids inline scripts. */
(function () {
  "use strict";

  var MESSAGES = "#messages";

  // Error fragments that the server sends into #messages (with HX-Retarget) are meant to
  // be seen, although htmx 2 does not swap 4xx and 5xx responses by default.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr.status >= 400 && xhr.getResponseHeader("HX-Retarget") === MESSAGES) {
      event.detail.shouldSwap = true;
    }
  });

  // No answer, or an answer that is not ours (a proxy's error page): say so, in the
  // page's language (the text comes from the server, in data-request-error).
  function showRequestError(event) {
    var xhr = event.detail && event.detail.xhr;
    if (xhr && xhr.getResponseHeader("HX-Retarget") === MESSAGES) {
      return;
    }
    var region = document.querySelector(MESSAGES);
    if (!region) {
      return;
    }
    var alert = document.createElement("div");
    alert.className = "alert alert--error";
    alert.setAttribute("role", "alert");
    alert.textContent = region.getAttribute("data-request-error");
    region.replaceChildren(alert);
  }
  document.addEventListener("htmx:sendError", showRequestError);
  document.addEventListener("htmx:responseError", showRequestError);
})();
