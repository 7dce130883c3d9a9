// Small enhancements of server-rendered pages; every page works without them.
(function () {
  "use strict";
  var form = document.getElementById("compare-form");
  if (form) {
    var button = document.getElementById("compare-button");
    var count = document.getElementById("selected-count");
    var update = function () {
      var n = form.querySelectorAll("input.pick:checked").length;
      button.disabled = n < 2 || n > 20;
      count.textContent = n + " selected" + (n > 20 ? " (at most 20)" : "");
    };
    form.addEventListener("change", update);
    update();
  }
  var size = document.getElementById("page-size");
  if (size) {
    size.addEventListener("change", function () { window.location.assign(size.value); });
  }
  var metric = document.getElementById("metric-choice");
  if (metric) {
    metric.addEventListener("change", function () { metric.form.submit(); });
  }
})();
