// The canary share over time, drawn from the JSON the page embeds.
(function () {
  "use strict";
  var node = document.getElementById("loop-data");
  var div = document.getElementById("canary-share");
  if (!node || !div) { return; }
  var shares = JSON.parse(node.textContent).shares;
  Plotly.newPlot(div, [{
    x: shares.map(function (s) { return new Date(s.t).toISOString(); }),
    y: shares.map(function (s) { return s.share; }),
    text: shares.map(function (s) { return s.kind; }),
    mode: "lines+markers", type: "scatter", line: { shape: "hv" }, name: "canary share"
  }], {
    title: { text: "Share of traffic on the challenger", font: { size: 14 } }, height: 280,
    margin: { l: 50, r: 10, t: 36, b: 40 }, xaxis: { type: "date" }, yaxis: { range: [0, 1] }
  }, { displaylogo: false, responsive: true }).then(function () {
    div.setAttribute("data-loaded", "true");
  });
})();
