// Monitoring charts, drawn from the JSON the page embeds (no further request).
(function () {
  "use strict";
  var node = document.getElementById("monitoring-data");
  if (!node) { return; }
  var data = JSON.parse(node.textContent);
  if (data.time.length === 0) { return; }
  var when = data.time.map(function (ms) { return new Date(ms).toISOString(); });
  var config = { displaylogo: false, responsive: true };
  var base = function (title) {
    return { title: { text: title, font: { size: 14 } }, height: 280,
             margin: { l: 50, r: 10, t: 36, b: 40 }, xaxis: { type: "date" } };
  };
  var draw = function (id, traces, layout) {
    var div = document.getElementById(id);
    if (!div) { return; }
    Plotly.newPlot(div, traces, layout, config).then(function () {
      div.setAttribute("data-loaded", "true");
    });
  };
  var share = base("Share of drifted inputs");
  share.yaxis = { range: [0, 1] };
  draw("drift-share", [{ x: when, y: data.share_drifted, mode: "lines+markers", type: "scatter",
                         name: "share drifted" }], share);
  draw("volume", [{ x: when, y: data.num_rows, type: "bar", name: "rows" }],
       base("Predictions per window"));
  var keys = Object.keys(data.metrics);
  if (keys.length > 0) {
    var live = base("Live metrics");
    live.showlegend = true;
    draw("live-metrics", keys.map(function (k) {
      return { x: when, y: data.metrics[k], mode: "lines+markers", type: "scatter", name: k };
    }), live);
  }
  var f = data.features;
  if (f.columns.length > 0) {
    var heat = base("Per-feature drift statistic (x marks a drifted input)");
    heat.height = Math.max(260, 40 + 22 * f.columns.length);
    heat.margin.l = 160;
    var marks = { x: [], y: [], mode: "markers", type: "scatter", name: "drifted",
                  marker: { symbol: "x", color: "#a4161a", size: 9 }, hoverinfo: "skip" };
    f.drifted.forEach(function (row, i) {
      row.forEach(function (flag, j) {
        if (flag) { marks.x.push(when[j]); marks.y.push(f.columns[i]); }
      });
    });
    draw("feature-drift", [{ z: f.statistic, x: when, y: f.columns, type: "heatmap",
                             colorscale: "YlOrRd", reversescale: true, hoverongaps: false }, marks], heat);
  }
})();
