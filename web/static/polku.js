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
  // field, else the item just saved; looked for in what the request swapped in (by the
  // id of its target), at once, before a live update can replace it. Each mark is used once.
  // A form closed with Cancel (data-cancel), or a swap that took the focus away with the
  // old content and brought no mark, gives the focus back to the control that opened the
  // form (WCAG 2.4.3), else to the first control of what came in.
  var swappedId = null;
  var openers = {}; // the hx-get of the control (a form's button, a link) that filled each target, by id
  var closing = {}; // the targets whose form a Cancel link (data-cancel) is closing, by id
  document.addEventListener("htmx:beforeRequest", function (event) {
    var opener = event.detail.elt;
    var target = event.detail.target;
    if (!opener || !opener.matches || !target || !target.id) {
      return;
    }
    if (opener.matches("[data-cancel]")) {
      closing[target.id] = true;
    } else if (opener.matches("[hx-get]")) {
      openers[target.id] = opener.getAttribute("hx-get");
    }
  });
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    swappedId = target && target.id ? target.id : null;
  });

  function focusLost() {
    var active = document.activeElement;
    return !active || active === document.body || !document.contains(active);
  }

  function returnFocus(root) {
    var url = openers[root.id];
    delete openers[root.id];
    var button = null;
    root.querySelectorAll("[hx-get]").forEach(function (control) {
      if (!button && url && control.getAttribute("hx-get") === url) {
        button = control.tagName === "FORM" ? control.querySelector("button") : control;
      }
    });
    button = button || root.querySelector("button, a[href], input, select, textarea");
    if (!button) {
      button = root;
      if (!root.hasAttribute("tabindex")) {
        root.setAttribute("tabindex", "-1");
      }
    }
    button.focus();
  }
  document.addEventListener("htmx:afterSwap", function () {
    var root = swappedId && document.getElementById(swappedId);
    var closed = swappedId && closing[swappedId];
    if (swappedId) {
      delete closing[swappedId];
    }
    swappedId = null;
    if (!root) {
      return;
    }
    // A form closed with Cancel gives the focus back to its opener, whatever marks came.
    var selectors = closed ? [] : ["[data-conflict]", "[aria-invalid='true']", "[autofocus]", "[data-focus]"];
    var target = null;
    for (var s = 0; s < selectors.length && !target; s++) {
      target = root.matches(selectors[s]) ? root : root.querySelector(selectors[s]);
    }
    // htmx would focus an [autofocus] element after settling: the choice is made here.
    root.querySelectorAll("[autofocus]").forEach(function (element) {
      element.removeAttribute("autofocus");
    });
    if (target) {
      target.removeAttribute("data-focus");
      target.removeAttribute("data-conflict");
      if (target.tagName === "FIELDSET") {
        target = target.querySelector("input") || target;
      }
      target.focus();
    } else if (closed || focusLost()) {
      returnFocus(root);
    }
  });

  // The live echo of one's own edit can replace the form's section before the form's answer
  // comes: htmx then answers into the detached form, and its events never reach the document.
  // The answer still names what should have the focus (data-focus): find that in the page.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt;
    if (!form || !form.matches || !form.matches("form")) {
      return;
    }
    form.addEventListener("htmx:afterRequest", function (done) {
      var xhr = done.detail && done.detail.xhr;
      if (document.contains(form) || !xhr || !focusLost()) {
        return;
      }
      var answer = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
      var wanted = answer.querySelector("[data-focus][id]");
      var element = wanted && document.getElementById(wanted.id);
      if (element) {
        if (!element.hasAttribute("tabindex")) {
          element.setAttribute("tabindex", "-1");
        }
        element.focus();
      }
    }, { once: true });
  });

  // Escape closes an open item form, as its Cancel link does.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || event.defaultPrevented || !event.target.closest) {
      return;
    }
    var form = event.target.closest("form[data-item-form], form[data-edit-form]");
    var cancel = form && form.querySelector("[data-cancel]");
    if (cancel) {
      event.preventDefault();
      cancel.click();
    }
  });

  // A live update (an out-of-band swap) must not take the focus away: if it replaced the
  // element that had it, focus the element with the same id in the new content.
  var focusedId = null;
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var active = document.activeElement;
    var target = event.detail.target;
    if (active && active !== document.body && active.id && target && target.contains(active)) {
      focusedId = active.id;
    }
  });
  document.addEventListener("htmx:oobAfterSwap", function () {
    var id = focusedId;
    focusedId = null;
    var active = document.activeElement;
    if (!id || (active && active !== document.body && active.id === id)) {
      return;
    }
    var element = document.getElementById(id);
    if (element) {
      if (element.tabIndex < 0 && !element.hasAttribute("tabindex")) {
        element.setAttribute("tabindex", "-1");
      }
      element.focus({ preventScroll: true });
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

  // Actions only some people may take (data-only-for: their person ids) are shown to them:
  // the live hub sends every viewer the same fragments, so the page marks its viewer's own
  // (the stylesheet hides the others). The page says who views it in data-viewer.
  document.addEventListener("htmx:load", function (event) {
    var root = event.detail.elt;
    var page = document.querySelector("[data-viewer]");
    if (!root || !root.querySelectorAll || !page) {
      return;
    }
    var viewer = page.getAttribute("data-viewer");
    var found = Array.prototype.slice.call(root.querySelectorAll("[data-only-for]"));
    if (root.hasAttribute && root.hasAttribute("data-only-for")) {
      found.push(root);
    }
    found.forEach(function (element) {
      var people = element.getAttribute("data-only-for").split(" ");
      element.toggleAttribute("data-mine", people.indexOf(viewer) !== -1);
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
