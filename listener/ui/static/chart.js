// The overview's throughput chart (uPlot, shipped in static/vendor): tasks
// completed and failed per minute. It redraws when live.js brings new data.
(function () {
  "use strict";
  var target = document.getElementById("throughput-chart");
  if (!target || !window.uPlot) { return; }
  var chart = null;

  function series() {
    var node = document.getElementById("throughput-data");
    var rows = node ? JSON.parse(node.textContent) : [];
    return [
      rows.map(function (r) { return Date.parse(r.minute) / 1000; }),
      rows.map(function (r) { return r.completed; }),
      rows.map(function (r) { return r.failed; })
    ];
  }

  function hhmm(ts) { return new Date(ts * 1000).toISOString().slice(11, 16); }

  function width() { return Math.max(target.clientWidth - 16, 300); }

  function draw() {
    var data = series();
    if (chart) { chart.setData(data); return; }
    chart = new uPlot({
      width: width(),
      height: 220,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max, 1)]; } } },
      axes: [
        { values: function (u, ticks) { return ticks.map(hhmm); } },
        { label: "tasks per minute", size: 60 }
      ],
      series: [
        { label: "minute (UTC)", value: function (u, ts) { return ts == null ? "--" : hhmm(ts); } },
        { label: "completed", stroke: "#1c6b35", fill: "rgba(28,107,53,0.12)", width: 2 },
        { label: "failed", stroke: "#b3261e", width: 2 }
      ]
    }, data, target);
    target.setAttribute("data-chart-ready", "1");
  }

  draw();
  document.addEventListener("live:updated", draw);
  window.addEventListener("resize", function () { if (chart) { chart.setSize({ width: width(), height: 220 }); } });
})();
