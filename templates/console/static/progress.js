// Polls the campaign's progress.json and updates the bars; stops when the campaign is final.
(function () {
  "use strict";
  var section = document.getElementById("progress");
  if (!section) { return; }
  var url = section.getAttribute("data-url");
  function text(id, value) { var el = document.getElementById(id); if (el) { el.textContent = value; } }
  function tick() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        var total = data.total || 1;
        Object.keys(data.deliveries).forEach(function (status) {
          var bar = document.getElementById("bar-" + status);
          if (bar) { bar.max = total; bar.value = data.deliveries[status]; }
          text("count-" + status, data.deliveries[status]);
        });
        text("status", data.status);
        text("rate", data.rate_per_second);
        text("eta", data.eta_seconds === null ? "—" : data.eta_seconds);
        text("pending", data.pending);
        if (data.finished) { window.location.reload(); return; }
        window.setTimeout(tick, 1000);
      })
      .catch(function () { window.setTimeout(tick, 3000); });
  }
  window.setTimeout(tick, 1000);
})();
