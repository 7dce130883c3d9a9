// Metric charts: series come from the server already downsampled (extremes kept); a zoom asks
// for the visible step range again so detail appears as you zoom in.
(function () {
  "use strict";
  var POINTS = 1000;

  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  // At most two series requests in flight: the server reads each history in full, so charts
  // arriving one after another show the first ones sooner than all of them at once.
  var MAX_IN_FLIGHT = 2;
  var inFlight = 0;
  var waiting = [];

  function queued(task) {
    return new Promise(function (resolve, reject) {
      waiting.push(function () {
        inFlight += 1;
        task().then(resolve, reject).finally(function () {
          inFlight -= 1;
          if (waiting.length > 0) { waiting.shift()(); }
        });
      });
      if (inFlight < MAX_IN_FLIGHT) { waiting.shift()(); }
    });
  }

  // one request per chart: the metric of every run drawn on it
  function fetchSeries(url, runIds, key, range) {
    return queued(function () { return fetchNow(url, runIds, key, range); });
  }

  function fetchNow(url, runIds, key, range) {
    var q = "?key=" + encodeURIComponent(key) + "&points=" + POINTS;
    runIds.forEach(function (id) { q += "&run=" + encodeURIComponent(id); });
    if (range) {
      q += "&min_step=" + Math.floor(range[0]) + "&max_step=" + Math.ceil(range[1]);
    }
    return fetch(url + q).then(function (r) {
      if (!r.ok) { throw new Error("metric " + key + ": HTTP " + r.status); }
      return r.json();
    });
  }

  function logScale() {
    var box = document.getElementById("log-scale");
    return box !== null && box.checked;
  }

  function layout(title) {
    return {
      title: { text: title, font: { size: 14 } },
      margin: { l: 50, r: 10, t: 36, b: 36 },
      height: 280,
      xaxis: { title: { text: "step" } },
      yaxis: { type: logScale() ? "log" : "linear" },
      showlegend: false
    };
  }

  function chartDiv(container, key) {
    var div = document.createElement("div");
    div.className = "chart";
    div.setAttribute("data-metric", key);
    container.appendChild(div);
    return div;
  }

  // sources: [{run_id, name}]; one trace per run, re-fetched for the zoomed range
  function drawMetric(container, url, key, sources, legend) {
    var div = chartDiv(container, key);
    var zoomed = false; // whether the drawn series is a zoomed-in range
    var busy = false; // drawing emits relayout events of its own: ignore them
    var load = function (range) {
      busy = true;
      var ids = sources.map(function (s) { return s.run_id; });
      return fetchSeries(url, ids, key, range)
        .then(function (data) {
          var traces = data.series.map(function (d, i) {
            var mode = d.x.length < 50 ? "lines+markers" : "lines"; // lone points stay visible
            return { x: d.x, y: d.y, name: sources[i].name, mode: mode, type: "scatter" };
          });
          var lay = layout(key);
          lay.showlegend = legend;
          if (range) { lay.xaxis.range = range; }
          zoomed = range !== null;
          return Plotly.react(div, traces, lay, { responsive: true, displaylogo: false });
        })
        .finally(function () { busy = false; });
    };
    load(null).then(function () {
      div.on("plotly_relayout", function (ev) {
        if (busy) { return; }
        if (ev["xaxis.range[0]"] !== undefined) {
          load([ev["xaxis.range[0]"], ev["xaxis.range[1]"]]);
        } else if (ev["xaxis.autorange"] && zoomed) {
          load(null);
        }
      });
      div.setAttribute("data-loaded", "true");
    });
    return div;
  }

  function onLogScale(container) {
    var box = document.getElementById("log-scale");
    if (!box) { return; }
    box.addEventListener("change", function () {
      container.querySelectorAll(".chart").forEach(function (div) {
        Plotly.relayout(div, { "yaxis.type": box.checked ? "log" : "linear" });
      });
    });
  }

  var VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  function colour(t) {
    if (t === null || isNaN(t)) { return "rgb(160,160,160)"; }
    var pos = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1);
    var i = Math.min(Math.floor(pos), VIRIDIS.length - 2);
    var f = pos - i;
    var c = VIRIDIS[i].map(function (v, k) { return Math.round(v + f * (VIRIDIS[i + 1][k] - v)); });
    return "rgb(" + c.join(",") + ")";
  }

  function span(values) {
    var finite = values.filter(function (v) { return v !== null; });
    if (finite.length === 0) { return { lo: 0, hi: 1 }; }
    return { lo: Math.min.apply(null, finite), hi: Math.max.apply(null, finite) };
  }

  // Parallel coordinates drawn as SVG lines (no WebGL needed): one axis per numeric param and
  // the chosen metric last, each scaled to its own range; a run's line is coloured by the metric.
  function parallel(div, dims, runs) {
    var spans = dims.map(function (d) { return span(d.values); });
    var last = spans[spans.length - 1];
    var scale = function (v, s) {
      if (v === null) { return null; }
      return s.hi === s.lo ? 0.5 : (v - s.lo) / (s.hi - s.lo);
    };
    var traces = runs.map(function (run, i) {
      var metric = dims[dims.length - 1].values[i];
      return {
        type: "scatter",
        mode: "lines+markers",
        name: run.name,
        x: dims.map(function (d, j) { return j; }),
        y: dims.map(function (d, j) { return scale(d.values[i], spans[j]); }),
        text: dims.map(function (d) { return d.label + " = " + d.values[i]; }),
        hoverinfo: "name+text",
        line: { color: colour(scale(metric, last)), width: 2 },
        marker: { size: 5 }
      };
    });
    var shapes = dims.map(function (d, j) {
      return { type: "line", x0: j, x1: j, y0: 0, y1: 1, line: { color: "#8a93a3", width: 1 } };
    });
    var notes = [];
    dims.forEach(function (d, j) {
      notes.push({ x: j, y: 1.06, text: String(spans[j].hi), showarrow: false });
      notes.push({ x: j, y: -0.06, text: String(spans[j].lo), showarrow: false });
    });
    Plotly.newPlot(div, traces, {
      height: 380,
      margin: { l: 40, r: 40, t: 30, b: 60 },
      showlegend: runs.length <= 20,
      shapes: shapes,
      annotations: notes,
      xaxis: {
        tickvals: dims.map(function (d, j) { return j; }),
        ticktext: dims.map(function (d) { return d.label; }),
        zeroline: false, showgrid: false
      },
      yaxis: { visible: false, range: [-0.12, 1.12] }
    }, { displaylogo: false, responsive: true });
  }

  var run = readJson("chart-data");
  if (run) {
    var container = document.getElementById("charts");
    if (container) {
      run.keys.forEach(function (key) {
        drawMetric(container, run.series_url, key, [{ run_id: run.run_id, name: key }], false);
      });
      onLogScale(container);
    }
  }

  var cmp = readJson("compare-data");
  if (cmp) {
    var box = document.getElementById("charts");
    if (box) {
      cmp.keys.forEach(function (key) { drawMetric(box, cmp.series_url, key, cmp.runs, true); });
      onLogScale(box);
    }
    var pc = document.getElementById("parcoords");
    if (pc && cmp.parcoords.length > 0) {
      parallel(pc, cmp.parcoords, cmp.runs);
      pc.setAttribute("data-loaded", "true");
    }
  }
})();
