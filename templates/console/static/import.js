// Polls a contacts import's progress; reloads the page (which shows the report) when it ends.
(function () {
  "use strict";
  var section = document.getElementById("import");
  if (!section) { return; }
  var url = section.getAttribute("data-url");
  function text(id, value) { var el = document.getElementById(id); if (el) { el.textContent = value; } }
  function tick() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { window.setTimeout(tick, 3000); return; }
        var pct = data.bytes_total ? Math.round(100 * data.bytes_done / data.bytes_total) : 100;
        var bar = document.getElementById("import-bar");
        if (bar) { bar.value = pct; bar.textContent = pct + " %"; }
        text("import-pct", pct);
        text("import-rows", Math.round(data.rows_in_file * pct / 100));
        if (data.state !== "running") { window.location.reload(); return; }
        window.setTimeout(tick, 500);
      })
      .catch(function () { window.setTimeout(tick, 3000); });
  }
  window.setTimeout(tick, 500);
})();
