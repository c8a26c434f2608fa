// Live updates without reloading: fetch this page again every few seconds and
// swap in the parts marked data-live (by id). Pages are complete without this.
(function () {
  "use strict";
  var body = document.body;
  var interval = parseInt(body.getAttribute("data-poll-ms"), 10);
  var regions = document.querySelectorAll("[data-live][id]");
  var status = document.getElementById("live-status");
  var toggle = document.getElementById("live-toggle");
  if (!interval || !regions.length || !window.fetch || !window.DOMParser) {
    if (status && !interval) { status.textContent = "live updates off on this page"; }
    return;
  }
  var paused = false, failures = 0, timer = null;

  function say(text, stale) {
    if (!status) { return; }
    status.textContent = text;
    status.classList.toggle("stale", !!stale);
  }

  function schedule() {
    clearTimeout(timer);
    var delay = Math.min(interval * Math.pow(2, failures), 60000);
    timer = setTimeout(refresh, delay);
  }

  function refresh() {
    if (paused || document.hidden) { schedule(); return; }
    fetch(window.location.href, { headers: { "X-Requested-With": "live" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        regions.forEach(function (region) {
          var next = fresh.getElementById(region.id);
          // Never pull the rug from under the keyboard: a region holding the focus
          // (a link, a button) waits until the focus leaves it.
          if (region.contains(document.activeElement)) { return; }
          if (next && next.innerHTML !== region.innerHTML) {
            var open = region.querySelector("details[open]") !== null;
            region.innerHTML = next.innerHTML;
            if (open) { var d = region.querySelector("details"); if (d) { d.open = true; } }
          }
        });
        failures = 0;
        say("updated " + new Date().toLocaleTimeString(), false);
        document.dispatchEvent(new CustomEvent("live:updated"));
      })
      .catch(function (error) {
        failures = Math.min(failures + 1, 5);
        say("live updates failing (" + error.message + "); retrying", true);
      })
      .then(schedule);
  }

  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
      say(paused ? "live updates paused" : "live updates resumed", false);
      if (!paused) { refresh(); }
    });
  }
  body.setAttribute("data-live-ready", "1");
  schedule();
})();
