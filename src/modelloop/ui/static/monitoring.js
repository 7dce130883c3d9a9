// Monitoring charts, drawn from the JSON the page embeds (no further request).
(function () {
  "use strict";
  var node = document.getElementById("monitoring-data");
  if (!node) { return; }
  var data = JSON.parse(node.textContent);
  var iso = function (ms) { return new Date(ms).toISOString(); };
  var when = data.time.map(iso);
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
  var al = data.alerts;
  if (al.rules.length > 0) {
    var now = Date.now();
    var tl = base("Alerts firing (a bar per firing span; open-ended while it still fires)");
    tl.height = Math.max(160, 90 + 28 * al.rules.length);
    tl.margin.l = 180;
    tl.showlegend = false;
    var spans = [];
    al.rules.forEach(function (rule) {
      al.spans[rule].forEach(function (s) {
        var end = s[1] === null ? now : s[1];
        spans.push({ x: [iso(s[0]), iso(end)], y: [rule, rule], mode: "lines+markers",
                     type: "scatter", name: rule, line: { width: 10, color: "#a4161a" },
                     marker: { size: 6 } });
      });
    });
    draw("alert-timeline", spans, tl);
  }
  var seg = data.segments;
  seg.metrics.forEach(function (m) {
    var layout = base("Live " + m + " by " + seg.column);
    layout.showlegend = true;
    draw("segment-" + m, seg.segments.map(function (s) {
      return { x: when, y: seg.series[m][s], mode: "lines+markers", type: "scatter", name: s,
               connectgaps: false };
    }), layout);
  });
  var q = data.quality;
  var kinds = Object.keys(q.issues);
  if (kinds.length > 0) {
    var ql = base("Columns failing a data-quality check, by issue");
    ql.barmode = "stack";
    ql.showlegend = true;
    draw("quality-issues", kinds.map(function (k) {
      return { x: when, y: q.issues[k], type: "bar", name: k };
    }), ql);
  }
  var sv = data.serving;
  if (sv) {
    var at = sv.time.map(iso);
    var vol = base("Requests per interval");
    vol.barmode = "stack";
    vol.showlegend = true;
    draw("serving-volume", [
      { x: at, y: sv.requests, type: "bar", name: "requests", marker: { color: "#4a6fa5" } },
      { x: at, y: sv.errors, type: "bar", name: "errors", marker: { color: "#a4161a" } }
    ], vol);
    var lat = base("Latency (ms)");
    lat.showlegend = true;
    draw("serving-latency", [["p50", sv.p50], ["p95", sv.p95], ["p99", sv.p99]].map(function (p) {
      return { x: at, y: p[1], mode: "lines", type: "scatter", name: p[0], connectgaps: false };
    }), lat);
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
