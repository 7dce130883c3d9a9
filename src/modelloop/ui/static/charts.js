// Metric charts: series come from the server already downsampled (extremes kept); a zoom asks
// for the visible step range again so detail appears as you zoom in.
(function () {
  "use strict";
  var POINTS = 1000;

  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  // one request per chart: the metric of every run drawn on it
  function fetchSeries(url, runIds, key, range) {
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
            return { x: d.x, y: d.y, name: sources[i].name, mode: "lines", type: "scatter" };
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
      var color = cmp.parcoords[cmp.parcoords.length - 1].values.map(function (v) {
        return v === null ? 0 : v;
      });
      Plotly.newPlot(pc, [{
        type: "parcoords",
        line: { color: color, colorscale: "Viridis", showscale: true },
        dimensions: cmp.parcoords.map(function (d) {
          return { label: d.label, values: d.values.map(function (v) { return v === null ? NaN : v; }) };
        })
      }], { height: 360, margin: { l: 60, r: 60, t: 40, b: 20 } }, { displaylogo: false });
      pc.setAttribute("data-loaded", "true");
    }
  }
})();
