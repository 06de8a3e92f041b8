// Live gate counts for the audience typed in the editor (GET /audience.json; changes nothing).
(function () {
  "use strict";
  var out = document.getElementById("audience-counts");
  var input = document.getElementById("audience");
  var purpose = document.getElementById("purpose");
  if (!out || !input || !purpose) { return; }
  var timer = null;
  function show() {
    var url = out.getAttribute("data-url") + "?purpose=" + encodeURIComponent(purpose.value) +
      "&audience=" + encodeURIComponent(input.value);
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        if (data.error) { out.textContent = data.error; return; }
        var skipped = Object.keys(data.skipped).map(function (k) {
          return k + " " + data.skipped[k];
        }).join(", ");
        out.textContent = "The gate now: " + data.matched + " matched, " + data.eligible +
          " eligible" + (skipped ? "; skipped: " + skipped : "") + ".";
      })
      .catch(function () { out.textContent = ""; });
  }
  function later() { window.clearTimeout(timer); timer = window.setTimeout(show, 300); }
  input.addEventListener("input", later);
  purpose.addEventListener("change", show);
  show();
})();
