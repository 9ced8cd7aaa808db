/* Polku live plan pages: the browser side of web/live (the live hub).

   The page connects with htmx's ws extension (hx-ext="ws" ws-connect="/plans/ID/live?version=N");
   every top-level element of a message is swapped out of band, replacing by id. This script:

   - reconnects with the version the page now shows (from #live-version[data-version]), so the
     server sends the whole current plan only when the page missed something;
   - keeps drafts: an update never replaces an edit form being filled in (or the focused
     element). The form is kept and marked "changed by someone else — your draft is kept";
     when the form closes, the page asks for the current plan again ({"type":"resync"}).
     The server's conflict check (stale revision) stays the safety net;
   - tells the others what this person is editing ({"type":"editing","item":"need-ID"|null});
   - shows and announces the connection's state in #live-status, that a draft was kept
     (until no form shows that notice any more), and what new came that is marked
     data-announce (a new message for the client).

   A draft is an open item form (data-item-form, as the plan page renders them, or
   data-edit-form), or a posting form typed into or holding the focus. Its item is
   data-edit-item, else the nearest enclosing id of the form "kind-ID". An update replaces
   a whole panel or, when only items of it changed in place, just those items (by id); either
   way a draft's element is kept. The notice is shown when the update's data-revision of the
   item differs from the form's seen_revision.
   The texts come from the server, in the page's language: data-* attributes of #live-status.
   No inline script or style: the Content-Security-Policy forbids them. */
