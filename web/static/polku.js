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

/* ---------------------------------------------------------------------------------------
   Plan pages: forms in place (web/controllers/plans.py, web/templates/plans/).
   --------------------------------------------------------------------------------------- */
(function () {
  "use strict";

  // A refused form comes back as the same form with its messages: 422 (invalid input or a
  // rule of the plan) or 409 (someone else changed the item). The server says where it
  // goes (HX-Retarget); let htmx swap it like a success, without its error handling.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if ((xhr.status === 422 || xhr.status === 409) && xhr.getResponseHeader("HX-Retarget")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // Focus: to the conflict, else the first field in error, else the opened form's first
  // field, else the item just saved. Each mark is used once.
  var loaded = [];
  document.addEventListener("htmx:beforeSwap", function () {
    loaded = [];
  });
  document.addEventListener("htmx:load", function (event) {
    loaded.push(event.detail.elt);
  });
  document.addEventListener("htmx:afterSettle", function () {
    var elements = loaded;
    loaded = [];
    var selectors = ["[data-conflict]", "[aria-invalid='true']", "[autofocus]", "[data-focus]"];
    for (var s = 0; s < selectors.length; s++) {
      for (var i = 0; i < elements.length; i++) {
        var root = elements[i];
        if (!root || !root.isConnected || !root.querySelector) {
          continue;
        }
        var target = root.matches(selectors[s]) ? root : root.querySelector(selectors[s]);
        if (target) {
          target.removeAttribute("autofocus");
          target.removeAttribute("data-focus");
          if (target.hasAttribute("data-conflict")) {
            target.removeAttribute("data-conflict");
          }
          if (target.tagName === "FIELDSET") {
            target = target.querySelector("input") || target;
          }
          target.focus();
          return;
        }
      }
    }
  });

  // Forms that came without a command id (rendered for every viewer at once) get their own.
  function newCommandId() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }
  document.addEventListener("htmx:load", function (event) {
    var root = event.detail.elt;
    if (!root || !root.querySelectorAll) {
      return;
    }
    root.querySelectorAll("input[name='command_id']").forEach(function (input) {
      if (!input.value) {
        input.value = newCommandId();
      }
    });
  });

  // The history page's version slider says which version it points at while it moves.
  document.addEventListener("input", function (event) {
    var slider = event.target;
    if (!slider.matches || !slider.matches("[data-version-slider]")) {
      return;
    }
    var output = slider.form && slider.form.querySelector("[data-version-output]");
    if (output) {
      output.textContent = slider.value + " / " + slider.max;
    }
    var pattern = slider.getAttribute("data-valuetext");
    if (pattern) {
      slider.setAttribute("aria-valuetext", pattern.replace("{version}", slider.value));
    }
  });
})();
