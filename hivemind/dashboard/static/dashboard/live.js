// The dashboard's only script: a few lines, no library. Without it every page still works;
// with it, a running workflow's timeline updates itself, an app's logs load after the page,
// the tenant switcher applies on change, destructive buttons ask first and an alert rule's
// preview follows the form as one edits it.
(function () {
  "use strict";

  // <div data-poll="URL" data-interval="ms">: replaced by the fragment at URL every interval,
  // until a fragment comes back without data-poll (the workflow ended) or the server says no.
  function poll(element) {
    const interval = Number(element.dataset.interval || 1000);
    setTimeout(async function () {
      let next = element;
      try {
        const response = await fetch(element.dataset.poll, { credentials: "same-origin", cache: "no-store" });
        if (response.status >= 400 && response.status < 500) return; // gone or not allowed: stop asking
        if (response.ok) {
          const holder = document.createElement("div");
          holder.innerHTML = (await response.text()).trim();
          next = holder.firstElementChild;
          element.replaceWith(next);
        }
      } catch (error) {
        // the server restarted or the network blinked: ask again on the next tick
      }
      if (next.dataset.poll) poll(next);
    }, interval);
  }

  // <div data-load="URL">: filled once with the fragment at URL (slow parts, e.g. logs).
  async function load(element) {
    try {
      const response = await fetch(element.dataset.load, { credentials: "same-origin" });
      element.innerHTML = response.ok ? await response.text() : "<p class=\"error\">Could not load (HTTP " + response.status + ").</p>";
    } catch (error) {
      element.innerHTML = "<p class=\"error\">Could not load: the server did not answer.</p>";
    }
  }

  // <form data-preview="URL">: while one edits the form, it is posted to URL (a fragment: the
  // #rule-preview block, nothing saved) at most every 600 ms after the last keystroke, and the
  // block replaced. Without this, the form's Preview button does the same with a full page.
  function livePreview(form) {
    let timer = null;
    let asked = 0;
    async function refresh() {
      const body = new FormData(form);
      body.set("preview", "1");
      const mine = ++asked;
      try {
        const response = await fetch(form.dataset.preview, { method: "POST", body: body, credentials: "same-origin" });
        const target = document.getElementById("rule-preview");
        if (mine !== asked || !target || (response.status !== 200 && response.status !== 400)) return;
        const holder = document.createElement("div");
        holder.innerHTML = (await response.text()).trim();
        target.replaceWith(holder.firstElementChild);
      } catch (error) {
        // the server did not answer: keep the last preview, the next edit asks again
      }
    }
    function later() {
      clearTimeout(timer);
      timer = setTimeout(refresh, 600);
    }
    form.addEventListener("input", later);
    form.addEventListener("change", later);
  }

  // <fieldset data-kind="metric anomaly">: shown only while its form's kind select says one of
  // those kinds (the server ignores the other kinds' boxes anyway; without this, every fieldset
  // shows); a [data-kind-note] only for its kind.
  function kindFieldsets(form) {
    const select = form.querySelector("select[name=kind]");
    if (!select) return;
    function apply() {
      form.querySelectorAll("fieldset[data-kind]").forEach(function (fieldset) {
        fieldset.hidden = fieldset.dataset.kind.split(" ").indexOf(select.value) < 0;
      });
      form.querySelectorAll("[data-kind-note]").forEach(function (note) {
        note.hidden = note.dataset.kindNote !== select.value;
      });
    }
    select.addEventListener("change", apply);
    apply();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-preview]").forEach(livePreview);
    document.querySelectorAll("form[data-preview]").forEach(kindFieldsets);
    document.querySelectorAll("[data-poll]").forEach(poll);
    document.querySelectorAll("[data-load]").forEach(load);
    document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  });
})();