(function () {
  "use strict";

  var RECONNECTING_CODES = [1006, 1011, 1012, 1013];
  var GIVE_UP_NOTICE_AFTER = 5; // failed reconnects before suggesting a reload
  var BACK_SHOWN_MS = 8000; // how long "connection restored" stays on screen
  var ITEM_ID = /^[a-z][a-z_]{0,30}-[A-Za-z0-9_-]{1,80}$/;
  var NOTICE_ATTRIBUTE = "data-live-notice";

  var socket = null; // htmx's socket wrapper (public interface), once open
  var inMessage = false; // between htmx:wsBeforeMessage and htmx:wsAfterMessage
  var heldBack = false; // an update was not applied to keep a draft
  var lost = false;
  var failedReconnects = 0;
  var unloading = false;
  var editingSent = null;
  var focusBefore = null;
  var clearBack = null;
  var shown = null; // the name of the message #live-status shows

  function status() {
    return document.getElementById("live-status");
  }

  function text(name) {
    var region = status();
    return (region && region.getAttribute("data-" + name)) || "";
  }

  function announce(name, kind) {
    say(name, name ? text(name) : "", kind);
  }

  // Shows (and so announces) ``words`` in #live-status as the message ``name``; none: clears it.
  function say(name, words, kind) {
    var region = status();
    if (!region) {
      return;
    }
    if (clearBack !== null) {
      window.clearTimeout(clearBack);
      clearBack = null;
    }
    shown = name || null;
    if (!name) {
      region.replaceChildren();
      return;
    }
    var message = document.createElement("p");
    message.className = "alert" + (kind ? " alert--" + kind : "");
    message.textContent = words;
    region.replaceChildren(message);
  }

  function clearLater() {
    clearBack = window.setTimeout(function () {
      clearBack = null;
      announce(null);
    }, BACK_SHOWN_MS);
  }

  // ---------------------------------------------------------------- reconnect with the version

  function shownVersion() {
    var marker = document.getElementById("live-version");
    var version = marker && marker.getAttribute("data-version");
    return version && /^\d+$/.test(version) ? version : null;
  }

  function withVersion(url) {
    var version = shownVersion();
    if (version === null) {
      return url;
    }
    try {
      var parsed = new URL(url, window.location.href);
      parsed.searchParams.set("version", version);
      return parsed.toString();
    } catch (error) {
      return url;
    }
  }

  function installSocketFactory() {
    if (!window.htmx) {
      return;
    }
    var create = window.htmx.createWebSocket;
    window.htmx.createWebSocket = function (url) {
      if (create) {
        return create(withVersion(url));
      }
      var created = new WebSocket(withVersion(url), []);
      created.binaryType = window.htmx.config.wsBinaryType;
      return created;
    };
  }
  installSocketFactory();

  // ---------------------------------------------------------------- drafts

  // A form that edits the plan: the plan page's item forms (data-item-form), forms marked
  // data-edit-form, and any form that posts. Not the small GET forms of "Edit" buttons.
  function isEditForm(form) {
    return (
      form.hasAttribute("data-item-form") ||
      form.hasAttribute("data-edit-form") ||
      form.hasAttribute("hx-post") ||
      (form.getAttribute("method") || "").toLowerCase() === "post"
    );
  }

  // A draft: an open item form (it exists only while open), or an edit form typed into or
  // holding the focus.
  function isDraft(form) {
    if (
      form.hasAttribute("data-item-form") ||
      form.hasAttribute("data-edit-form") ||
      form.hasAttribute("data-live-dirty")
    ) {
      return true;
    }
    var active = document.activeElement;
    return isEditForm(form) && Boolean(active && active !== document.body && form.contains(active));
  }

  function draftsIn(element) {
    var forms = Array.prototype.slice.call(element.querySelectorAll("form"));
    if (element.tagName === "FORM") {
      forms.push(element);
    }
    return forms.filter(isDraft);
  }

  function isSaving(form) {
    return form.classList.contains("htmx-request") || form.hasAttribute("data-live-saving");
  }

  function fragmentHas(fragment, id) {
    return Boolean(fragment.querySelector && fragment.querySelector("#" + CSS.escape(id)));
  }

  // The element to keep for a draft: the draft itself or its nearest ancestor (inside the
  // element being replaced) whose id the update also has; null when there is none.
  function keptElement(form, target, fragment) {
    for (var element = form; element && element !== target; element = element.parentElement) {
      if (element.id && fragmentHas(fragment, element.id)) {
        return element;
      }
    }
    return null;
  }

  // Whether the item under a kept draft changed: the update's revision of the item
  // (data-revision on it or an ancestor) against the revision the form was opened at
  // (its seen_revision field). An item missing from the update has changed (or gone).
  // Without both numbers (an "add" form) there is nothing to compare: no notice.
  function changedUnder(form, replacement) {
    if (!replacement) {
      return true;
    }
    var seen = form.querySelector("input[name=seen_revision]");
    var holder = replacement.closest("[data-revision]");
    if (!seen || !holder) {
      return false;
    }
    return seen.value !== holder.getAttribute("data-revision");
  }

  function markChanged(form) {
    if (isSaving(form)) {
      return; // most likely this person's own save coming back: no notice
    }
    if (!form.querySelector("[" + NOTICE_ATTRIBUTE + "]")) {
      var notice = document.createElement("p");
      notice.className = "alert";
      notice.setAttribute(NOTICE_ATTRIBUTE, "");
      notice.textContent = text("draft-kept");
      form.insertBefore(notice, form.firstChild);
    }
    announce("draft-kept");
  }

  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    if (!inMessage) {
      return; // only live updates; the page's own responses swap as they always do
    }
    var target = event.detail.target;
    var fragment = event.detail.fragment;
    var around = target.parentElement && target.parentElement.closest("form");
    if (around && isDraft(around)) {
      event.detail.shouldSwap = false; // the element is part of a draft: keep it whole
      if (changedUnder(around, null)) {
        markChanged(around);
      }
      heldBack = true;
      return;
    }
    var drafts = draftsIn(target);
    if (!drafts.length) {
      return;
    }
    var keepAll = false;
    drafts.forEach(function (form) {
      var kept = keptElement(form, target, fragment);
      var replacement = null;
      if (kept) {
        // htmx moves the page's element with this id into the new content (hx-preserve).
        replacement = fragment.querySelector("#" + CSS.escape(kept.id));
        replacement.setAttribute("hx-preserve", "true");
      } else {
        keepAll = true;
        if (target.hasAttribute("data-revision")) {
          // An item sent alone: the update is the item itself, the one to compare with.
          replacement = fragment.querySelector("#" + CSS.escape(target.id));
        }
      }
      if (changedUnder(form, replacement)) {
        markChanged(form);
      }
    });
    if (keepAll) {
      event.detail.shouldSwap = false;
    }
    heldBack = true;
  });

  // Typing makes a form a draft until it is replaced (saved, or closed by the page).
  function markDirty(event) {
    var form = event.target && (event.target.form || (event.target.closest && event.target.closest("form")));
    if (form && isEditForm(form) && !form.hasAttribute("data-live-dirty")) {
      form.setAttribute("data-live-dirty", "");
    }
    editingChanged();
  }
  document.addEventListener("input", markDirty);
  document.addEventListener("change", markDirty);

  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest("form");
    if (form) {
      form.setAttribute("data-live-saving", "");
    }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest("form");
    if (form) {
      form.removeAttribute("data-live-saving");
    }
  });

  // When no draft is left, fetch what was held back.
  function catchUpIfFree() {
    if (!heldBack || draftsIn(document.body).length) {
      return;
    }
    if (send({ type: "resync" })) {
      heldBack = false;
    }
  }

  // ---------------------------------------------------------------- what this person edits

  function itemOf(form) {
    var item = form.getAttribute("data-edit-item");
    if (item && ITEM_ID.test(item)) {
      return item;
    }
    for (var element = form; element && element !== document.body; element = element.parentElement) {
      if (element.id && ITEM_ID.test(element.id) && element.id !== "live-status") {
        return element.id;
      }
    }
    return null;
  }

  function currentItem() {
    var active = document.activeElement;
    var focused = active && active.closest ? active.closest("form") : null;
    if (focused && isDraft(focused) && itemOf(focused)) {
      return itemOf(focused);
    }
    var drafts = draftsIn(document.body);
    for (var i = 0; i < drafts.length; i++) {
      var item = itemOf(drafts[i]);
      if (item) {
        return item;
      }
    }
    return null;
  }

  function send(message) {
    if (!socket) {
      return false;
    }
    try {
      socket.send(JSON.stringify(message));
      return true;
    } catch (error) {
      return false;
    }
  }

  function editingChanged() {
    var item = currentItem();
    if (item !== editingSent && send({ type: "editing", item: item })) {
      editingSent = item;
    }
  }

  // "Someone else changed this item" holds only while a form shows its notice: once it is
  // saved, discarded or replaced, the message goes.
  function clearStaleNotice() {
    if (shown === "draft-kept" && !document.querySelector("[" + NOTICE_ATTRIBUTE + "]")) {
      announce(null);
    }
  }

  function settled() {
    clearStaleNotice();
    editingChanged();
    catchUpIfFree();
  }

  document.addEventListener("focusin", editingChanged);
  document.addEventListener("focusout", function () {
    window.setTimeout(settled, 0); // once the focus has landed
  });
  document.addEventListener("htmx:afterSettle", settled);
  document.addEventListener("htmx:load", function () {
    window.setTimeout(settled, 0);
  });

  // ---------------------------------------------------------------- messages and focus

  // A control without an id that opens a form ("Edit", a link) is known by what it fetches
  // (its own or its form's hx-get), so that the focus finds it again in an update.
  function opens(element) {
    var holder = element.hasAttribute("hx-get") ? element : element.form;
    return holder && holder.hasAttribute("hx-get") ? holder.getAttribute("hx-get") : null;
  }

  function sameOpener(url) {
    if (!url) {
      return null;
    }
    var found = null;
    document.querySelectorAll("[hx-get]").forEach(function (element) {
      if (!found && element.getAttribute("hx-get") === url) {
        found = element.tagName === "FORM" ? element.querySelector("button") : element;
      }
    });
    return found;
  }

  document.addEventListener("htmx:wsBeforeMessage", function () {
    inMessage = true;
    var active = document.activeElement;
    focusBefore = null;
    if (active && active !== document.body) {
      focusBefore = { element: active, id: active.id, opens: opens(active), start: null, end: null };
      try {
        focusBefore.start = active.selectionStart;
        focusBefore.end = active.selectionEnd;
      } catch (error) {
        // not a text field
      }
    }
  });

  document.addEventListener("htmx:wsAfterMessage", function () {
    inMessage = false;
    var before = focusBefore;
    focusBefore = null;
    if (!before || document.activeElement === before.element) {
      return;
    }
    var element = document.contains(before.element)
      ? before.element
      : before.id
        ? document.getElementById(before.id)
        : sameOpener(before.opens);
    if (!element) {
      return;
    }
    element.focus({ preventScroll: true });
    if (before.start !== null && typeof element.setSelectionRange === "function") {
      try {
        element.setSelectionRange(before.start, before.end);
      } catch (error) {
        // the field no longer takes a selection
      }
    }
  });

  // ---------------------------------------------------------------- new things, told

  // An update that brings an element marked data-announce that the page did not have (a
  // professional's new message, on the client's page) says so in #live-status, politely:
  // a screen reader does not see it arrive. What the region tells of the connection or of a
  // kept draft stays.
  var announcedBefore = null;

  function announcedIds() {
    var ids = {};
    document.querySelectorAll("[data-announce][id]").forEach(function (element) {
      ids[element.id] = true;
    });
    return ids;
  }

  document.addEventListener("htmx:wsBeforeMessage", function () {
    announcedBefore = announcedIds();
  });

  document.addEventListener("htmx:wsAfterMessage", function () {
    var before = announcedBefore;
    announcedBefore = null;
    if (before === null || (shown !== null && shown !== "back" && shown !== "news")) {
      return;
    }
    var fresh = Array.prototype.filter.call(document.querySelectorAll("[data-announce][id]"), function (element) {
      return !before[element.id];
    });
    if (fresh.length) {
      say("news", fresh.map(function (element) { return element.getAttribute("data-announce"); }).join(" "), "");
      clearLater();
    }
  });

  // ---------------------------------------------------------------- connection state

  window.addEventListener("pagehide", function () {
    unloading = true;
  });

  document.addEventListener("htmx:wsOpen", function (event) {
    socket = event.detail.socketWrapper;
    editingSent = null;
    failedReconnects = 0;
    if (lost) {
      lost = false;
      announce("back", "success");
      clearLater();
    }
    editingChanged();
    catchUpIfFree();
  });

  document.addEventListener("htmx:wsClose", function (event) {
    socket = null;
    if (unloading) {
      return;
    }
    var code = event.detail.event && event.detail.event.code;
    if (RECONNECTING_CODES.indexOf(code) >= 0) {
      if (lost) {
        failedReconnects += 1;
      }
      lost = true;
      announce(failedReconnects >= GIVE_UP_NOTICE_AFTER ? "still-lost" : "lost", "error");
    } else {
      lost = false;
      announce("stopped", "error");
    }
  });
})();
